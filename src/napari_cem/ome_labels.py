"""Segmentations as OME-Zarr (NGFF 0.5) label images, readable by every OME-Zarr tool
(napari, Fiji/MoBIE, neuroglancer, webKnossos, ome-zarr-py).

The napari-cem segmentation store (``segment(out=...)``, resumable slab by slab) is itself
the label image: its ``labels`` array is resolution level 0, and once every slab is done
this module adds the smaller levels (``s1``, ``s2``, ...: every other voxel, as labels
must not be averaged) and the ``multiscales`` / ``image-label`` metadata: axes in
nanometres with the voxel size, class names as label properties, a colour per class.
When the store sits at ``IMAGE.zarr/labels/NAME`` of an OME-Zarr image, it is listed in
that image's ``labels`` group and points back to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["OME_VERSION", "image_of_labels", "is_ome_image", "prepare_labels_group", "pyramid_factors",
           "write_ome_labels"]

OME_VERSION = "0.5"
_SMALLEST = 256  # px: no level whose largest xy side is below this
_MAX_LEVELS = 8
_LEVEL_BYTES = 64 << 20  # read this much of a level at a time to make the next one
# One colour per class value (RGBA); value 0 is background (transparent).
_PALETTE = [(255, 0, 255), (255, 255, 0), (0, 200, 255), (0, 255, 100), (255, 120, 0),
            (160, 90, 255), (255, 60, 60), (120, 255, 255)]


def _ome_attrs(group) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))  # NGFF 0.5 keeps everything under "ome"; 0.4 at the top


def is_ome_image(path) -> bool:
    """True when *path* is an OME-Zarr image group (it has ``multiscales``, no ``image-label``)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable is not an OME-Zarr image
        return False
    attrs = _ome_attrs(group)
    return "multiscales" in attrs and "image-label" not in attrs


def image_of_labels(out) -> Path | None:
    """The OME-Zarr image that *out* is a label image of (``IMAGE/labels/NAME``), or None."""
    out = Path(out)
    if out.parent.name == "labels" and is_ome_image(out.parent.parent):
        return out.parent.parent
    return None


