"""Label images on disk: napari-cem's labels TIFF (voxel size in nm, class names) and the
counts per class of a labels volume read slab by slab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["label_counts", "read_labels_tiff", "saved_class_names", "saved_info", "write_labels_tiff"]


def label_counts(labels, n: int) -> list[int]:
    """Voxels of each value 0..n-1, reading 64 MiB at a time (labels may be a zarr array)."""
    counts = np.zeros(n, np.int64)
    step = max(1, (64 << 20) // max(int(np.prod(labels.shape[1:])) if labels.ndim > 1 else 1, 1))
    for z0 in range(0, labels.shape[0], step):
        counts += np.bincount(np.asarray(labels[z0:z0 + step]).ravel(), minlength=n)[:n]
    return counts.tolist()


def write_labels_tiff(path, array, voxel_size, info: dict) -> None:
    """Labels (or uint8 confidences) as an ImageJ TIFF with the voxel size in nm and the class
    names (JSON in the Info field), written atomically."""
    import tifffile

    from .._atomic import atomic_path

    array = np.asarray(array)
    kwargs: dict = {"compression": "zlib"}
    if array.dtype in (np.uint8, np.uint16) and array.ndim in (2, 3, 4):
        axes = {2: "YX", 3: "ZYX", 4: "CZYX"}[array.ndim]
        metadata = {"axes": axes, "unit": "nm", "Info": json.dumps(info)}
        if voxel_size is not None:
            vs = [float(v) for v in voxel_size]
            kwargs["resolution"] = (1.0 / vs[-1], 1.0 / vs[-2])
            if len(vs) == 3:
                metadata["spacing"] = vs[0]
        kwargs.update(imagej=True, metadata=metadata)
    else:
        kwargs["metadata"] = {"napari_cem": json.dumps(info)}
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, array, **kwargs)


def saved_info(path) -> dict | None:
    """The record a TIFF written by :func:`write_labels_tiff` carries (classes, source,
    probabilities ...), or None."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = (tif.imagej_metadata or {}).get("Info")
            if text is None:
                text = tif.pages[0].description if tif.pages else None
        info = json.loads(text) if text else None
        if isinstance(info, dict) and "napari_cem" in info and isinstance(info["napari_cem"], str):
            info = json.loads(info["napari_cem"])
        return info if isinstance(info, dict) else None
    except Exception:  # noqa: BLE001 - any unreadable metadata: nothing known, the caller asks
        return None


def saved_class_names(path) -> list[str] | None:
    """The class names a labels TIFF written by :func:`write_labels_tiff` carries, or None."""
    info = saved_info(path)
    return info.get("classes") if info else None


def read_labels_tiff(path) -> tuple[np.ndarray, tuple | None, dict]:
    """(labels, voxel size in nm or None, record) of a labels TIFF: what
    :func:`write_labels_tiff` wrote (a proofreading autosave, ``napari-cem instances``), or
    any integer label image."""
    from ._tiff import read_tiff

    raw = read_tiff(Path(path))
    data = np.asarray(raw.data)
    if data.dtype.kind not in "ui" or data.ndim not in (2, 3):
        raise ValueError(f"{Path(path).name} is not a 2D or 3D label image ({data.dtype.name}, "
                         f"{data.ndim} axes): objects are whole numbers, one per voxel.")
    letters = "ZYX"[-data.ndim:]
    spacing = raw.spacing or {}
    voxel = tuple(float(spacing[a]) for a in letters) if all(a in spacing for a in letters) else None
    return data, voxel, saved_info(path) or {}
