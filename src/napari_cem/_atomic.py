"""Atomic file writes: user work is either fully written or left as it was.

A write goes to a temporary file beside the target (``.NAME.<8 random>.tmp``, or another
suffix), is flushed to disk and renamed over the target in one step. The file gets the
permissions a plain ``open`` would give it (0666 minus the umask), not mkstemp's 0600.
A process killed mid-write leaves its temporary file behind; the next atomic write into
that folder removes such leftovers: always those of the same target, and those of other
targets once they are older than ``STALE_SECONDS`` (a live writer is never that slow).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_folder", "atomic_path", "current_umask", "remove_stale_temporaries",
           "write_bytes_atomic", "write_text_atomic"]

#: Temporary files of other targets older than this are leftovers of a killed process.
STALE_SECONDS = 600.0
# mkstemp's random part is 8 characters of [a-z0-9_]; our suffixes are .tmp (default) and .tif.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.tmp|\.tif)$")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (no thread race)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike, target: str | None = None,
                             max_age: float = STALE_SECONDS) -> list[Path]:
    """Delete leftover temporary files of our naming in *folder*; returns what was removed.

    Those of *target* (a file name) go whatever their age; the others only when older than
    *max_age* seconds. Files we cannot remove are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if match["target"] != target and now - entry.stat().st_mtime < max_age:
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside *path*; on success it replaces *path* in one rename.

    If the body raises (or the process dies), *path* keeps its old content and the
    temporary file is removed (or left with a ``.tmp`` name that nothing reads, and that
    the next write into the folder removes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~current_umask())
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield a new temporary folder beside *path* (a zarr store being written); on success it
    takes *path*'s place: what was there is moved aside first and removed only after the
    rename, so *path* is always the old store or the complete new one. If the body raises,
    the temporary folder is removed and *path* is untouched."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
