"""The autosave of proofreading: after each edit, the labels (a labels TIFF with voxel size,
classes and each object's class) and the object table (CSV beside it) are written
atomically in a background thread, so that a crash loses nothing already edited and the
viewer never waits for the disk."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .measurements import table_csv

__all__ = ["Autosave"]


class Autosave:
    """Write a :class:`~napari_cem.proofread.Proofreader`'s labels (TIFF with voxel size and classes) and table (CSV
    beside it) atomically after each edit, in a background thread; edits made while a
    save runs are saved by the next one. *on_error(message)* is called from that thread."""

    def __init__(self, proofreader, path, *, info: dict | None = None,
                 on_error: Callable[[str], None] | None = None,
                 on_saved: Callable[[Path], None] | None = None):
        path = Path(path)
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_suffix(".tif")
        self.path, self.csv_path = path, path.with_suffix(".csv")
        self.proofreader = proofreader
        self.info = dict(info or {})
        self.on_error, self.on_saved = on_error, on_saved
        self.saved = 0  # saves written
        self.error: str | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="napari-cem-autosave", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Save soon (returns at once)."""
        with self._lock:
            self._idle.clear()
            self._wanted.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every requested save is written (tests, closing); False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float | None = 30) -> None:
        self.wait(timeout)
        self._closed = True
        self._wanted.set()

    def _snapshot(self):
        p = self.proofreader
        while True:
            start = p.generation
            if start % 2 == 0:
                labels, table, classes = p.labels.copy(), p.table, p.object_class.copy()
                if p.generation == start:
                    return labels, table, classes
            threading.Event().wait(0.005)

    def _loop(self) -> None:
        from ._atomic import write_text_atomic
        from .io.labels import write_labels_tiff

        while True:
            self._wanted.wait()
            if self._closed:
                return
            self._wanted.clear()
            try:
                labels, table, classes = self._snapshot()
                info = {**self.info, "classes": list(self.proofreader.class_names),
                        "object_class": classes.tolist()}
                write_text_atomic(self.csv_path, table_csv(table))
                write_labels_tiff(self.path, labels, self.proofreader.voxel_size, info)
                self.saved += 1
                self.error = None
                if self.on_saved is not None:
                    self.on_saved(self.path)
            except Exception as exc:  # noqa: BLE001 - reported, the next edit tries again
                from ._outputs import describe_os_error

                self.error = describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
                if self.on_error is not None:
                    self.on_error(f"Autosave to {self.path} failed: {self.error}")
            with self._lock:
                if not self._wanted.is_set():
                    self._idle.set()
