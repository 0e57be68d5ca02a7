"""File names built from data (manifest rows, labels files, source names) stay file names.

A manifest or labels file is data a user may receive from someone else: a field such as
``plane = "x/../../../ESCAPED"`` must never turn into a path that reads or writes outside
the export. Every name built from such a field passes ``check_name`` (one path component)
and every path joined from it passes ``path_under`` (it resolves inside its folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["check_name", "check_patch_id", "path_under"]

_SEPARATORS = {"/", "\\", os.sep, os.altsep or "/", ":", "\0"}
# Our own patch ids: source key, plane, slice, y, x, size; the export writes nothing else.
_PATCH_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def check_name(value, what: str = "name") -> str:
    """*value* as a single, plain file-name component, else ValueError saying why."""
    text = str(value)
    if not text:
        raise ValueError(f"the {what} is empty")
    bad = sorted(c for c in _SEPARATORS if c in text)
    if bad:
        shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad)
        raise ValueError(f"the {what} {text!r} contains {shown}: it must be a plain name, not a path")
    if text in (".", "..") or text.strip() != text:
        raise ValueError(f"the {what} {text!r} is not a usable file name")
    return text


def check_patch_id(value) -> str:
    """A patch id (a patch file name without ``.tif``), else ValueError."""
    text = check_name(value, "patch id")
    if not _PATCH_ID.match(text) or set(text) == {"."}:
        raise ValueError(f"the patch id {text!r} is not a napari-cem patch name "
                         "(letters, digits, '.', '_' and '-' only)")
    return text


def path_under(folder: str | os.PathLike, name: str, what: str = "name") -> Path:
    """``folder / name`` after checking that *name* is one component that resolves inside it."""
    folder = Path(folder)
    path = folder / check_name(name, what)
    base = folder.resolve()
    resolved = path.resolve()
    if resolved.parent != base:
        raise ValueError(f"the {what} {name!r} leads outside {folder} (to {resolved})")
    return path
