"""Small pieces every dock widget shares: notifications and a progress row with Cancel."""

from __future__ import annotations

import sys
import threading

from magicgui.widgets import Container, Label, ProgressBar, PushButton

_torch_import: threading.Thread | None = None
_torch_import_error: list[BaseException] = []


def preload_torch_stack() -> None:
    """Start importing torch and smp in a background thread (once per process).

    Importing them takes seconds; done on the main thread it freezes the viewer. smp
    imports torchvision, whose ops import ``torch._dynamo``, which probes for triton, and
    loading triton's native library after napari opened its OpenGL canvas segfaults under
    Mesa (two LLVMs in one process). Nothing here uses torch.compile, so a triton not
    loaded yet is marked unavailable first (``import triton`` then raises ImportError,
    which torch handles).
    """
    global _torch_import
    if _torch_import is not None or "segmentation_models_pytorch" in sys.modules:
        return
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]

    def _import():
        try:
            import segmentation_models_pytorch  # noqa: F401
            import torch  # noqa: F401
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait_for_torch_stack
            _torch_import_error.append(exc)

    _torch_import = threading.Thread(target=_import, name="napari-cem-import-torch", daemon=True)
    _torch_import.start()


def torch_stack_ready() -> bool:
    """True once torch and smp are imported (the UI may then use them without a stall)."""
    return "segmentation_models_pytorch" in sys.modules and (
        _torch_import is None or not _torch_import.is_alive())


def device_line_pending(label, retry) -> bool:
    """While torch is still being imported in the background, say so in the device *label*
    and call *retry* again in 250 ms; True then (the caller shows the device later)."""
    if torch_stack_ready():
        return False
    from qtpy.QtCore import QTimer

    try:
        label.value = "finding the compute device ..."
    except RuntimeError:  # the widget was closed meanwhile: stop asking
        return True
    QTimer.singleShot(250, retry)
    return True


def wait_for_torch_stack() -> None:
    """Block until torch and smp are imported (call it from a worker thread, not the UI)."""
    preload_torch_stack()
    if _torch_import is not None:
        _torch_import.join()
    if _torch_import_error:
        raise _torch_import_error[0]


_LABELS_DISPLAY_MODULES = (
    "pandas",  # napari's layer features table, imported when the first Labels layer is made
    "napari.layers.labels.labels",
    "napari._vispy.layers.labels",
    "napari._vispy.overlays.labels_polygon",
)
_labels_display_import: threading.Thread | None = None


def preload_labels_display() -> None:
    """Import, in a background thread, what napari imports the first time a Labels layer is
    shown. Otherwise those imports (pandas alone is ~0.7 s) run on the UI thread exactly when
    a segmentation or preview appears, freezing the viewer for about a second."""
    global _labels_display_import
    if _labels_display_import is not None or all(m in sys.modules for m in _LABELS_DISPLAY_MODULES):
        return

    def _import():
        import importlib

        for name in _LABELS_DISPLAY_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a warm-up only: napari imports it again if needed
                return

    _labels_display_import = threading.Thread(target=_import, name="napari-cem-import-labels",
                                              daemon=True)
    _labels_display_import.start()


def text_label(value: str = "") -> Label:
    """A Label that wraps long messages (file paths, results) instead of widening the dock."""
    label = Label(value=value)
    label.native.setWordWrap(True)
    return label


def output_problem(path, what: str, *, file: bool = False) -> str | None:
    """Why *path* cannot take a widget's output (checked before any work), or None."""
    from .._outputs import OutputError, check_writable_file, check_writable_folder

    try:
        (check_writable_file if file else check_writable_folder)(path, what)
    except OutputError as exc:
        return str(exc)
    return None


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


class ProgressRow(Container):
    """A determinate progress bar, a status line and a Cancel button."""

    def __init__(self):
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.bar, self.cancel_button, self.status], labels=False)

    def start(self, total: int, message: str = "") -> None:
        self.bar.max = max(int(total), 1)
        self.bar.value = 0
        self.bar.visible = True
        self.cancel_button.enabled = True
        self.status.value = message

    def step(self, value: int, message: str | None = None) -> None:
        self.bar.value = min(int(value), self.bar.max)
        if message is not None:
            self.status.value = message

    def finish(self, message: str = "") -> None:
        self.bar.value = self.bar.max
        self.bar.visible = False
        self.cancel_button.enabled = False
        self.status.value = message
