"""Clean-up of a segmentation: drop specks under a size, fill holes, per class.

Each structure class (label > 0) is cleaned on its own: its connected pieces (26-connected
in 3D, 8-connected per slice) under *min_size* voxels become background (0); background
enclosed by one class becomes that class (other classes are never overwritten). In 3D or
per xy slice: ssTEM stacks with thick sections are better cleaned per slice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clean_labels", "clean_segmentation", "describe", "fill_holes", "min_size_voxels", "remove_small"]


def min_size_voxels(size: float, unit: str = "voxels", voxel_size=None, per_slice: bool = False) -> int:
    """*size* in voxels, or in nm^3 (3D) / nm^2 (per slice) turned into voxels with the
    *voxel_size* (z, y, x) in nm."""
    if size < 0:
        raise ValueError(f"The smallest object size must be 0 or more, got {size}.")
    if unit == "voxels":
        return int(np.ceil(size))
    if unit != "nm":
        raise ValueError(f"The size unit is 'voxels' or 'nm', got {unit!r}.")
    if voxel_size is None:
        raise ValueError("A size in nm needs the voxel size; give it in voxels, or set the voxel size.")
    vs = [float(v) for v in voxel_size][-3:]
    cell = float(np.prod(vs[-2:] if per_slice else vs))
    return int(np.ceil(size / cell))


def _structure(ndim: int):
    from scipy import ndimage

    return ndimage.generate_binary_structure(ndim, ndim)  # full connectivity


def _each_part(labels: np.ndarray, per_slice: bool):
    """The arrays to clean (views, changed in place): the volume, or each of its xy slices."""
    if per_slice and labels.ndim == 3:
        return [labels[z] for z in range(labels.shape[0])]
    return [labels]


def remove_small(labels: np.ndarray, min_size: int, per_slice: bool = False) -> int:
    """In place: pieces of a class under *min_size* voxels become 0. Returns voxels changed."""
    from scipy import ndimage

    changed = 0
    if min_size <= 1:
        return 0
    for part in _each_part(labels, per_slice):
        for c in np.unique(part):
            if c == 0:
                continue
            pieces, n = ndimage.label(part == c, structure=_structure(part.ndim))
            sizes = np.bincount(pieces.ravel())
            small = np.flatnonzero(sizes < min_size)
            small = small[small > 0]
            if small.size:
                drop = np.isin(pieces, small)
                changed += int(drop.sum())
                part[drop] = 0
    return changed


def fill_holes(labels: np.ndarray, per_slice: bool = True) -> int:
    """In place: background enclosed by one class becomes that class. Returns voxels changed."""
    from scipy import ndimage

    changed = 0
    for part in _each_part(labels, per_slice):
        for c in np.unique(part):
            if c == 0:
                continue
            mask = part == c
            holes = ndimage.binary_fill_holes(mask) & ~mask & (part == 0)
            changed += int(holes.sum())
            part[holes] = c
    return changed


def clean_labels(labels, min_size: int = 0, holes: bool = False, per_slice: bool = False) -> tuple[np.ndarray, dict]:
    """A cleaned copy of *labels* and what changed (``{"removed": n, "filled": n, ...}``):
    specks under *min_size* voxels removed, then (with *holes*) holes filled."""
    out = np.array(labels, copy=True)
    removed = remove_small(out, int(min_size), per_slice) if min_size else 0
    filled = fill_holes(out, per_slice) if holes else 0
    return out, {"min_size_voxels": int(min_size), "fill_holes": bool(holes),
                 "per_slice": bool(per_slice), "removed_voxels": removed, "filled_voxels": filled}


def clean_segmentation(result, min_size: float = 0, holes: bool = False, unit: str = "voxels",
                       voxel_size=None) -> None:
    """Clean an in-memory :class:`napari_cem.infer.Segmentation` in place: per xy slice
    after a stack run (each slice was predicted alone), in 3D after an orthoplane run;
    *min_size* in *unit* (voxels, or nm^2 / nm^3 with the *voxel_size*). The record goes in
    ``result.metadata["cleanup"]``."""
    if not min_size and not holes:
        return
    if not isinstance(result.labels, np.ndarray):
        raise ValueError("Clean-up works on labels held in memory; write a TIFF (not a zarr store) "
                         "or clean the store's labels afterwards.")
    per_slice = result.metadata.get("mode", "stack") == "stack"
    size = min_size_voxels(min_size, unit, voxel_size, per_slice) if min_size else 0
    result.labels, info = clean_labels(result.labels, size, holes, per_slice)
    result.metadata["cleanup"] = info


def describe(info: dict | None) -> str:
    """What a clean-up changed (its ``metadata["cleanup"]``), in words; "" when none ran."""
    if not info:
        return ""
    where = "per slice" if info["per_slice"] else "in 3D"
    return (f"{info['removed_voxels']:,} voxels of pieces under {info['min_size_voxels']:,} voxels removed, "
            f"{info['filled_voxels']:,} hole voxels filled ({where})")
