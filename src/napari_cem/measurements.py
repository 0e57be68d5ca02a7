"""A table of the objects of an instance label volume: size, volume, position, extent and
EM intensity per object, in nm with a voxel size (column names say the unit: ``_nm``,
``_nm3`` or ``_px``, ``_px3``). Plain numpy columns (``regionprops_table`` style): they go
into a CSV and a Labels layer's ``features`` as they are. Computed with one pass of
bincounts and ``find_objects`` per block (sums that add up across slabs, so a volume
larger than memory is measured slab by slab), then each object's box for its surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["measure_objects", "measure_objects_in_slabs", "table_csv"]


@dataclass
class _Stats:
    """Sums per object id (index = id) of one block of labels, to be added to other blocks'."""

    counts: np.ndarray
    sums: list  # per axis: sum of the voxels' coordinates (in the volume)
    lo: list  # per axis: first index (in the volume); a large value where the id is absent
    hi: list  # per axis: last index + 1; -1 where absent
    isum: np.ndarray | None = None  # EM intensity: sum, min, max
    imin: np.ndarray | None = None
    imax: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.counts) - 1

    def grown(self, n: int) -> _Stats:
        pad = n - self.n
        if pad <= 0:
            return self

        def grow(a, value):
            return None if a is None else np.concatenate([a, np.full(pad, value, a.dtype)])

        return _Stats(grow(self.counts, 0), [grow(a, 0) for a in self.sums], [grow(a, _FAR) for a in self.lo],
                      [grow(a, -1) for a in self.hi], grow(self.isum, 0), grow(self.imin, np.inf),
                      grow(self.imax, -np.inf))

    def __add__(self, other: _Stats) -> _Stats:
        n = max(self.n, other.n)
        a, b = self.grown(n), other.grown(n)

        def join(x, y, op):
            return None if x is None else op(x, y)

        return _Stats(a.counts + b.counts, [x + y for x, y in zip(a.sums, b.sums)],
                      [np.minimum(x, y) for x, y in zip(a.lo, b.lo)], [np.maximum(x, y) for x, y in zip(a.hi, b.hi)],
                      join(a.isum, b.isum, np.add), join(a.imin, b.imin, np.minimum),
                      join(a.imax, b.imax, np.maximum))


_FAR = np.iinfo(np.int64).max


def _block_stats(labels: np.ndarray, image, offset) -> _Stats:
    """The sums of one block (a slab, a crop or the whole volume) starting at *offset*."""
    from scipy import ndimage

    flat = labels.ravel().astype(np.intp)
    n = int(flat.max()) if flat.size else 0
    counts = np.bincount(flat, minlength=n + 1)
    grids = np.indices(labels.shape, sparse=True)
    sums, lo, hi = [], [], []
    boxes = ndimage.find_objects(labels, max_label=n) if n else []
    for axis in range(labels.ndim):
        weights = np.broadcast_to(grids[axis], labels.shape).ravel()
        sums.append(np.bincount(flat, weights=weights, minlength=n + 1) + counts * float(offset[axis]))
        first, last = np.full(n + 1, _FAR, np.int64), np.full(n + 1, -1, np.int64)
        for i, box in enumerate(boxes, 1):
            if box is not None:
                first[i], last[i] = box[axis].start + offset[axis], box[axis].stop + offset[axis]
        lo.append(first)
        hi.append(last)
    stats = _Stats(counts, sums, lo, hi)
    if image is not None:
        present = np.flatnonzero(counts[1:]) + 1
        stats.isum = np.bincount(flat, weights=np.asarray(image).ravel().astype(np.float64), minlength=n + 1)
        stats.imin, stats.imax = np.full(n + 1, np.inf), np.full(n + 1, -np.inf)
        if present.size:
            stats.imin[present] = ndimage.minimum(image, labels, present)
            stats.imax[present] = ndimage.maximum(image, labels, present)
    return stats


def _sum_slabs(labels, image, start, step, progress=None, should_stop=None) -> _Stats:
    """The sums of a 2D image (one block) or of a volume read *step* slices at a time (None:
    64 MiB of labels a time, which also bounds the temporaries of a large array in memory)."""
    from ._cancel import check_stop
    from .instances_slabs import slab_thickness

    if len(labels.shape) == 2:
        return _block_stats(np.asarray(labels), None if image is None else np.asarray(image), start)
    nz = labels.shape[0]
    step = max(1, step or slab_thickness(labels.shape, np.dtype(labels.dtype).itemsize))
    total = None
    for z0 in range(0, nz, step):
        check_stop(should_stop)
        z1 = min(nz, z0 + step)
        block = np.asarray(labels[z0:z1])
        stats = _block_stats(block, None if image is None else np.asarray(image[z0:z1]),
                             start + np.array([z0, 0, 0]))
        total = stats if total is None else total + stats
        if progress is not None:
            progress(z1, nz, "measuring slabs")
    if total is None:  # no slices at all
        empty = np.zeros((0, *labels.shape[1:]), np.uint8)
        total = _block_stats(empty, None if image is None else empty, start)
    return total


