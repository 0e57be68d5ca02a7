"""NIfTI (.nii, .nii.gz) via nibabel.

NIfTI stores x fastest-varying as the *first* index (x, y, z, t), the reverse of the
z, y, x order everything else uses; axes.py reorders. Units come from the header's
xyzt_units; the NIfTI default (unknown) is read as millimetres, except for the untouched
default header (all zooms 1), which means the writer never set a voxel size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import VolumeError
from .raw import RawVolume
from .units import to_nm

_UNIT_NAMES = {"mm": "mm", "micron": "um", "meter": "m", "unknown": "mm"}


def read_nifti(path: Path) -> RawVolume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several unrelated types for bad files
        raise VolumeError(
            f"'{path.name}' could not be opened as a NIfTI file; it may be damaged or "
            f"incomplete ({exc})."
        ) from exc
    data = np.asanyarray(img.dataobj)
    if data.ndim > 5:
        raise VolumeError(f"'{path.name}' has {data.ndim} dimensions; napari-cem reads up to 5.")
    axes = "XYZTC"[: data.ndim]
    header = img.header
    spacing = {}
    warnings = []
    try:
        zooms = [float(z) for z in header.get_zooms()[: min(3, data.ndim)]]
        space_unit = header.get_xyzt_units()[0]
    except Exception:
        zooms, space_unit = [], "unknown"
    default_header = space_unit == "unknown" and all(z == 1.0 for z in zooms)
    unit = _UNIT_NAMES.get(space_unit)
    if zooms and not default_header and unit is not None:
        for axis, zoom in zip("XYZ", zooms):
            nm = to_nm(zoom, unit)
            if nm is not None:
                spacing[axis] = nm
        if space_unit == "unknown":
            warnings.append(
                "The NIfTI header does not say in which unit the voxel size is given; "
                "it was read as millimetres (the NIfTI convention). Check the voxel size."
            )
    return RawVolume(data=data, axes=axes, format="nifti", spacing=spacing, warnings=warnings)
