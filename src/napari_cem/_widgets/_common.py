"""Small pieces every dock widget shares: notifications and a progress row with Cancel."""

from __future__ import annotations

import sys
import threading

from magicgui.widgets import Container, Label, ProgressBar, PushButton

_torch_import: threading.Thread | None = None
_torch_import_error: list[BaseException] = []


def preload_torch_stack_soon(delay_ms: int = 300) -> None:
    """:func:`preload_torch_stack` once the event loop has drawn the widget being opened
    (started at once, the import's thread slowed the widget's own construction 4x)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(delay_ms, preload_torch_stack)


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
            _load_torch_libraries()
            import segmentation_models_pytorch  # noqa: F401
            import torch  # noqa: F401
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait_for_torch_stack
            _torch_import_error.append(exc)

    _torch_import = threading.Thread(target=_import, name="napari-cem-import-torch", daemon=True)
    _torch_import.start()


_TORCH_LIBRARIES = ("c10", "torch_cpu", "torch", "torch_python")


def _load_torch_libraries() -> None:
    """Load torch's native libraries (and, through them, CUDA's) before ``import torch``.

    The C library's ``dlopen`` called through ctypes lets the other threads run while a
    library loads (ctypes releases the interpreter lock around foreign calls); ``import
    torch`` loading the same libraries holds the lock, and the viewer froze ~0.25 s for
    libtorch_cpu alone. torch then finds them loaded. Anything unexpected (another layout,
    no ``dlopen`` as on Windows) leaves the loading to ``import torch``.
    """
    import ctypes
    import importlib.util
    import os
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    try:
        dlopen = ctypes.CDLL(None).dlopen
    except (OSError, AttributeError, TypeError):
        return
    if spec is None or spec.origin is None:
        return
    dlopen.argtypes, dlopen.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_void_p
    folder = Path(spec.origin).parent / "lib"
    for name in _TORCH_LIBRARIES:
        found = sorted(folder.glob(f"lib{name}.so*")) or sorted(folder.glob(f"lib{name}.dylib"))
        if not found or not dlopen(os.fsencode(found[0]), os.RTLD_NOW | os.RTLD_GLOBAL):
            return


def torch_stack_ready() -> bool:
    """True once torch and smp are imported (the UI may then use them without a stall)."""
    return "segmentation_models_pytorch" in sys.modules and (
        _torch_import is None or not _torch_import.is_alive())


def wait_for_torch_stack(progress=None) -> None:
    """Block until torch and smp are imported (call it from a worker thread, not the UI);
    *progress(seconds, 0, stage)* counts the seconds while it waits."""
    import time

    preload_torch_stack()
    if _torch_import is not None:
        start = time.perf_counter()
        while _torch_import.is_alive():
            if progress is not None:
                progress(int(time.perf_counter() - start), 0, "loading PyTorch, seconds")
            _torch_import.join(0.25)
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


def short_name(name: str, limit: int = 28) -> str:
    """A file name cut in the middle to *limit* characters for a status line (a long name is
    one unbreakable word: it widened the dock past its right edge); the end stays whole."""
    if len(name) <= limit:
        return name
    tail = limit // 2
    return f"{name[:limit - tail - 1]}\u2026{name[-tail:]}"


def text_label(value: str = "", lines: int = 0) -> Label:
    """A Label that wraps long messages (file paths, results) instead of widening the dock.
    *lines*: room for that many lines from the start. A dock keeps the height a row had when
    it was first laid out, so a label that will wrap to several lines needs it."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value)
    label.native.setWordWrap(True)
    if lines:
        label.native.setMinimumHeight(lines * label.native.fontMetrics().lineSpacing())
    policy = label.native.sizePolicy()  # as wide as its row: text starts at the left edge on a wide dock
    policy.setHorizontalPolicy(QSizePolicy.Policy.Expanding)
    label.native.setSizePolicy(policy)
    return label


def scroll_inside(container) -> None:
    """Move the rows of a finished *container* into a scroll area that fills its dock.

    A dock then never grows the viewer's window past the screen (six docks of 15 rows do
    on a 1080 px screen): it shows a scroll bar instead. magicgui's own ``scrollable`` is
    lost when napari docks the widget (napari docks ``.native``, the inner widget), hence
    this. Call it last in ``__init__``, after every row is added. Choice boxes stop asking
    for the width of their longest entry (their list still shows it in full), so that a
    long choice does not push the canvas aside.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

    outer = container.native.layout()
    inner = QWidget()
    rows = QVBoxLayout(inner)
    rows.setContentsMargins(outer.contentsMargins())
    rows.setSpacing(outer.spacing())
    while outer.count():
        item = outer.takeAt(0)
        if item.widget() is not None:
            rows.addWidget(item.widget())
        else:
            rows.addItem(item)
    rows.addStretch(1)
    for combo in inner.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)
    area = QScrollArea()
    area.setObjectName("napari-cem-scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
    area.setWidget(inner)
    area.setMinimumWidth(inner.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width())
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)


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
    """A determinate progress bar, a status line that wraps, and a Cancel (or Stop) button.

    Never a "busy" bar: its animation repaints the window 30 times a second, and in a
    window holding napari's OpenGL canvas each repaint is composited through OpenGL; on
    software rendering (remote desktops, VMs) that took 1.3-1.8 s of CPU from a 6 s
    segmentation. An unknown total shows an empty bar and the count moves in the text.
    """

    def __init__(self, stop_text: str = "Cancel"):
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.cancel_button = PushButton(text=stop_text, enabled=False)
        self.status = text_label("")
        super().__init__(widgets=[self.bar, self.cancel_button, self.status], labels=False)

    def start(self, total: int, message: str = "") -> None:
        """Show the bar (empty until the first count when *total* is 0) and enable Cancel."""
        self.bar.max = max(int(total), 1)
        self.bar.value = 0
        self.bar.visible = True
        self.cancel_button.enabled = True
        self.status.value = message

    def show(self, done: int, total: int, stage: str) -> None:
        """One ``progress(done, total, stage)`` report: 'Stage: done / total' (or 'Stage: done'
        while the total is unknown)."""
        total = max(int(total), 0)
        if self.bar.max != max(total, 1):
            self.bar.max = max(total, 1)
        self.bar.value = min(int(done), total) if total else 0
        text = stage[:1].upper() + stage[1:]
        if total:
            self.status.value = f"{text}: {int(done):,} / {total:,}"
        else:
            self.status.value = f"{text}: {int(done):,}" if done else f"{text} ..."

    def step(self, value: int, message: str | None = None) -> None:
        self.bar.value = min(int(value), self.bar.max)
        if message is not None:
            self.status.value = message

    def idle(self) -> None:
        """Hide the bar and disable Cancel; the status line stays as it is."""
        self.bar.visible = False
        self.cancel_button.enabled = False

    def finish(self, message: str = "") -> None:
        self.idle()
        self.status.value = message