def _check(labels, image) -> None:
    if len(labels.shape) not in (2, 3):
        raise ValueError(f"Objects are measured in 2D or 3D labels, these have {len(labels.shape)} axes.")
    if image is not None and tuple(image.shape) != tuple(labels.shape):
        raise ValueError(f"The EM image {tuple(image.shape)} and the labels {tuple(labels.shape)} differ in shape.")


def measure_objects(labels, *, image=None, voxel_size=None, object_class=None, class_names=None,
                    ids=None, offset=None, should_stop=None) -> dict:
    """Columns per object id 1..N present in *labels* (2D or 3D, numpy): label, class,
    voxels, volume (area in 2D), equivalent diameter, centroid and bounding box, first and
    last slice and number of slices (3D), surface area (3D, marching cubes) or solidity
    (2D), mean / min / max of *image* when given.

    *ids*: measure only these objects; *offset*: where the crop *labels* starts in the
    volume (voxels per axis), so that positions are those of the volume. Together they
    re-measure the objects a proofreading edit touched within their bounding box (objects
    cut by the crop's edge must not be among *ids*). *should_stop()* is asked between
    objects' surfaces (the slow part), raising Cancelled."""
    labels = np.asarray(labels)
    image = None if image is None else np.asarray(image)
    _check(labels, image)
    start = np.zeros(labels.ndim, np.int64) if offset is None else np.asarray(offset, np.int64)
    stats = _sum_slabs(labels, image, start, None, should_stop=should_stop)

    def crop(box):
        return labels[tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, start))]

    return _columns(stats, labels.ndim, crop, voxel_size, object_class, class_names, ids, should_stop)


def measure_objects_in_slabs(labels, *, image=None, voxel_size=None, object_class=None, class_names=None,
                             slab: int | None = None, progress=None, should_stop=None) -> dict:
    """:func:`measure_objects` of a 3D label volume read slab by slab (a zarr array, such as
    ``napari-cem instances ... -o OUT.zarr`` writes): the same columns, holding one slab
    (64 MiB of labels), then a window of two slabs for the objects' surfaces."""
    from .instances_slabs import slab_thickness

    _check(labels, image)
    if len(labels.shape) != 3:
        raise ValueError("Slab by slab measuring is for 3D volumes.")
    step = int(slab) if slab else slab_thickness(labels.shape, np.dtype(labels.dtype).itemsize)
    total = _sum_slabs(labels, image, np.zeros(3, np.int64), step, progress, should_stop)
    window = _Window(labels, 2 * step)

    def crop(box):
        return np.asarray(labels[box])

    def surface(box, i, spacing):
        held = window.crop(box)
        if held is not None:
            return _surface(held == i, spacing)
        return _surface_in_slabs(crop, box, i, spacing, step)  # a box taller than the window

    return _columns(total, 3, crop, voxel_size, object_class, class_names, None, should_stop, surface)


class _Window:
    """Whole planes z0..z1 of a volume on disk, read again only when an object's box leaves
    them. Instance ids follow the raster order of their first voxel, so asked in id order
    the window only moves forward: each slab is read about once, instead of one read (and
    chunk decompression) per object."""

    def __init__(self, labels, height: int):
        self.labels, self.height = labels, max(1, int(height))
        self.z0, self.z1, self.data = 0, 0, None

    def crop(self, box):
        start, stop = box[0].start, box[0].stop
        if stop - start > self.height:
            return None
        if self.data is None or start < self.z0 or stop > self.z1:
            self.z0, self.z1 = start, min(self.labels.shape[0], start + self.height)
            self.data = np.asarray(self.labels[self.z0:self.z1])
        return self.data[(slice(start - self.z0, stop - self.z0), box[1], box[2])]


