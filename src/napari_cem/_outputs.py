"""Where results go: checked before any work starts, rescued if saving still fails.

Hours of training or segmentation must not end in "permission denied". So every output
location is probed (a file is created there and removed) before the work begins, and a
save that fails anyway (disk filled up meanwhile, drive unplugged) is retried in the
cache folder, with the message saying where the result went.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputError", "check_writable_file", "check_writable_folder", "describe_os_error",
           "rescue_folder", "save_or_rescue"]


class OutputError(ValueError):
    """An output location that cannot be written; the message names it and says why."""


def describe_os_error(exc: OSError) -> str:
    """'PATH: reason' for an OSError, without Python's '[Errno 28]' noise."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc) or type(exc).__name__
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason if exc.errno else (str(exc) or reason)


def check_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Prove that a file can be made in *folder* (or, if it is missing, that it can be
    created); else OutputError. Leaves the file system as it found it."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to the {what} {folder}: it exists and is not a folder; "
                          "choose another place. Nothing was done.")
    created = []  # folders made for the probe only: removed again, the work makes them later
    try:
        missing = folder
        while not missing.exists():
            created.append(missing)
            missing = missing.parent
        for made in reversed(created):
            made.mkdir()
        fd, probe = tempfile.mkstemp(prefix=".napari-cem-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to the {what} {folder} ({describe_os_error(exc)}); "
                          "choose another place. Nothing was done.") from None
    finally:
        for made in created:
            try:
                made.rmdir()
            except OSError:
                pass
    return folder


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """The folder of *path* is writable and *path* is not a folder (nor a read-only file)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"cannot write the {what} {path}: it is a folder; give a file name. "
                          "Nothing was done.")
    check_writable_folder(path.parent, f"folder of the {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write the {what} {path}: it exists and is read-only; "
                          "choose another name. Nothing was done.")
    return path


def rescue_folder() -> Path:
    """Where a result goes when its own place failed at the end: ``<cache>/rescued``."""
    from .cache import cache_dir

    return cache_dir() / "rescued"


def save_or_rescue(save: Callable[[Path], object], path: str | os.PathLike,
                   ) -> tuple[Path, str | None]:
    """``save(path)``; if that raises OSError, ``save`` into the rescue folder instead.

    Returns ``(where it was saved, None)`` or ``(rescue path, message for the user)``.
    When the rescue fails too, the first error is raised.
    """
    path = Path(path)
    try:
        save(path)
        return path, None
    except OSError as first:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        stem = path.name.split(".")[0] or "result"
        rescue = rescue_folder() / f"{stem}-{stamp}{path.name[len(stem):]}"
        try:
            rescue.parent.mkdir(parents=True, exist_ok=True)
            save(rescue)
        except OSError:
            raise first from None
        return rescue, (f"could not save to {path} ({describe_os_error(first)}); "
                        f"saved to {rescue} instead")
