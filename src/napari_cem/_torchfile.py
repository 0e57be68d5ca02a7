"""Reading PyTorch files as data only, with our own words when a file is refused.

Every checkpoint, encoder weights file and model bundle goes through ``load_torch_file``:
``torch.load(weights_only=True)`` never runs code from a file. When it refuses one,
PyTorch's own message advises re-running with ``weights_only=False`` -- advice a user
should not follow for a file from someone else -- so it is replaced by one plain line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["load_torch_file"]

_UNSAFE = re.compile(r"Unsupported (?:global|operand)[^:]*:\s*(?:GLOBAL\s+)?([\w.]+)")


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
