"""The "device" line of the training widgets, found off the UI thread.

Which device "auto" means, and what it is (GPU name and memory, CPU threads), needs torch
imported and, on a GPU machine, CUDA started: seconds the viewer must not freeze for. The
line is computed in a worker each time the Device choice changes; the latest choice wins.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import wait_for_torch_stack
from ._jobs import JobRunner


class DeviceLine:
    """Keeps *label* saying what the Device combo box *choice* stands for.

    ``device_type`` is "cuda", "mps" or "cpu" once known, None while it is being found or
    when the chosen device is absent (the label then says why). *on_found()* runs after
    every update (e.g. to refresh advice that depends on the device).
    """

    def __init__(self, label, choice, on_found: Callable[[], None] | None = None):
        self.label = label
        self.choice = choice
        self.on_found = on_found
        self.device_type: str | None = None
        self._again = False
        self.jobs = JobRunner(name="Finding the compute device")
        choice.changed.connect(lambda _value=None: self.refresh())
        label.value = "finding the compute device ..."
        # once the widget is drawn: the torch import this starts slows the widget's own set-up
        from qtpy.QtCore import QTimer

        QTimer.singleShot(300, self.refresh)

    @property
    def ready(self) -> bool:
        return not self.jobs.running

    def refresh(self) -> None:
        if self.jobs.running:
            self._again = True  # asked again meanwhile: look once more when this one ends
            return
        self.device_type = None
        try:
            self.label.value = "finding the compute device ..."
            choice = self.choice.value
        except RuntimeError:  # the widget was closed before its first look: nothing to do
            return
        self.jobs.start(_find_device, choice, on_result=self._show, then=self._next)

    def _show(self, found) -> None:
        self.device_type, text = found
        try:
            self.label.value = text
        except RuntimeError:  # the widget was closed meanwhile
            return
        if self.on_found is not None:
            self.on_found()

    def _next(self) -> None:
        if self._again:
            self._again = False
            self.refresh()


def _find_device(choice: str):
    """(device type or None, the line to show) for a Device choice; runs in a worker."""
    wait_for_torch_stack()
    from ..device import describe_device, select_device

    try:
        device = select_device(choice)
    except Exception as exc:  # noqa: BLE001 - an absent device: say so, Start refuses it
        return None, f"unavailable: {exc}"
    return device.type, str(describe_device(device))