def pyramid_factors(shape, voxel_size=None) -> list[tuple[int, ...]]:
    """Downsampling factor per axis of each level (level 0 first): x and y halve each level
    until the largest side is under 256 px; z halves too once its sections are no thicker
    than the level's pixels (never when the voxel size is unknown)."""
    ndim = len(shape)
    factors = [(1,) * ndim]
    while len(factors) < _MAX_LEVELS:
        last = factors[-1]
        if max(shape[-2] // last[-2], shape[-1] // last[-1]) // 2 < _SMALLEST:
            break
        nxt = list(last)
        nxt[-1] *= 2
        nxt[-2] *= 2
        if ndim == 3 and voxel_size is not None and shape[0] // last[0] >= 2:
            vz, vxy = float(voxel_size[0]) * last[0], float(voxel_size[-1]) * nxt[-1]
            if vz * 2 <= vxy * 1.5:
                nxt[0] *= 2
        factors.append(tuple(nxt))
    return factors


def _colors(n_classes: int) -> list[dict]:
    return [{"label-value": v, "rgba": [*_PALETTE[(v - 1) % len(_PALETTE)], 255]} for v in range(1, n_classes)]


def write_ome_labels(path, *, voxel_size=None, class_names=(), name: str | None = None,
                     data=None, progress=None, should_stop=None, list_in_image: bool = True) -> Path:
    """Make the finished segmentation store at *path* an OME-Zarr label image (see the module);
    returns *path*. Safe to run again (the smaller levels are rebuilt). *data*: the labels
    still in memory, to build the first smaller level from instead of reading them back.
    *list_in_image*: add *path* to its OME-Zarr image's ``labels`` list (off while *path* is
    a temporary folder that is renamed later)."""
    import zarr

    from ._cancel import check_stop

    path = Path(path)
    group = zarr.open_group(str(path), mode="r+")
    base = group["labels"]
    ndim = base.ndim
    axes = "zyx"[-ndim:]
    factors = pyramid_factors(base.shape, voxel_size)
    spacing = [float(v) for v in voxel_size][-ndim:] if voxel_size is not None else [1.0] * ndim
    datasets = [{"path": "labels", "coordinateTransformations": [{"type": "scale", "scale": spacing}]}]
    previous = base if data is None else data
    for level, factor in enumerate(factors[1:], 1):
        check_stop(should_stop)
        step = tuple(f // p for f, p in zip(factor, factors[level - 1]))
        shape = tuple(-(-n // s) for n, s in zip(previous.shape, step))
        chunks = tuple(min(c, n) for c, n in zip(base.chunks, shape))
        array = group.create_array(f"s{level}", shape=shape, chunks=chunks, dtype=base.dtype,
                                   fill_value=0, overwrite=True, dimension_names=tuple(axes))
        _downsample(previous, array, step)
        datasets.append({"path": f"s{level}", "coordinateTransformations": [
            {"type": "scale", "scale": [s * f for s, f in zip(spacing, factor)]}]})
        previous = array
        if progress is not None:
            progress(level, len(factors) - 1, "OME-Zarr levels")
    unit = {"unit": "nanometer"} if voxel_size is not None else {}
    names = list(class_names)
    n_classes = max(len(names), 2)
    image = image_of_labels(path)
    label = {"version": OME_VERSION, "colors": _colors(n_classes),
             "properties": [{"label-value": v, "class": names[v] if v < len(names) else f"class {v}"}
                            for v in range(1, n_classes)]}
    if image is not None:
        label["source"] = {"image": "../../"}
    group.attrs["ome"] = {"version": OME_VERSION, "multiscales": [{
        "name": name or path.stem, "axes": [{"name": a, "type": "space", **unit} for a in axes],
        "datasets": datasets}], "image-label": label}
    if image is not None and list_in_image:
        _list_in_image(path.parent, path.name)
    return path


def _downsample(source, target, step) -> None:
    """target = source[::step] (every step-th voxel per axis), a slab of source at a time."""
    plane = int(np.prod(source.shape[1:])) * np.dtype(source.dtype).itemsize
    rows = max(step[0], (_LEVEL_BYTES // max(plane, 1)) // step[0] * step[0])
    for z0 in range(0, source.shape[0], rows):
        block = np.asarray(source[z0:z0 + rows])
        sub = block[tuple(slice(None, None, s) for s in step)]
        t0 = z0 // step[0]
        target[t0:t0 + sub.shape[0]] = sub


def _list_in_image(labels_dir: Path, name: str) -> None:
    """Add *name* to the ``labels`` group of an OME-Zarr image (made if missing)."""
    import zarr

    group = zarr.open_group(str(labels_dir), mode="a")
    attrs = _ome_attrs(group)
    names = [n for n in attrs.get("labels", []) if n != name] + [name]
    group.attrs["ome"] = {"version": OME_VERSION, "labels": names}


def prepare_labels_group(out) -> None:
    """Before segmenting into ``IMAGE/labels/NAME``: the image's ``labels`` group exists, so
    that the store is made inside an OME-Zarr image and not beside it."""
    import zarr

    if image_of_labels(out) is not None:
        zarr.open_group(str(Path(out).parent), mode="a")


def is_ome_labels(path) -> bool:
    """True when *path* is an OME-Zarr label image (``image-label`` in its metadata)."""
    import zarr

    try:
        return "image-label" in _ome_attrs(zarr.open_group(str(path), mode="r"))
    except Exception:  # noqa: BLE001 - anything unreadable is not a label image
        return False


def read_ome_labels(path) -> tuple[list, tuple | None, list[str]]:
    """(levels as lazy dask arrays, full-resolution voxel size in nm or None, class names)
    of an OME-Zarr label image (ours or another tool's)."""
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = _ome_attrs(group)
    ms = attrs["multiscales"][0]
    levels = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
    scale = None
    for t in ms["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = tuple(float(v) for v in t["scale"])
    units = [a.get("unit") for a in ms.get("axes", []) if isinstance(a, dict)]
    if scale is not None and not all(u in ("nanometer", "nm") for u in units):
        scale = None  # a scale without nanometres is not a voxel size we can use
    props = attrs["image-label"].get("properties", [])
    top = max([int(p.get("label-value", 0)) for p in props] + [0])
    names = ["background"] + [f"class {v}" for v in range(1, top + 1)]
    for p in props:
        v = int(p.get("label-value", 0))
        if 0 < v <= top and p.get("class"):
            names[v] = str(p["class"])
    return levels, scale, names


def save_ome_labels(path, labels, *, voxel_size=None, class_names=(), chunks=None,
                    progress=None, should_stop=None) -> Path:
    """Labels held in memory (or a dask / zarr array) written as a new OME-Zarr label image at
    *path*, atomically: built in a temporary folder beside it, then renamed into place (an
    existing label image there is replaced only once the new one is complete, and a cancel
    leaves it as it was). Inside an OME-Zarr image (``IMAGE/labels/NAME``) the name is kept
    as given and listed in the image's ``labels`` group; elsewhere ``.zarr`` is added."""
    import zarr

    from ._atomic import atomic_folder
    from ._cancel import check_stop

    path = Path(path)
    image = image_of_labels(path)
    if image is None and path.suffix.lower() != ".zarr":
        path = path.with_name(path.name + ".zarr")
    ndim = len(labels.shape)
    if ndim not in (2, 3):
        raise ValueError(f"An OME-Zarr label image is 2D or 3D; these labels have {ndim} axes.")
    chunks = chunks or ((min(16, labels.shape[0]),) if ndim == 3 else ()) + tuple(
        min(512, n) for n in labels.shape[-2:])
    step = chunks[0] if ndim == 3 else labels.shape[0]
    with atomic_folder(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        dtype = np.dtype(labels.dtype) if np.dtype(labels.dtype).kind in "ui" else np.dtype(np.uint32)
        arr = group.create_array("labels", shape=labels.shape, chunks=chunks, dtype=dtype, fill_value=0,
                                 dimension_names=tuple("zyx"[-ndim:]))
        for z0 in range(0, labels.shape[0], step):
            check_stop(should_stop)
            arr[z0:z0 + step] = np.asarray(labels[z0:z0 + step]).astype(dtype, copy=False)
            if progress is not None:
                progress(min(z0 + step, labels.shape[0]), labels.shape[0], "writing the labels")
        write_ome_labels(tmp, voxel_size=voxel_size, class_names=class_names, name=path.stem,
                         data=labels if isinstance(labels, np.ndarray) else None,
                         progress=progress, should_stop=should_stop, list_in_image=False)
    if image is not None:
        _list_in_image(path.parent, path.name)
    return path
