"""What a format reader hands back before axes are chosen and values standardised.

Keeping readers this dumb (pixels, axis letters, spacing per axis) is what lets one
piece of code (``axes.py``) deal with channels, time points and squeezing for all formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawVolume:
    """Pixels as stored, one axis letter per dimension.

    Letters: T time, C channel, Z, Y, X, S colour samples (RGB/RGBA, last); anything else
    (tifffile's Q, I, ...) is a generic axis that becomes Z when there is no Z.
    ``spacing`` maps axis letters to nm for the axes whose size the file states.
    ``rgb`` says what to do with an S axis when no channel is chosen: "luminance" or
    "first" (videos, whose grey frames are stored as RGB). ``source`` is a ``SourceView``
    of the same pixels for chunked stores (Zarr, lazy TIFF): the few reads that describe a
    lazy volume go through it instead of dask (see ``_source.py``).
    """

    data: Any
    axes: str
    format: str
    spacing: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    level: int | None = None
    rgb: str = "luminance"
    source: Any = None
