"""Zarr arrays, groups and OME-Zarr multiscale images, always as lazy dask arrays.

Big EM volumes (FIB-SEM, connectomics) are published as OME-Zarr and are often larger
than memory, so nothing here reads pixels: the dask array is built on the chosen
resolution level and standardisation later works chunk by chunk. Both the v2 layout
(.zattrs, most files in the wild, NGFF <= 0.4) and v3 (zarr.json, NGFF 0.5 with the
"ome" key) are handled by zarr-python 3.
"""

from __future__ import annotations

from pathlib import Path

from .errors import VolumeError
from ._source import SourceView
from .raw import RawVolume
from .units import tidy, to_nm

_AXIS_LETTERS = {"t": "T", "time": "T", "c": "C", "channel": "C", "z": "Z", "y": "Y", "x": "X"}


def read_zarr(path: Path, *, level: int = 0) -> RawVolume:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeError(
            f"'{path.name}' could not be opened as a Zarr store; it may be incomplete or "
            f"not a Zarr folder ({exc})."
        ) from exc
    if _is_array(node):
        return _plain_array(node, path, level)

    multiscales = _multiscales(node)
    if multiscales is None:
        child = _child_group(node, "0")  # bioformats2raw layout: the image sits in "0/"
        if child is not None and _multiscales(child) is not None:
            node, multiscales = child, _multiscales(child)
    if multiscales is not None:
        return _ome(node, multiscales, path, level)

    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        return _plain_array(node[arrays[0]], path, level)
    if not arrays:
        raise VolumeError(f"The Zarr store '{path.name}' contains no image array.")
    listed = ", ".join(arrays[:8]) + (" ..." if len(arrays) > 8 else "")
    raise VolumeError(
        f"The Zarr store '{path.name}' contains several arrays ({listed}) and no OME "
        "multiscale description, so it is unclear which one is the image. Open the array "
        f"folder itself, e.g. '{path / arrays[0]}'."
    )


def _is_array(node) -> bool:
    import zarr

    return isinstance(node, zarr.Array)


def _child_group(node, name):
    try:
        child = node[name]
    except (KeyError, Exception):
        return None
    return None if _is_array(child) else child


def _multiscales(group):
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    source = ome if isinstance(ome, dict) else attrs
    ms = source.get("multiscales")
    if isinstance(ms, list) and ms and isinstance(ms[0], dict) and ms[0].get("datasets"):
        return ms[0]
    return None


def _plain_array(array, path: Path, level: int) -> RawVolume:
    import dask.array as da

    if level:
        raise VolumeError(
            f"level={level} was given, but '{path.name}' is a single-resolution Zarr array "
            "(only level 0 exists)."
        )
    names = _dimension_names(array)
    ndim = array.ndim
    axes = "".join(_AXIS_LETTERS.get(str(n).lower(), "Q") for n in names) if names else ""
    if len(axes) != ndim or "Y" not in axes or "X" not in axes:
        axes = "TCZYX"[-ndim:] if ndim <= 5 else "Q" * (ndim - 5) + "TCZYX"
    return RawVolume(data=da.from_zarr(array), axes=axes, format="zarr", level=None,
                     source=SourceView(array))


def _dimension_names(array):
    names = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if names and all(names):
        return list(names)
    dims = dict(array.attrs).get("_ARRAY_DIMENSIONS")  # xarray's convention for v2
    return list(dims) if isinstance(dims, list) else None


def _ome(group, ms: dict, path: Path, level: int) -> RawVolume:
    import dask.array as da

    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise VolumeError(
            f"level={level} is out of range: this OME-Zarr has resolution levels "
            f"0-{len(datasets) - 1} (0 is full resolution)."
        )
    dataset = datasets[level]
    try:
        array = group[dataset["path"]]
    except Exception as exc:
        raise VolumeError(
            f"The OME-Zarr '{path.name}' lists resolution level {level} at "
            f"'{dataset.get('path')}', but that array is missing; the copy may be incomplete."
        ) from exc
    ndim = array.ndim
    axes, units = _ome_axes(ms.get("axes"), ndim)
    scale = _scale(dataset.get("coordinateTransformations"), ndim)
    top = _scale(ms.get("coordinateTransformations"), ndim)
    if scale is not None and top is not None:
        scale = [a * b for a, b in zip(scale, top)]
    elif scale is None:
        scale = top
    spacing, warnings = {}, []
    if scale is not None:
        unitless = []
        for letter, unit, value in zip(axes, units, scale):
            if letter not in "ZYX":
                continue
            nm = to_nm(value, unit) if unit else None
            if nm is not None:
                spacing[letter] = nm
            elif not unit and float(value) != 1.0:
                unitless.append(f"{letter.lower()} {tidy(value):g}")
        if unitless:
            warnings.append(
                "The OME-Zarr gives a voxel scale (" + ", ".join(unitless) + ") without a "
                "unit, so the voxel size in nm is unknown; enter it if you know it."
            )
    data = da.from_zarr(array)
    return RawVolume(data=data, axes=axes, format="ome-zarr", spacing=spacing,
                     warnings=warnings, level=level, source=SourceView(array))


def _ome_axes(axes, ndim):
    """Axis letters and units; NGFF < 0.3 had no axes and meant t, c, z, y, x."""
    if not axes:
        return "TCZYX"[-ndim:], [None] * ndim
    letters, units = [], []
    for ax in axes:
        if isinstance(ax, dict):
            name = str(ax.get("name", "")).lower()
            kind = str(ax.get("type", "")).lower()
            letter = _AXIS_LETTERS.get(name) or {"time": "T", "channel": "C"}.get(kind, "Q")
            letters.append(letter)
            units.append(ax.get("unit"))
        else:
            letters.append(_AXIS_LETTERS.get(str(ax).lower(), "Q"))
            units.append(None)
    if len(letters) != ndim:
        return "TCZYX"[-ndim:], [None] * ndim
    return "".join(letters), units


def _scale(transforms, ndim):
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            values = [float(v) for v in t["scale"]]
            if len(values) == ndim:
                return values
    return None
