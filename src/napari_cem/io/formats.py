"""Which reader handles a path: decided from the name and, for folders, their content.

Only cheap checks happen here (suffixes, a folder listing, one small JSON file for Zarr)
so that napari can ask "is this ours?" for every file it is shown without slowing down.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import VolumeError

# Longest suffixes first, so ".ome.tif" wins over ".tif" and ".nii.gz" over ".gz".
_SUFFIX_FORMATS = (
    (".ome.tiff", "ome-tiff"),
    (".ome.tif", "ome-tiff"),
    (".ome.zarr", "ome-zarr"),
    (".nii.gz", "nifti"),
    (".tiff", "tiff"),
    (".tif", "tiff"),
    (".mrcs", "mrc"),
    (".mrc", "mrc"),
    (".rec", "mrc"),
    (".ali", "mrc"),
    (".map", "mrc"),
    (".st", "mrc"),
    (".nii", "nifti"),
    (".zarr", "zarr"),
    (".png", "image"),
    (".jpeg", "image"),
    (".jpg", "image"),
    (".bmp", "image"),
    (".avi", "video"),
    (".mp4", "video"),
)

#: File (and Zarr folder) suffixes ``read_volume`` accepts, lower case with the dot.
SUPPORTED_SUFFIXES = tuple(s for s, _ in _SUFFIX_FORMATS)

_SUPPORTED_TEXT = (
    "TIFF/OME-TIFF (.tif, .tiff), MRC (.mrc, .rec, .mrcs, .st, .ali, .map), "
    "NIfTI (.nii, .nii.gz), images (.png, .jpg, .jpeg, .bmp), video (.avi, .mp4), "
    "a Zarr/OME-Zarr folder, or a folder of 2D images"
)

_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup", ".zattrs")

FORMAT_LABELS = {
    "tiff": "a TIFF file",
    "ome-tiff": "an OME-TIFF file",
    "mrc": "an MRC file",
    "nifti": "a NIfTI file",
    "zarr": "a Zarr store",
    "ome-zarr": "an OME-Zarr store",
    "image-folder": "a stack of 2D images",
    "image": "an image file",
    "video": "a video",
}


def is_glob(path) -> bool:
    """True for patterns like 'dir/*.png' (which are not existing paths themselves)."""
    text = str(path)
    return any(ch in text for ch in "*?[") and not Path(text).exists()


def is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and (
        path.suffix.lower() == ".zarr" or any((path / m).exists() for m in _ZARR_MARKERS)
    )


def detect_format(path) -> str:
    """Name of the format ``read_volume`` will use for *path* (no pixel is read).

    Returns one of "tiff", "ome-tiff", "mrc", "nifti", "zarr", "ome-zarr",
    "image-folder", "image", "video". A plain ".tif" may still turn out to be OME-TIFF
    once opened (``VolumeMeta.format`` says so). Raises VolumeError for a missing path or
    an unsupported file type.
    """
    if is_glob(path):
        return "image-folder"
    p = Path(path)
    if not p.exists():
        raise VolumeError(
            f"Nothing found at '{p}'. Check the spelling of the path and that the drive "
            "or network share is connected."
        )
    if p.is_dir():
        if is_zarr_dir(p):
            return "ome-zarr" if _zarr_has_multiscales(p) else "zarr"
        return "image-folder"
    name = p.name.lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix) and fmt not in ("zarr", "ome-zarr"):
            return fmt
    suffix = p.suffix.lower() or "(no extension)"
    raise VolumeError(
        f"napari-cem cannot open '{p.name}': files ending in {suffix} are not supported. "
        f"It reads {_SUPPORTED_TEXT}."
    )


def source_name(path) -> str:
    """Short name for layer titles and provenance: the file name without its suffixes."""
    text = str(path)
    if is_glob(text):
        parent = Path(text).parent
        return parent.name or "images"
    p = Path(text)
    name = p.name or p.resolve().name
    lower = name.lower()
    for suffix, _ in _SUFFIX_FORMATS:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _zarr_has_multiscales(path: Path) -> bool:
    """Peek at the root attributes (v2 .zattrs or v3 zarr.json) for OME multiscales."""
    for candidate in (path, path / "0"):
        attrs = _read_zarr_attrs(candidate)
        if attrs is None:
            continue
        ome = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
        if "multiscales" in ome:
            return True
    return False


def _read_zarr_attrs(path: Path) -> dict | None:
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        f = path / name
        if f.is_file():
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if key is not None:
                doc = doc.get(key, {}) if isinstance(doc, dict) else {}
            return doc if isinstance(doc, dict) else None
    return None


def read_raw(path, fmt: str, *, level: int = 0, lazy: bool | None = None):
    """Dispatch to the reader for *fmt*; imports each format's library only when used."""
    if fmt in ("tiff", "ome-tiff"):
        from ._tiff import read_tiff

        return read_tiff(Path(path), level=level, lazy=bool(lazy))
    if fmt == "mrc":
        from ._mrc import read_mrc

        return read_mrc(Path(path))
    if fmt == "nifti":
        from ._nifti import read_nifti

        return read_nifti(Path(path))
    if fmt in ("zarr", "ome-zarr"):
        from ._zarr import read_zarr

        return read_zarr(Path(path), level=level)
    if fmt == "image-folder":
        from ._images import read_glob, read_image_folder

        return read_glob(str(path)) if is_glob(path) else read_image_folder(Path(path))
    if fmt == "image":
        from ._images import read_single_image

        return read_single_image(Path(path))
    if fmt == "video":
        from ._images import read_video

        return read_video(Path(path))
    raise VolumeError(f"Unknown format '{fmt}'.")  # pragma: no cover - detect_format guards
