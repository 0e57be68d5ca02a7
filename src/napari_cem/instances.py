"""Organelles as objects: instance labels from a semantic segmentation (labels or
probabilities), in memory. The out-of-core version (slab by slab, ids stitched across
slab borders) is :mod:`napari_cem.instances_slabs`; both follow the rules here.

Rules, the same everywhere:

* *foreground*: the voxels of one class (``value``), of every class (``value=None``: objects
  of different classes are never joined), or of probabilities at or above ``threshold``;
* *connectivity*: 2D mode labels each xy slice on its own (8- or 4-connected); 3D mode is
  26-connected ("full") or 6-connected ("faces"). "auto" takes full for near-isotropic
  voxels and faces otherwise: across thick sections an object continues only where it
  overlaps itself, not through a corner 50 nm away;
* *split* (optional): touching objects are cut by a watershed of the distance to the
  background, seeded by its h-maxima (*split_depth*: how much narrower than the two
  bodies a neck must be, nm with the voxel size, else pixels; distances in nm follow the
  z spacing);
* *min_size*: smaller objects are dropped (voxels, or nm^3 / nm^2 in 2D mode);
* *ids*: 1..N in the raster (z, y, x) order of each object's first voxel, so they are
  deterministic and the same in memory and out of core; dtype uint16 or uint32, the
  smallest that holds N. More than 2^32 - 1 objects is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONNECTIVITIES", "MAX_OBJECTS", "MODES", "Instances", "check_kind", "class_map",
           "check_value", "find_instances", "ids_dtype", "resolve_connectivity", "size_in_voxels",
           "split_distance"]

MAX_OBJECTS = 2**32 - 1
MODES = ("3d", "2d")
CONNECTIVITIES = ("auto", "full", "faces")
_ANISOTROPY = 2.0  # z spacing over xy spacing above which "auto" links sections by faces only


@dataclass
class Instances:
    """Instance labels and what made them.

    ``labels``: ids 0 (background), 1..count (numpy, or a zarr array out of core).
    ``object_class``: the class value of each id (index 0 unused), from the semantic input.
    ``class_names``: names of the class values (``class_names[v]``), when known.
    ``info``: mode, connectivity and why, split and size settings, voxel size, counts.
    """

    labels: Any
    count: int
    object_class: np.ndarray
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    store: Path | None = None

    def class_name(self, value: int) -> str:
        value = int(value)
        if 0 <= value < len(self.class_names):
            return str(self.class_names[value])
        return f"class {value}"

    def describe(self) -> str:
        """One line for a status bar or the CLI."""
        if self.count == 0:
            return "No objects found: the segmentation has no foreground" + (
                f" of {self.info['class']}" if self.info.get("class") else "") + "."
        what = f"{self.count:,} object{'s' if self.count != 1 else ''}"
        parts = [self.info.get("mode", "3d").upper(), self.info.get("connectivity_why", "")]
        if self.info.get("split"):
            parts.append(f"touching objects split (depth {self.info['split_depth']:g} "
                         f"{self.info['unit']})")
        if self.info.get("removed"):
            parts.append(f"{self.info['removed']:,} under {self.info['min_size_voxels']:,} voxels dropped")
        return f"{what} ({'; '.join(p for p in parts if p)})"


# -- rules shared with the out-of-core labelling ------------------------------------------------
def check_kind(data, kind: str = "auto") -> str:
    """'labels' or 'probabilities': floats are probabilities (0-1), integers labels unless
    *kind* says they are uint8 confidences (255 = 1.0, as Segment writes them)."""
    if kind not in ("auto", "labels", "probabilities"):
        raise ValueError(f"The input kind is 'auto', 'labels' or 'probabilities', got {kind!r}.")
    dtype = np.dtype(data.dtype)
    if kind == "auto":
        kind = "probabilities" if dtype.kind == "f" else "labels"
    if kind == "labels" and dtype.kind not in "uib":
        raise ValueError(f"Labels must be whole numbers, this layer holds {dtype} values "
                         "(probabilities?): choose a Labels layer, or treat it as probabilities.")
    return kind


def class_map(block, kind: str, value: int | None, threshold: float) -> np.ndarray:
    """The class value of each voxel of *block* that belongs to an object, 0 elsewhere."""
    block = np.asarray(block)
    if kind == "probabilities":
        if block.dtype.kind == "f":
            if block.size and (np.nanmax(block) > 1.0 + 1e-6 or np.nanmin(block) < -1e-6):
                raise ValueError("Probabilities must be between 0 and 1; these go beyond (labels?).")
            return (block >= threshold).astype(np.uint8)
        return (block >= int(np.ceil(threshold * 255))).astype(np.uint8)  # uint8 confidences
    if block.dtype.kind == "b":
        block = block.view(np.uint8)
    if value is None:
        return block if block.dtype.kind == "u" else np.clip(block, 0, None).astype(np.uint64)
    return np.where(block == value, block, 0).astype(block.dtype)


def check_value(value, kind: str) -> None:
    """A class to take must be a structure (> 0) of a labels input."""
    if value is None:
        return
    if kind == "probabilities":
        raise ValueError("Probabilities hold one structure: there is no class to choose (use the "
                         "threshold).")
    if int(value) <= 0:
        raise ValueError("Class 0 is the background: choose a structure class.")


def resolve_connectivity(request: str, mode: str, voxel_size) -> tuple[int, str]:
    """(cc3d connectivity, why in words) of a request ('auto', 'full', 'faces')."""
    if request not in CONNECTIVITIES:
        raise ValueError(f"Connectivity is one of {', '.join(CONNECTIVITIES)}, got {request!r}.")
    if mode not in MODES:
        raise ValueError(f"The mode is '3d' or '2d', got {mode!r}.")
    if mode == "2d":
        return (4, "per slice, 4-connected") if request == "faces" else (8, "per slice, 8-connected")
    if request == "full":
        return 26, "26-connected"
    if request == "faces":
        return 6, "6-connected"
    if voxel_size is None or len(voxel_size) < 3:
        return 6, "6-connected (voxel size unknown: linked across slices only where objects overlap)"
    z, y, x = (float(v) for v in voxel_size[-3:])
    if z <= _ANISOTROPY * (y + x) / 2:
        return 26, "26-connected (near-isotropic voxels)"
    return 6, (f"6-connected: {z:g} nm sections on {(y + x) / 2:g} nm pixels, linked across "
               "sections only where objects overlap")


def size_in_voxels(min_size: float, unit: str, voxel_size, mode: str) -> int:
    """The smallest object kept, in voxels (*unit* 'voxels' or 'nm': nm^3, nm^2 in 2D mode)."""
    from .cleanup import min_size_voxels

    return min_size_voxels(min_size, unit, voxel_size, per_slice=mode == "2d") if min_size else 0


def split_distance(depth: float, unit: str, voxel_size, mode: str):
    """(h in distance units, EDT sampling) of a split depth: nm with a voxel size (the
    distances then follow the z spacing), else pixels."""
    if depth <= 0:
        raise ValueError(f"The split depth must be above 0, got {depth}.")
    if unit == "nm":
        if voxel_size is None:
            raise ValueError("A split depth in nm needs the voxel size; give it in voxels, or set "
                             "the voxel size.")
        vs = [float(v) for v in voxel_size]
        return float(depth), (vs[-2:] if mode == "2d" else vs[-3:])
    return float(depth), None


def ids_dtype(count: int) -> np.dtype:
    """uint16 or uint32, the smallest that holds *count* ids; more is refused."""
    if count > MAX_OBJECTS:
        raise ValueError(f"{count:,} objects is more than instance labels can hold (2^32 - 1): "
                         "raise the minimum size, or label part of the volume.")
    return np.dtype(np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32)


# -- the labelling of one block --------------------------------------------------------------
def label_block(cmap: np.ndarray, connectivity: int, *, h=None, sampling=None) -> tuple[np.ndarray, int]:
    """(uint32/uint64 ids in raster order, count) of a class map (2D with connectivity 4 / 8,
    3D with 6 / 26), touching objects split when *h* is given."""
    import cc3d

    if h is not None and cmap.any():
        cmap = _split_pieces(cmap, connectivity, h, sampling)
    labels, n = cc3d.connected_components(cmap, connectivity=connectivity, return_N=True,
                                          out_dtype=np.uint64 if cmap.size >= 2**32 else np.uint32)
    return labels, int(n)


def _split_pieces(cmap: np.ndarray, connectivity: int, h: float, sampling) -> np.ndarray:
    """The class map turned into a map of watershed pieces (distinct values, any order):
    each class's mask cut along necks at least *h* shallower than the bodies they join."""
    import cc3d
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    out = np.zeros(cmap.shape, np.uint64)
    offset = 0
    for value in np.unique(cmap):
        if value == 0:
            continue
        mask = cmap == value
        dist = ndimage.distance_transform_edt(mask, sampling=sampling)
        peaks = h_maxima(dist, h).astype(bool) & mask
        markers = cc3d.connected_components(peaks, connectivity=connectivity, out_dtype=np.uint32)
        pieces = watershed(-dist, markers, mask=mask,
                           connectivity=1 if connectivity in (4, 6) else mask.ndim)
        orphans = mask & (pieces == 0)  # a part without a seed keeps its own piece
        if orphans.any():
            extra = cc3d.connected_components(orphans, connectivity=connectivity, out_dtype=np.uint32)
            pieces = np.where(orphans, extra.astype(np.int64) + int(pieces.max()), pieces)
        out[mask] = pieces[mask].astype(np.uint64) + offset
        offset += int(pieces.max())
    return out


