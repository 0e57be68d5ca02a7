"""MRC/REC and the other IMOD/cryo-EM names for it (mrcfile, permissive).

Opened as a read-only memory map, so a tomogram larger than RAM can still be
standardised slab by slab. IMOD writes unsigned bytes as MRC mode 0 and says so in its
header flags; mrcfile always returns int8, which would wrap bright pixels to negative,
so we honour IMOD's flag.
"""

from __future__ import annotations

import os
import warnings as _warnings
from pathlib import Path

import numpy as np

from .errors import VolumeError
from .raw import RawVolume
from .units import to_nm

_IMOD_STAMP = 1146047817  # b"IMOD" read as an int32


def read_mrc(path: Path) -> RawVolume:
    import mrcfile

    if os.path.getsize(path) < 1024:
        raise VolumeError(
            f"'{path.name}' is too short to be an MRC file (it has no complete header); "
            "it may be damaged or incomplete."
        )
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        mrc = mrcfile.mmap(path, mode="r", permissive=True)
    try:
        data = mrc.data
        if data is None or data.size == 0 and mrc.header.nx * mrc.header.ny > 0:
            detail = "; ".join(str(w.message) for w in caught) or "no image data found"
            raise VolumeError(
                f"'{path.name}' is damaged or incomplete (for example cut short while "
                f"copying): {detail}."
            )
        voxel = mrc.voxel_size  # Å, (x, y, z)
        spacing = {}
        for axis, value in (("X", voxel.x), ("Y", voxel.y), ("Z", voxel.z)):
            nm = to_nm(value, "angstrom")
            if nm is not None:
                spacing[axis] = nm
        if data.dtype == np.int8 and _imod_unsigned_bytes(path):
            data = data.view(np.uint8)
        axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim)
        if axes is None:
            raise VolumeError(f"'{path.name}' holds {data.ndim}-dimensional data, not an image.")
    except BaseException:
        mrc.close()
        raise
    # The memory map stays valid after the file object is closed.
    mrc.close()
    return RawVolume(data=data, axes=axes, format="mrc", spacing=spacing)


def _imod_unsigned_bytes(path: Path) -> bool:
    """IMOD's stamp present and its 'signed bytes' flag clear means bytes are unsigned."""
    with open(path, "rb") as fh:
        head = fh.read(160)
    for order in ("<", ">"):
        stamp, flags = np.frombuffer(head[152:160], dtype=f"{order}i4")
        if stamp == _IMOD_STAMP:
            return not (int(flags) & 1)
    return False
