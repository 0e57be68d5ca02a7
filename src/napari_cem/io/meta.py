"""What we know about a loaded volume, kept next to the pixels.

The same record travels into napari layer metadata (``to_dict``), into patch provenance
and into the CLI's reports, so everything in it is plain data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class VolumeMeta:
    """Provenance and calibration of one array returned by ``read_volume``.

    ``value_range`` is the (min, max) of the original values; for lazy (Zarr) data it is
    estimated from the sampled chunks only, which ``value_range_exact`` says.
    ``voxel_size`` is in nm, (z, y, x) for a volume and (y, x) for a 2D image, or None
    when the file does not say.
    """

    source: str
    path: str
    format: str
    shape: tuple
    axes: str
    original_dtype: str
    dtype: str
    voxel_size: tuple | None = None
    voxel_size_from: str = "unknown"  # "file", "user" or "unknown"
    value_range: tuple | None = None
    value_range_exact: bool = True
    standardize_mode: str = "percentile"
    percentiles: tuple | None = (0.5, 99.5)
    window: tuple | None = None  # original values mapped to 0 and 255
    inverted: bool = False
    likely_inverted: bool = False
    warnings: list = field(default_factory=list)
    lazy: bool = False
    level: int | None = None
    channel: int | None = None
    timepoint: int | None = None

    @property
    def scale(self) -> tuple:
        """Voxel size per array axis for napari's ``scale``; 1.0s when the file has none."""
        if self.voxel_size is not None and len(self.voxel_size) == len(self.shape):
            return tuple(float(v) for v in self.voxel_size)
        return (1.0,) * len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def to_dict(self) -> dict:
        """JSON-able copy (tuples become lists) for layer metadata and sidecar files."""
        return _jsonable(asdict(self))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return value.item()
    return value
