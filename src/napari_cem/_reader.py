"""napari reader contribution for the EM formats napari does not open well itself.

MRC/REC, NIfTI, video, OME-Zarr and folders of 2D images become one Image layer whose
``scale`` is the voxel size (nm) and whose metadata keeps where the data came from; an
OME-Zarr label image (``segment --ome-zarr``) becomes a Labels layer.
"""

from __future__ import annotations

from pathlib import Path

def _is_image_folder(path: Path) -> bool:
    from .io._listing import IMAGE_SUFFIXES, is_hidden_or_system

    return any(p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_or_system(p.name) for p in path.iterdir())


def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup", ".zattrs"))


def get_reader(path):
    """Return a reader function if *path* is something we open, else None (napari tries others)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        if not (_is_zarr(p) or p.suffix.lower() == ".zarr" or _is_image_folder(p)):
            return None
    else:
        from .io import SUPPORTED_SUFFIXES

        name = p.name.lower()
        if not any(name.endswith(s) for s in SUPPORTED_SUFFIXES):
            return None
    return read_layer_data


def layer_data_from_volume(data, meta) -> tuple:
    """Turn ``read_volume``'s output into napari LayerData (also used by the Load widget)."""
    kwargs = {
        "name": meta.source,
        "scale": tuple(meta.scale),
        "metadata": {"napari_cem": meta.to_dict()},
    }
    if str(data.dtype) == "uint8":
        kwargs["contrast_limits"] = (0, 255)
    if meta.voxel_size is not None:
        kwargs["units"] = ("nm",) * data.ndim
    return (data, kwargs, "image")


#: The Load EM volume widget's fields, as an axis-choice message names them.
WIDGET_OPTION_NAMES = {"channel": "Channel ", "timepoint": "Time point "}
_READER_OPTION_NAMES = {k: f"{v.strip()} (Plugins > napari-cem > Load EM volume) "
                        for k, v in WIDGET_OPTION_NAMES.items()}


def read_layer_data(path):
    from .io import VolumeError, read_volume
    from .ome_labels import is_ome_labels

    if isinstance(path, (list, tuple)):
        path = path[0]
    if Path(path).is_dir() and is_ome_labels(path):
        return [_labels_layer_data(path)]
    try:
        data, meta = read_volume(path)
    except VolumeError as exc:  # File > Open has no channel field: point to the widget's
        raise VolumeError(exc.message(_READER_OPTION_NAMES)) from None
    for message in meta.warnings:
        _notify_warning(message)
    return [layer_data_from_volume(data, meta)]


def _labels_layer_data(path) -> tuple:
    """An OME-Zarr label image (``segment --ome-zarr``, or another tool's) as a multiscale
    Labels layer with its voxel size and class names."""
    from .ome_labels import read_ome_labels

    levels, scale, names = read_ome_labels(path)
    kwargs = {"name": Path(path).name, "multiscale": len(levels) > 1,
              "metadata": {"napari_cem": {"classes": names, "source": str(path), "voxel_size":
                                          list(scale) if scale else None}}}
    if scale is not None:
        kwargs.update(scale=scale, units=("nm",) * len(scale))
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")


def _notify_warning(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # core use without napari
        import warnings

        warnings.warn(message, stacklevel=3)
        return
    show_warning(message)
