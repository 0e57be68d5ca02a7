"""PyTorch files: read as data only, written atomically, with our own words on failure.

Every checkpoint, encoder weights file and model bundle is read by ``load_torch_file``:
``torch.load(weights_only=True)`` never runs code from a file. When it refuses one,
PyTorch's own message advises re-running with ``weights_only=False`` -- advice a user
should not follow for a file from someone else -- so it is replaced by one plain line.
``save_torch_file`` writes atomically and turns torch's RuntimeError of a failed write
(a full disk reads "unexpected pos ...") into the OSError it is.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

__all__ = ["load_torch_file", "save_torch_file"]

# how torch names the object it refused ("Unsupported global: GLOBAL pathlib.PosixPath",
# "unsupported GLOBAL posix.system whose module posix is blocked")
_UNSAFE = re.compile(r"unsupported (?:global: )?GLOBAL\s+([\w.]+)", re.IGNORECASE)


def load_torch_file(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; a refused or unreadable file -> ValueError."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            return _unreadable(path, exc)
        found = sorted(set(_UNSAFE.findall(str(exc))))
        what = f" ({', '.join(found)})" if found else ""
        reason = (f"it holds Python objects{what} besides tensors and plain data, and loading those "
                  "could run code; it was not opened")
    except EOFError:
        reason = "the file is empty or cut short"
    except (RuntimeError, KeyError, ValueError, OSError, AttributeError, TypeError, IndexError) as exc:
        return _unreadable(path, exc)
    raise ValueError(f"{path.name} is not a weights file napari-cem can load safely: {reason}.")


def _unreadable(path: Path, exc: BaseException):
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    raise ValueError(f"{path.name} is not a weights file napari-cem can load safely: it is not a "
                     f"PyTorch file, or it is damaged ({detail}).")


def save_torch_file(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` into *path* atomically; a failed write raises OSError naming *path*."""
    import torch

    from ._atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's C++ writer reports I/O failures this way
            try:
                full = shutil.disk_usage(path.parent).free < (4 << 20)
            except OSError:
                full = False
            if full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "write failed"
            raise OSError(errno.EIO, f"the file could not be written ({detail})", str(path)) from None
    return path
