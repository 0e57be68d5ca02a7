"""Instance labels of a volume too big for memory (a zarr or dask semantic result), slab
by slab, with the same ids as :func:`napari_cem.instances.find_instances` would give.

Pass 1 labels each slab of z slices on its own (cc3d) and keeps the size and class of each
piece and the pieces on the slab's last slice; pieces that touch across a slab border
(with the connectivity's neighbours on the next slice) are joined by a connected-components
pass over that small graph. Global piece ids grow in raster order, so the smallest piece id
of an object is the piece holding its first voxel: ordering objects by it gives the
in-memory ids. Pass 2 labels each slab again (the same result: labelling is
deterministic) and writes the final ids through a lookup table. Memory: a few slabs and
one table entry per piece. The store is written beside the target and renamed into place
when finished: a cancelled or failed run leaves nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .instances import (
    Instances,
    _info,
    check_kind,
    check_value,
    class_map,
    classes_of,
    ids_dtype,
    keep_large,
    label_block,
    resolve_connectivity,
    size_in_voxels,
    split_distance,
)

__all__ = ["INSTANCES_FORMAT", "find_instances_in_slabs", "open_instances", "slab_thickness"]

INSTANCES_FORMAT = "napari-cem-instances"
_SLAB_BYTES = 64 << 20  # semantic slab read at a time (the labelling holds ~10x that)


def slab_thickness(shape, itemsize: int = 1, z_chunk: int | None = None) -> int:
    """Slices per slab: about 64 MiB of input, a whole number of the input's z chunks."""
    plane = int(np.prod(shape[1:])) * max(int(itemsize), 1)
    n = max(1, _SLAB_BYTES // max(plane, 1))
    if z_chunk:
        n = max(z_chunk, (n // z_chunk) * z_chunk)
    return int(min(n, shape[0]))


def _cross_offsets(connectivity: int) -> list[tuple[int, int]]:
    """In-plane (dy, dx) shifts of the neighbours on the next slice."""
    if connectivity == 6:
        return [(0, 0)]
    return [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # 26 (and 18 is not offered)


def _shifted(a: np.ndarray, b: np.ndarray, dy: int, dx: int):
    """Views of planes *a* and *b* such that a[i] and b[i] are neighbours at (dy, dx)."""
    h, w = a.shape
    ay, by = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    ax, bx = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return a[ay, ax], b[by, bx]


def border_pairs(last, first, last_class, first_class, connectivity: int) -> np.ndarray:
    """(k, 2) global piece ids joined across a slab border: neighbours of the same class."""
    found = []
    for dy, dx in _cross_offsets(connectivity):
        a, b = _shifted(last, first, dy, dx)
        ca, cb = _shifted(last_class, first_class, dy, dx)
        ok = (a > 0) & (b > 0) & (ca == cb)
        if ok.any():
            found.append(np.stack([a[ok], b[ok]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _objects(n_pieces: int, pairs: np.ndarray) -> np.ndarray:
    """For each global piece id 0..n: the smallest piece id of its object (0 for 0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = n_pieces + 1
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, comp, np.arange(n, dtype=np.int64))
    return smallest[comp]


def _slabs(nz: int, step: int):
    return [(z0, min(z0 + step, nz)) for z0 in range(0, nz, step)]


def find_instances_in_slabs(semantic, out, *, value: int | None = None, kind: str = "auto",
                            threshold: float = 0.5, mode: str = "3d", connectivity: str = "auto",
                            split: bool = False, split_depth: float = 2.0, min_size: float = 0,
                            unit: str = "voxels", voxel_size=None, class_names=None, slab: int | None = None,
                            client=None, progress=None, should_stop=None) -> Instances:
    """Objects of a 3D semantic array read slab by slab, written to the zarr store *out*;
    the arguments and the result are those of :func:`napari_cem.instances.find_instances`
    (labels: the store's zarr array). Splitting touching objects is per slice here (2D mode):
    a 3D watershed needs the whole volume in memory. *client*: a ``distributed.Client``
    whose workers label the slabs (this process reads, stitches and writes: same ids)."""
    from ._cancel import Cancelled

    shape = tuple(np.shape(semantic))
    if len(shape) != 3:
        raise ValueError(f"Slab-by-slab labelling is for 3D volumes, this has {len(shape)} axes.")
    if split and mode == "3d":
        raise ValueError("Splitting touching objects in 3D needs the volume in memory: use the 2D "
                         "mode, or label a part of the volume that fits.")
    kind = check_kind(semantic, kind)
    check_value(value, kind)
    conn, why = resolve_connectivity(connectivity, mode, voxel_size)
    h, sampling = split_distance(split_depth, unit, voxel_size, mode) if split else (None, None)
    min_voxels = size_in_voxels(min_size, unit, voxel_size, mode)
    step = int(slab) if slab else slab_thickness(shape, np.dtype(semantic.dtype).itemsize, _z_chunk(semantic))
    slabs = _slabs(shape[0], step)
    total_steps = 2 * len(slabs)

    def check():
        if should_stop is not None and should_stop():
            raise Cancelled()

    rule = (kind, value, threshold, mode, conn, h, sampling)

    def read(i):
        z0, z1 = slabs[i]
        return (np.asarray(semantic[z0:z1]), rule)

    # pass 1: pieces, their sizes and classes, joins across slab borders
    offsets, sizes, classes, pairs = [], [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], []
    total, last = 0, None
    for i, summary in enumerate(_mapped(client, _slab_summary, read, len(slabs), check)):
        n, slab_sizes, slab_classes, first, last_plane, cmap_first, cmap_last = summary
        sizes.append(slab_sizes)
        classes.append(slab_classes)
        if last is not None and mode == "3d":
            pairs.append(border_pairs(last[0], _global(first, total), last[1], cmap_first, conn))
        last = (_global(last_plane, total), cmap_last)
        offsets.append(total)
        total += n
        if progress is not None:
            progress(i + 1, total_steps, "finding objects")
    sizes, classes = np.concatenate(sizes), np.concatenate(classes)
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    root = _objects(total, pairs)
    object_size = np.bincount(root, weights=sizes, minlength=total + 1).astype(np.int64)
    object_size[0] = 0
    lut_root = keep_large(object_size, min_voxels)  # root id -> final id
    lut = lut_root[root]  # piece id -> final id
    count = int(lut_root.max()) if total else 0
    dtype = ids_dtype(count)
    object_class = np.zeros(count + 1, np.int64)
    object_class[lut[lut > 0]] = classes[lut > 0]
    removed = int((object_size[1:] > 0).sum()) - count
    info = _info(mode, conn, why, split, split_depth, unit, min_voxels, voxel_size, kind, value,
                 threshold, class_names, count, removed)

    # pass 2: the same labelling, written with the final ids, into a store renamed at the end
    target = Path(out)
    lut = lut.astype(dtype)
    import zarr

    from ._atomic import atomic_folder

    with atomic_folder(target) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        chunks = (min(step, 64) if mode == "3d" else 1, *(min(s, 512) for s in shape[1:]))
        labels = group.create_array("labels", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        group.create_array("object_class", data=object_class.astype(np.uint32 if count else np.uint8))
        counts = [b - a for a, b in zip(offsets, offsets[1:] + [total])]

        def relabel_args(i):
            part = lut[offsets[i]:offsets[i] + counts[i] + 1].copy()  # local id -> final id
            part[0] = 0
            return (*read(i), part)

        for i, final in enumerate(_mapped(client, _slab_final, relabel_args, len(slabs), check)):
            z0, z1 = slabs[i]
            labels[z0:z1] = final
            if progress is not None:
                progress(len(slabs) + i + 1, total_steps, "writing objects")
        group.attrs["napari_cem"] = {"format": INSTANCES_FORMAT, "count": count,
                                     "classes": list(class_names or []), "info": info}
    return open_instances(target)


def _label_slab(data: np.ndarray, rule) -> tuple[np.ndarray, int, np.ndarray]:
    """(local ids, their count, class map) of one slab: the same whichever process runs it."""
    kind, value, threshold, mode, conn, h, sampling = rule
    cmap = class_map(data, kind, value, threshold)
    if mode == "2d":  # each slice alone; ids continue from slice to slice
        parts, n = [], 0
        for plane in cmap:
            lab, k = label_block(plane, conn, h=h, sampling=sampling)
            lab = lab.astype(np.int64)
            lab[lab > 0] += n
            parts.append(lab)
            n += k
        return np.stack(parts), n, cmap
    lab, n = label_block(cmap, conn)
    return lab, n, cmap


def _slab_summary(data: np.ndarray, rule):
    """What the first pass keeps of a slab: its piece count, sizes and classes, and its first
    and last planes (ids and classes) to join across the borders."""
    lab, n, cmap = _label_slab(data, rule)
    return (n, np.bincount(lab.ravel(), minlength=n + 1)[1:], classes_of(lab, cmap, n)[1:],
            lab[0].copy(), lab[-1].copy(), cmap[0].copy(), cmap[-1].copy())


def _slab_final(data: np.ndarray, rule, part_lut: np.ndarray) -> np.ndarray:
    """A slab's final ids (the second pass labels it again: cheaper than keeping it)."""
    lab, _n, _cmap = _label_slab(data, rule)
    return part_lut[lab]


def _mapped(client, fn, args_of, n: int, check, in_flight: int = 4):
    """fn(*args_of(i)) for i in 0..n-1, in order: here, or on *client*'s workers with a few
    slabs in flight (read here as they are needed)."""
    if client is None:
        for i in range(n):
            check()
            yield fn(*args_of(i))
        return
    futures: dict = {}
    for i in range(n):
        while len(futures) < in_flight and i + len(futures) < n:
            j = i + len(futures)
            futures[j] = client.submit(fn, *args_of(j), pure=False)
        check()
        result = futures.pop(i).result()
        yield result


def _global(plane: np.ndarray, offset: int) -> np.ndarray:
    """Global piece ids of one plane of a slab's local ids."""
    out = plane.astype(np.int64)
    out[out > 0] += offset
    return out


def _z_chunk(array) -> int | None:
    """Slices per z chunk of a zarr or dask array (None for numpy)."""
    chunks = getattr(array, "chunks", None)
    if not chunks:
        return None
    first = chunks[0]
    return int(first[0]) if isinstance(first, tuple) else int(first)


def open_instances(path) -> Instances:
    """Open a store written by :func:`find_instances_in_slabs` (or ``napari-cem instances``)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    meta = dict(group.attrs.get("napari_cem", {}))
    if meta.get("format") != INSTANCES_FORMAT:
        raise ValueError(f"'{path}' is not a napari-cem instances store.")
    return Instances(group["labels"], int(meta["count"]), np.asarray(group["object_class"][:]).astype(np.int64),
                     list(meta.get("classes", [])), dict(meta.get("info", {})), Path(path))
