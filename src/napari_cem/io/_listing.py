"""Which files of a folder or glob pattern are 2D images, and in which order.

Shared by the folder and glob readers and by pre-training's patch folders, so that one
rule says what an image file is and what junk (hidden files, Thumbs.db, __MACOSX) to skip.
"""

from __future__ import annotations

import glob as _glob
import re
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "glob_images", "is_hidden_or_system", "list_images", "natural_key"]

#: Suffixes of the 2D images a folder or glob pattern may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_SYSTEM_NAMES = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store"}


def is_hidden_or_system(name: str) -> bool:
    """Files an OS or a zip tool left behind; they are never slices."""
    return name.startswith(".") or name.lower() in _SYSTEM_NAMES


def list_images(folder: Path) -> list[Path]:
    """2D image files in *folder*, natural order (img2 before img10), junk skipped."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not is_hidden_or_system(p.name) and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=natural_key)


def glob_images(pattern: str) -> list[Path]:
    """Image files matching a glob pattern, natural order, junk skipped."""
    files = [
        Path(p)
        for p in _glob.glob(pattern)
        if Path(p).is_file()
        and not is_hidden_or_system(Path(p).name)
        and Path(p).suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=natural_key)


def natural_key(path) -> list:
    """Sort key where digit runs compare as numbers, so slice_9 comes before slice_10."""
    name = Path(path).name.lower()
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]
