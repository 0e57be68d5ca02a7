"""napari writer contribution: File > Save Selected Layers of a Labels layer to ``NAME.zarr``
writes an OME-Zarr label image (pyramid, class names and colours, voxel size in nm)."""

from __future__ import annotations


def write_ome_zarr_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: returns the path written."""
    from .ome_labels import save_ome_labels

    meta = (attributes.get("metadata") or {}).get("napari_cem", {}) or {}
    scale = attributes.get("scale")
    units = [str(u) for u in (attributes.get("units") or ())]
    voxel = meta.get("voxel_size")
    if voxel is None and scale is not None and units and all(u in ("nm", "nanometer") for u in units):
        voxel = [float(s) for s in scale]
    names = meta.get("classes") or meta.get("class_names") or []
    data = data[0] if isinstance(data, list) else data  # a multiscale layer: its full resolution
    return [str(save_ome_labels(path, data, voxel_size=voxel, class_names=names))]
