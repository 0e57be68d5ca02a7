"""``read_volume``: any EM file or folder in, grey uint8 zyx (or yx) and its metadata out.

This is the single door through which the widgets, the napari reader and the CLI load
data, so every format ends up with the same axes, the same standardisation and the same
plain-language errors (VolumeError) instead of a library traceback.
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path

import numpy as np

from .axes import select_axes
from .errors import VolumeError
from .formats import FORMAT_LABELS, detect_format, read_raw, source_name
from .meta import VolumeMeta
from .standardize import (
    _check_mode,
    _convert_block,
    _check_percentiles,
    _decide,
    _windows,
    is_dask,
    rgb_to_gray,
    standardize,
)


def read_volume(
    path,
    *,
    standardize_mode: str = "percentile",
    percentiles=(0.5, 99.5),
    invert: bool = False,
    voxel_size=None,
    channel: int | None = None,
    timepoint: int | None = None,
    level: int = 0,
    lazy: bool | None = None,
):
    """Read *path* (file, folder of 2D images, glob pattern or Zarr) as ``(array, VolumeMeta)``.

    The array is uint8 unless ``standardize_mode="none"``; zyx for a volume, yx for a
    single image. Zarr/OME-Zarr come back as dask arrays (``lazy=None``); ``lazy=True``
    makes every format lazy, ``lazy=False`` loads Zarr too. ``voxel_size`` (z, y, x) in
    nm overrides the file's. ``channel``/``timepoint`` pick one index of a C/T axis.
    Raises VolumeError, with a message meant for the user, for anything unreadable.
    """
    mode = _check_mode(standardize_mode)
    low_p, high_p = _check_percentiles(percentiles)
    level = _check_level(level)
    if path is None or str(path).strip() == "":
        raise VolumeError("No file or folder was chosen.")
    path = Path(os.path.expanduser(os.fspath(path)))
    fmt = detect_format(path)
    label = FORMAT_LABELS.get(fmt, fmt)
    try:
        raw = read_raw(path, fmt, level=level, lazy=lazy)
        return _finish(path, raw, mode, (low_p, high_p), bool(invert), voxel_size,
                       channel, timepoint, lazy)
    except VolumeError:
        raise
    except MemoryError as exc:
        raise VolumeError(
            f"'{path.name}' is too large to load into memory. Open it lazily instead "
            "(lazy=True), or convert it to OME-Zarr."
        ) from exc
    except Exception as exc:
        raise VolumeError(
            f"Could not read '{path.name}' as {label}: the file seems damaged or incomplete "
            f"(for example cut short while copying). Details: {type(exc).__name__}: {exc}"
        ) from exc


def _finish(path, raw, mode, percentiles, invert, voxel_size, channel, timepoint, lazy):
    data, axes, notes = select_axes(raw.data, raw.axes, channel=channel, timepoint=timepoint)
    warnings = list(raw.warnings) + notes
    original_dtype = str(data.dtype)
    source = None
    if raw.source is not None and not axes.endswith("S"):
        source, _axes, _notes = select_axes(raw.source, raw.axes, channel=channel, timepoint=timepoint)
    if axes.endswith("S"):
        n = data.shape[-1]
        if raw.rgb == "first" or n == 2:  # video, or grey + alpha
            data = data[..., 0]
        elif n in (3, 4):
            data = rgb_to_gray(data)
            warnings.append("The image is in colour; it was converted to grey levels.")
        else:
            raise VolumeError(
                f"The image has {n} colour samples per pixel; choose one with {{channel}}C, "
                f"C in 0-{n - 1}."
            )
        axes = axes[:-1]
    _check_size(data.shape, axes)

    want_lazy = is_dask(data) if lazy is None else bool(lazy)
    if want_lazy and not is_dask(data):
        import dask.array as da

        from ._source import SourceView

        source = SourceView(data)  # in memory already: the sample reads it directly
        data = da.from_array(data, chunks="auto")
    out, info = standardize(data, mode, percentiles, invert, rgb=False, source=source)
    warnings.extend(info["warnings"])
    if not want_lazy:
        if is_dask(out):
            out = out.compute()
        if _file_backed(out):
            out = np.array(out)  # never hand out a view of a memory-mapped file
        elif not out.flags.c_contiguous:
            out = np.ascontiguousarray(out)

    spatial = axes
    voxel, voxel_from = _voxel_size(voxel_size, raw.spacing, spatial, warnings)
    meta = VolumeMeta(
        source=source_name(path),
        path=str(path),
        format=raw.format,
        shape=tuple(int(n) for n in out.shape),
        axes=spatial.lower(),
        original_dtype=original_dtype,
        dtype=str(out.dtype),
        voxel_size=voxel,
        voxel_size_from=voxel_from,
        value_range=tuple(float(v) for v in info["value_range"]),
        value_range_exact=bool(info["value_range_exact"]),
        standardize_mode=mode,
        percentiles=info["percentiles"],
        window=info["window"],
        inverted=invert,
        likely_inverted=_likely_inverted(out, invert, source, info),
        warnings=warnings,
        lazy=is_dask(out),
        level=raw.level,
        channel=channel,
        timepoint=timepoint,
    )
    return out, meta


def _check_level(level) -> int:
    try:
        value = int(level if level is not None else 0)
    except (TypeError, ValueError):
        raise VolumeError(
            f"level must be a whole number (0 = full resolution), got {level!r}."
        ) from None
    if value < 0:
        raise VolumeError(f"level must be 0 or more (0 = full resolution), got {value}.")
    return value


def _check_size(shape, axes) -> None:
    if any(n == 0 for n in shape):
        raise VolumeError(
            "The image is empty (one of its sizes is 0: "
            + " x ".join(str(n) for n in shape) + "); there is nothing to load."
        )
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    if h < 2 or w < 2:
        raise VolumeError(
            f"The image is too small ({w} x {h} pixels) to be an EM image; it needs at "
            "least 2 x 2 pixels."
        )


def _voxel_size(override, spacing: dict, axes: str, warnings: list):
    ndim = len(axes)
    if override is not None:
        try:
            if np.isscalar(override):
                values = [float(override)] * ndim
            else:
                values = [float(v) for v in override]
        except (TypeError, ValueError):
            raise VolumeError(
                f"The voxel size must be numbers in nm, (z, y, x); got {override!r}."
            ) from None
        if len(values) == 3 and ndim == 2:
            values = values[1:]
        if len(values) != ndim:
            raise VolumeError(
                f"The voxel size needs {ndim} numbers ({', '.join(axes.lower())}) in nm for "
                f"this {'volume' if ndim == 3 else 'image'}; got {len(values)}."
            )
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise VolumeError(f"The voxel size must be positive numbers in nm; got {override!r}.")
        return tuple(values), "user"
    if spacing and all(a in spacing for a in axes):
        return tuple(float(spacing[a]) for a in axes), "file"
    known = [a for a in axes if a in spacing]
    if known:
        stated = " x ".join(f"{spacing[a]:g}" for a in known)
        missing = ", ".join(a.lower() for a in axes if a not in spacing)
        warnings.append(
            f"The file gives the pixel size in {', '.join(a.lower() for a in known)} "
            f"({stated} nm) but not in {missing}; the voxel size is left unknown. Enter "
            "all of it (z, y, x in nm) if you know it."
        )
    return None, "unknown"


def _likely_inverted(out, inverted: bool, source=None, info=None) -> bool:
    """Judge the data as stored (before our own inversion); never let the guess fail a load.

    With a *source* (a chunked store) the windows are read from it and standardised here,
    so that a huge lazy volume costs three small reads, not a walk over its dask graph.
    """
    try:
        if source is not None and is_dask(out):
            windows = _windows(source, max_side=512)
            if info["window"] is not None:
                lo, hi = info["window"]
                windows = [_convert_block(w, mode=info["mode"], lo=lo, hi=hi, invert=False)
                           for w in windows]
            return bool(_decide(windows))
        windows = _windows(out)
        if inverted:
            windows = [-np.asarray(w, dtype=np.float32) for w in windows]
        return bool(_decide(windows))
    except Exception:
        return False


def _file_backed(arr) -> bool:
    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False
