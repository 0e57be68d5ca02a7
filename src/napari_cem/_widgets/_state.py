"""One long-lived state per viewer, shared by the dock widgets.

The Fine-tune widget sets the active model when training ends (or a bundle file is
opened); the Segment widget reads it and listens for changes, so a second click does not
reload anything. Kept per viewer in a weak mapping, so closing a viewer frees its model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ViewerState", "state_for"]

_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class ViewerState:
    """What the widgets of one viewer share: the active segmentation model and its file."""

    active_model: Any = None  # a napari_cem.model.ModelBundle, or None
    active_model_path: Path | None = None
    curation: Any = None  # (CurationResult, uint8 volume) of the Near-duplicates widget, or None
    _listeners: list[Callable[[ViewerState], None]] = field(default_factory=list, repr=False)

    def set_active_model(self, bundle, path=None) -> None:
        """Make *bundle* (saved at *path*, if any) the model every widget uses; notify them."""
        self.active_model = bundle
        self.active_model_path = Path(path) if path is not None else None
        for listener in list(self._listeners):
            listener(self)

    def on_model_changed(self, callback: Callable[[ViewerState], None]) -> None:
        """Call *callback(state)* whenever the active model changes (main thread only)."""
        self._listeners.append(callback)

    def disconnect(self, callback: Callable[[ViewerState], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)


def state_for(viewer) -> ViewerState:
    """The shared state of *viewer*, created on first use."""
    state = _STATES.get(viewer)
    if state is None:
        state = ViewerState()
        _STATES[viewer] = state
    return state
