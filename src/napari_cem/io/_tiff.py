"""TIFF, OME-TIFF and ImageJ hyperstacks (tifffile).

The pixel size hides in different places depending on who wrote the file: OME-XML
(PhysicalSize*), ImageJ's description (unit, spacing) with the resolution tags, plain
resolution tags (inch/cm), or microscope vendor tags (FEI/Thermo, Zeiss SEM). We look in
that order. tifffile quietly returns fewer pages for a file that was cut short, so its
warnings are captured and turned into an error: a silently shorter volume is worse.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

from .errors import VolumeError
from .raw import RawVolume
from .units import nm_per_unit, tidy, to_nm

# tifffile log messages that mean the file is damaged or incomplete.
# Only messages that mean pixels were lost, so a valid file with odd tags still opens.
_DAMAGE_HINTS = (
    "invalid page offset",
    "corrupted",
    "failed to reshape",
    "truncated",
)
# Resolutions that are print/screen settings, not a physical pixel size.
_PRINT_DPI = (72, 96, 100, 150, 200, 300, 400, 600, 1200, 2400)


def read_tiff(path: Path, *, level: int = 0, lazy: bool = False) -> RawVolume:
    import tifffile

    with _capture_tifffile_warnings() as messages:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise VolumeError(f"'{path.name}' is a TIFF file without any image in it.")
            series = tif.series[0]
            levels = list(getattr(series, "levels", None) or [series])
            if not 0 <= level < len(levels):
                raise VolumeError(
                    f"level={level} is out of range: '{path.name}' has "
                    + (f"resolution levels 0-{len(levels) - 1}." if len(levels) > 1
                       else "a single resolution level (0).")
                )
            chosen = levels[level]
            axes = chosen.axes
            _check_complete(path, chosen)
            spacing, warnings = _spacing(tif, series)
            if len(tif.series) > 1:
                warnings.append(
                    f"'{path.name}' holds {len(tif.series)} separate images; only the first "
                    f"(shape {' x '.join(str(n) for n in series.shape)}) was loaded."
                )
            if level:
                for a in "YX":
                    if a in spacing and a in series.axes and a in axes:
                        full = series.shape[series.axes.index(a)]
                        part = chosen.shape[axes.index(a)]
                        spacing[a] = tidy(spacing[a] * full / max(1, part))
            fmt = "ome-tiff" if tif.is_ome else "tiff"
            data = None if lazy else chosen.asarray()
        source = None
        if lazy:
            import dask.array as da
            import zarr

            from ._source import SourceView

            store = tifffile.imread(path, aszarr=True, series=0, level=level)
            stored = zarr.open(store, mode="r")
            data, source = da.from_zarr(stored), SourceView(stored)
    damage = [m for m in messages if any(h in m.lower() for h in _DAMAGE_HINTS)]
    if damage:
        raise VolumeError(
            f"'{path.name}' looks damaged or incomplete (for example a copy that was cut "
            f"short while copying); copy the file again from its source. "
            f"(tifffile: {damage[0]})"
        )
    return RawVolume(data=data, axes=axes, format=fmt, spacing=spacing, warnings=warnings,
                     level=level if len(levels) > 1 else None, source=source)


def _check_complete(path: Path, series) -> None:
    """Pixel data must end inside the file; a cut TIFF otherwise reads as zeros or less."""
    size = os.path.getsize(path)
    offset = getattr(series, "dataoffset", None)
    if offset is not None:
        end = int(offset) + int(series.nbytes)
    else:
        end = 0
        for page in series.pages:
            if page is None:
                continue
            offsets = getattr(page, "dataoffsets", ()) or ()
            counts = getattr(page, "databytecounts", ()) or ()
            for o, c in zip(offsets, counts):
                end = max(end, int(o) + int(c))
    if end > size:
        raise VolumeError(
            f"'{path.name}' is incomplete: it should hold {end:,} bytes of image data but "
            f"the file has only {size:,} bytes (it was probably cut short while copying)."
        )


@contextmanager
def _capture_tifffile_warnings():
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler = _Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------------------
# voxel size


def _spacing(tif, series) -> tuple[dict, list]:
    warnings: list[str] = []
    for finder in (_ome_spacing, _imagej_spacing, _vendor_spacing):
        try:
            spacing = finder(tif)
        except Exception:  # metadata is a bonus; a malformed field must not block loading
            spacing = {}
        if spacing:
            return spacing, warnings
    return _tag_spacing(tif.pages[0], warnings), warnings


def _ome_spacing(tif) -> dict:
    if not tif.is_ome or not tif.ome_metadata:
        return {}
    root = ET.fromstring(tif.ome_metadata)
    pixels = next((el for el in root.iter() if el.tag.split("}")[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    spacing = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        nm = to_nm(value, unit)
        if nm is not None:
            spacing[axis] = nm
    return spacing


def _imagej_spacing(tif) -> dict:
    if not tif.is_imagej:
        return {}
    meta = tif.imagej_metadata or {}
    factor = nm_per_unit(meta.get("unit"))
    if factor is None:
        return {}
    page = tif.pages[0]
    spacing = {}
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        per_unit = _rational(page.tags.get(tag))
        if per_unit and per_unit > 0:
            spacing[axis] = tidy(factor / per_unit)
    if meta.get("spacing") is not None:
        nm = to_nm(meta["spacing"], meta.get("unit"))
        if nm is not None:
            spacing["Z"] = nm
    return spacing


def _vendor_spacing(tif) -> dict:
    """Thermo/FEI and Zeiss SEM TIFFs store the pixel size in their own tags."""
    fei = getattr(tif, "fei_metadata", None) if getattr(tif, "is_fei", False) else None
    if fei:
        scan = fei.get("Scan") or fei.get("EScan") or {}
        x, y = to_nm(scan.get("PixelWidth"), "m"), to_nm(scan.get("PixelHeight"), "m")
        if x and y:
            return {"X": x, "Y": y}
    sem = getattr(tif, "sem_metadata", None) if getattr(tif, "is_sem", False) else None
    if sem:
        entry = sem.get("ap_image_pixel_size") or sem.get("ap_pixel_size")
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            nm = to_nm(entry[1], entry[2])
            if nm:
                return {"X": nm, "Y": nm}
    return {}


def _tag_spacing(page, warnings: list) -> dict:
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    unit_name = {2: "inch", 3: "cm", 4: "mm", 5: "um"}.get(unit)
    if unit_name is None:
        return {}
    per_unit = {
        a: _rational(page.tags.get(t)) for a, t in (("X", "XResolution"), ("Y", "YResolution"))
    }
    if not all(v and v > 0 for v in per_unit.values()):
        return {}
    if unit_name == "inch":
        dpi = per_unit["X"]
        if dpi <= 1 or any(abs(dpi - d) < 0.01 for d in _PRINT_DPI):
            if dpi > 1:
                warnings.append(
                    f"The file's resolution ({dpi:g} dpi) is a print setting, not a pixel "
                    "size, so the voxel size is unknown; enter it if you know it."
                )
            return {}
    elif all(v == 1 for v in per_unit.values()):
        return {}
    return {a: tidy(nm_per_unit(unit_name) / v) for a, v in per_unit.items()}


def _rational(tag) -> float | None:
    if tag is None:
        return None
    value = tag.value
    try:
        if isinstance(value, (tuple, list)):
            num, den = value[0], value[1]
            return float(num) / float(den) if den else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
