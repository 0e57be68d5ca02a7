"""Reading EM data: every supported format to grey zyx uint8 with its voxel size.

The public API lives here; the format readers import their libraries (tifffile,
mrcfile, nibabel, zarr, imageio) only when a file of that kind is opened, so importing
this package stays cheap inside napari.
"""

from .errors import VolumeError
from .formats import SUPPORTED_SUFFIXES, detect_format
from .meta import VolumeMeta
from .read import read_volume
from .standardize import looks_inverted, standardize

__all__ = [
    "SUPPORTED_SUFFIXES",
    "VolumeError",
    "VolumeMeta",
    "detect_format",
    "looks_inverted",
    "read_volume",
    "standardize",
]
