"""napari writer contribution: File > Save Selected Layers of a Labels layer to ``NAME.zarr``
writes an OME-Zarr label image (pyramid, class names and colours, voxel size in nm)."""

from __future__ import annotations


def write_ome_zarr_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: returns the path written."""
    from ._widgets._layers import class_names_from, voxel_size_from
    from .ome_labels import save_ome_labels

    data = data[0] if isinstance(data, list) else data  # a multiscale layer: its full resolution
    voxel = voxel_size_from(attributes.get("metadata"), attributes.get("scale"), attributes.get("units"),
                            len(data.shape))
    names = class_names_from(attributes.get("metadata"))
    return [str(save_ome_labels(path, data, voxel_size=voxel, class_names=names))]