def _columns(stats: _Stats, ndim: int, crop_of, voxel_size, object_class, class_names, ids,
             should_stop, surface=None) -> dict:
    """The table from the sums; *crop_of(box)* gives the labels inside a box of the volume
    (for the surfaces / solidity, object by object); *surface(box, i, spacing)*, when given,
    measures a 3D object's surface instead (slab by slab for a volume out of core)."""
    from ._cancel import check_stop

    axes = "zyx"[-ndim:]
    unit = "nm" if voxel_size is not None else "px"
    spacing = np.array([float(v) for v in voxel_size][-ndim:]) if voxel_size is not None else np.ones(ndim)
    counts = stats.counts
    present = np.flatnonzero(counts[1:]) + 1
    ids = present if ids is None else present[np.isin(present, np.asarray(ids))]
    cols: dict = {"label": ids}
    if object_class is not None:
        classes = np.asarray(object_class)
        values = classes[ids] if classes.size else np.zeros(len(ids), np.int64)
        names = list(class_names or [])
        cols["class"] = np.array([names[v] if 0 <= v < len(names) else f"class {v}" for v in values], dtype=object)
    cols["voxels"] = counts[ids]
    cell = float(np.prod(spacing))
    cols[f"{'volume' if ndim == 3 else 'area'}_{unit}{ndim}"] = counts[ids] * cell
    if ndim == 3:
        cols[f"equivalent_diameter_{unit}"] = np.cbrt(6 * counts[ids] * cell / math.pi)
    else:
        cols[f"equivalent_diameter_{unit}"] = np.sqrt(4 * counts[ids] * cell / math.pi)
    for axis, letter in enumerate(axes):
        cols[f"centroid_{letter}_{unit}"] = stats.sums[axis][ids] / counts[ids] * spacing[axis]
    for axis, letter in enumerate(axes):
        lo, hi = stats.lo[axis][ids], stats.hi[axis][ids]
        cols[f"bbox_{letter}0_{unit}"] = lo * spacing[axis]
        cols[f"bbox_{letter}1_{unit}"] = hi * spacing[axis]
        if letter == "z":
            cols["first_slice"], cols["last_slice"], cols["slices"] = lo, hi - 1, hi - lo
    shape_values = []
    for i in ids:
        check_stop(should_stop)
        box = tuple(slice(int(stats.lo[a][i]), int(stats.hi[a][i])) for a in range(ndim))
        if ndim == 3 and surface is not None:
            shape_values.append(surface(box, i, spacing))
            continue
        mask = crop_of(box) == i
        shape_values.append(_surface(mask, spacing) if ndim == 3 else _solidity(mask))
    cols[f"surface_area_{unit}2" if ndim == 3 else "solidity"] = np.array(shape_values, np.float64)
    if stats.isum is not None:
        cols["intensity_mean"] = stats.isum[ids] / counts[ids]
        cols["intensity_min"] = stats.imin[ids].astype(np.float64)
        cols["intensity_max"] = stats.imax[ids].astype(np.float64)
    return cols


def _surface(mask: np.ndarray, spacing) -> float:
    """Area of the marching-cubes surface of one object's mask (padded by one voxel)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    crop = np.pad(mask, 1).astype(np.uint8)
    verts, faces, _n, _v = marching_cubes(crop, 0.5, spacing=tuple(float(v) for v in spacing))
    return float(mesh_surface_area(verts, faces))


def _surface_in_slabs(crop_of, box, i: int, spacing, step: int) -> float:
    """:func:`_surface` of object *i* read *step* slices of its box at a time (a sprawling
    object's box can be most of the volume). Marching cubes is local to each cube between
    two planes, so slabs that share one plane add up to the whole surface."""
    from skimage.measure import marching_cubes, mesh_surface_area

    z0, z1 = box[0].start, box[0].stop
    planes = z1 - z0 + 2  # the padded mask: a plane of background before and after
    area = 0.0
    for a in range(0, planes - 1, max(step, 1)):
        b = min(planes - 1, a + max(step, 1))  # planes a..b, the next slab starts at b
        lo, hi = max(z0, z0 + a - 1), min(z1, z0 + b)  # box slices within planes a..b
        mask = np.zeros((b - a + 1, box[1].stop - box[1].start + 2, box[2].stop - box[2].start + 2), np.uint8)
        if hi > lo:
            at = lo - (z0 + a - 1)
            mask[at:at + hi - lo, 1:-1, 1:-1] = crop_of((slice(lo, hi), box[1], box[2])) == i
        if mask.min() == mask.max():
            continue
        verts, faces, _n, _v = marching_cubes(mask, 0.5, spacing=tuple(float(v) for v in spacing))
        area += float(mesh_surface_area(verts, faces))
    return area


def _solidity(mask: np.ndarray) -> float:
    """Area over the area of the convex hull of one 2D object's mask."""
    from skimage.measure import regionprops

    return float(regionprops(mask.astype(np.uint8))[0].solidity)


def table_csv(cols: dict) -> str:
    """The columns as CSV text (header line, one line per object)."""
    names = list(cols)
    lines = [",".join(names)]
    n = len(cols[names[0]]) if names else 0
    for i in range(n):
        lines.append(",".join(_cell(cols[k][i]) for k in names))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    text = str(value)
    return f'"{text}"' if "," in text or '"' in text else text