def classes_of(labels: np.ndarray, cmap: np.ndarray, count: int, original=None) -> np.ndarray:
    """The class value of each id 1..count (index 0 is 0)."""
    values = cmap if original is None else original
    out = np.zeros(count + 1, np.int64)
    fg = labels > 0
    out[labels[fg]] = values[fg]
    return out


def keep_large(sizes: np.ndarray, min_voxels: int) -> np.ndarray:
    """Lookup old id -> new id: ids of objects under *min_voxels* become 0, the others are
    renumbered 1..n in their old order (raster order stays raster order)."""
    keep = sizes >= max(int(min_voxels), 1)
    keep[0] = False
    lut = np.cumsum(keep, dtype=np.int64)
    lut[~keep] = 0
    return lut


# -- in memory ---------------------------------------------------------------------------------
def find_instances(semantic, *, value: int | None = None, kind: str = "auto", threshold: float = 0.5,
                   mode: str = "3d", connectivity: str = "auto", split: bool = False,
                   split_depth: float = 2.0, min_size: float = 0, unit: str = "voxels",
                   size_unit: str | None = None, voxel_size=None, class_names=None, progress=None,
                   should_stop=None) -> Instances:
    """Objects of a semantic volume (or 2D image) held in memory; see the module's rules.

    *value*: the class to take (None: every class > 0); *unit* ('voxels' or 'nm') is that of
    *min_size* and *split_depth* (*size_unit*, when given, that of *min_size* alone).
    *progress(done, total, stage)* counts slices in 2D mode.
    """
    from ._cancel import Cancelled

    data = np.asarray(semantic)
    if data.ndim not in (2, 3):
        raise ValueError(f"Objects are found in a 2D image or a 3D volume, this has {data.ndim} axes.")
    if data.ndim == 2:
        mode = "2d"
    kind = check_kind(data, kind)
    check_value(value, kind)
    conn, why = resolve_connectivity(connectivity, mode, voxel_size)
    h, sampling = split_distance(split_depth, unit, voxel_size, mode) if split else (None, None)
    min_voxels = size_in_voxels(min_size, size_unit or unit, voxel_size, mode)
    planes = [data] if (mode == "3d" or data.ndim == 2) else list(data)
    parts, total = [], 0
    for i, plane in enumerate(planes):
        if should_stop is not None and should_stop():
            raise Cancelled()
        cmap = class_map(plane, kind, value, threshold)
        labels, n = label_block(cmap, conn, h=h, sampling=sampling)
        obj_class = classes_of(labels, cmap, n)
        if planes[0] is not data:  # 2D mode: ids go on from slice to slice
            labels = labels.astype(np.int64)
            labels[labels > 0] += total
        parts.append((labels, obj_class[1:]))
        total += n
        if progress is not None:
            progress(i + 1, len(planes), "finding objects")
    labels = parts[0][0] if len(planes) == 1 and planes[0] is data else np.stack([p[0] for p in parts])
    obj_class = np.concatenate([[0]] + [p[1] for p in parts]).astype(np.int64)
    sizes = np.bincount(labels.ravel(), minlength=total + 1)
    lut = keep_large(sizes, min_voxels)
    count = int(lut.max()) if lut.size else 0
    dtype = ids_dtype(count)
    labels = lut.astype(dtype)[labels]
    kept = np.zeros(count + 1, np.int64)
    kept[lut[lut > 0]] = obj_class[lut > 0]
    info = _info(mode, conn, why, split, split_depth, unit, min_voxels, voxel_size, kind, value,
                 threshold, class_names, count, int((sizes[1:] > 0).sum()) - count)
    return Instances(labels, count, kept, list(class_names or []), info)


def _info(mode, conn, why, split, split_depth, unit, min_voxels, voxel_size, kind, value,
          threshold, class_names, count, removed) -> dict:
    names = list(class_names or [])
    what = None
    if value is not None:
        what = str(names[value]) if 0 <= value < len(names) else f"class {value}"
    return {"mode": mode, "connectivity": int(conn), "connectivity_why": why, "split": bool(split),
            "split_depth": float(split_depth), "unit": "nm" if unit == "nm" else "voxels",
            "min_size_voxels": int(min_voxels), "voxel_size": None if voxel_size is None else
            [float(v) for v in voxel_size], "input": kind, "class": what, "class_value": value,
            "threshold": float(threshold) if kind == "probabilities" else None,
            "count": int(count), "removed": int(max(removed, 0))}
