"""One long-lived state per viewer, shared by the dock widgets.

The Fine-tune widget sets the active model when training ends (or a bundle file is
opened); the Segment widget reads it and listens for changes, so a second click does not
reload anything. The Pre-train encoder widget registers its checkpoints here and the
Fine-tune widget offers them in its Weights choice. Kept per viewer in a weak mapping, so
closing a viewer frees its model.
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
    """What the widgets of one viewer share: the active segmentation model and its file, and
    the pre-training checkpoints written in this session."""

    active_model: Any = None  # a napari_cem.model.ModelBundle, or None
    active_model_path: Path | None = None
    curation: Any = None  # (CurationResult, uint8 volume) of the Near-duplicates widget, or None
    pretrained_weights: list[Path] = field(default_factory=list)  # MoCo checkpoints, in order
    _listeners: list[Callable[[ViewerState], None]] = field(default_factory=list, repr=False)
    _weights_listeners: list[Callable[[ViewerState], None]] = field(default_factory=list, repr=False)

    def set_active_model(self, bundle, path=None) -> None:
        """Make *bundle* (saved at *path*, if any) the model every widget uses; notify them."""
        self.active_model = bundle
        self.active_model_path = Path(path) if path is not None else None
        for listener in list(self._listeners):
            listener(self)

    def on_model_changed(self, callback: Callable[[ViewerState], None]) -> None:
        """Call *callback(state)* whenever the active model changes (main thread only)."""
        self._listeners.append(callback)

    def add_pretrained_weights(self, path) -> bool:
        """Register a pre-training checkpoint; notify the listeners when it is new (main thread)."""
        path = Path(path)
        if path in self.pretrained_weights:
            return False
        self.pretrained_weights.append(path)
        for listener in list(self._weights_listeners):
            listener(self)
        return True

    def on_pretrained_weights(self, callback: Callable[[ViewerState], None]) -> None:
        """Call *callback(state)* whenever a checkpoint is added to ``pretrained_weights``."""
        self._weights_listeners.append(callback)

    def disconnect(self, callback: Callable[[ViewerState], None]) -> None:
        for listeners in (self._listeners, self._weights_listeners):
            if callback in listeners:
                listeners.remove(callback)


def state_for(viewer) -> ViewerState:
    """The shared state of *viewer*, created on first use."""
    state = _STATES.get(viewer)
    if state is None:
        state = ViewerState()
        _STATES[viewer] = state
    return state
