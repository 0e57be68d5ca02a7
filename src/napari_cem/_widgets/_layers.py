"""One rule each for what the widgets read from napari layers: the image choices, a layer's
full-resolution data, its voxel size and units, and the slice on screen.

Written once here so that every widget agrees (the Fine-tune preview once predicted the xy
slice while the viewer showed an xz plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_PLANES = {(1, 2): "xy", (0, 2): "xz", (0, 1): "yz"}  # displayed data axes -> plane
SLICE_AXIS = {"xy": 0, "xz": 1, "yz": 2}  # the data axis a plane cuts across


def image_choices(viewer) -> list[tuple[str, object]]:
    """(name, layer) of every grey 2D or 3D Image layer: what the widgets can work on."""
    from napari.layers import Image

    return [(layer.name, layer) for layer in viewer.layers
            if isinstance(layer, Image) and not layer.rgb and layer.ndim in (2, 3)]


def layers_of(viewer, kind) -> list[tuple[str, object]]:
    """(name, layer) of every layer of type *kind* (Labels, Shapes, ...)."""
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]


def full_data(layer):
    """The layer's data at full resolution (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def has_units(layer) -> bool:
    """A layer's scale means nm only when napari-cem or the user gave it units (not the
    default pixel scale of 1)."""
    return _scale_has_units(layer.scale, getattr(layer, "units", ()))


def _scale_has_units(scale, units) -> bool:
    units = [str(u) for u in units or ()]
    return any(u not in ("pixel", "") for u in units) and not np.allclose(scale, 1)


def voxel_size(layer) -> tuple[float, ...] | None:
    """(z, y, x) nm from napari-cem's metadata, else the layer's scale when it has units."""
    return voxel_size_from(layer.metadata, layer.scale, getattr(layer, "units", ()), layer.ndim)


def voxel_size_from(metadata, scale, units, ndim: int) -> tuple[float, ...] | None:
    """:func:`voxel_size` of a layer given as its parts (a writer gets a layer's attributes,
    not the layer)."""
    meta = metadata.get("napari_cem", {}) if isinstance(metadata, dict) else {}
    voxel = meta.get("voxel_size")
    if voxel is not None and len(voxel) == ndim:
        return tuple(float(v) for v in voxel)
    if scale is not None and _scale_has_units(scale, units):
        return tuple(float(s) for s in scale)
    return None


def units_of(layer) -> dict:
    """The image layer's units, for layers drawn over it (napari warns when they differ)."""
    units = getattr(layer, "units", None)
    return {"units": units} if units is not None else {}


@dataclass(frozen=True)
class ScreenSlice:
    """The 2D slice of a layer that the viewer shows: its plane, its index along the axis the
    plane cuts, and the numpy index of that plane in the layer's data."""

    plane: str  # "xy", "xz" or "yz"
    index: int | None  # None for a 2D layer
    key: tuple  # data[key] is the 2D slice; out[key] = labels writes into a volume

    def describe(self) -> str:
        if self.index is None:
            return "the image"
        axis = "zyx"[SLICE_AXIS[self.plane]]
        return f"{self.plane} slice {axis} = {self.index}"


def slice_on_screen(viewer, layer) -> ScreenSlice | None:
    """The slice of *layer* on screen, honouring which axes are displayed; None in 3D view."""
    if layer.ndim == 2:
        return ScreenSlice("xy", None, (slice(None), slice(None)))
    if viewer.dims.ndisplay != 2:
        return None
    offset = viewer.dims.ndim - layer.ndim
    displayed = tuple(sorted(a - offset for a in viewer.dims.displayed))
    plane = _PLANES.get(displayed)
    if plane is None:
        return None
    axis = SLICE_AXIS[plane]
    shape = full_data(layer).shape
    index = int(round(float(layer.world_to_data(viewer.dims.point[offset:])[axis])))
    index = int(np.clip(index, 0, shape[axis] - 1))
    key = [slice(None)] * 3
    key[axis] = index
    return ScreenSlice(plane, index, tuple(key))


def class_names_of(layer) -> list[str]:
    """The class names a layer's napari-cem metadata carries (a segmentation's "classes", a
    sample's "class_names"), else []."""
    return class_names_from(layer.metadata)


def class_names_from(metadata) -> list[str]:
    """:func:`class_names_of` given a layer's metadata."""
    meta = metadata.get("napari_cem", {}) if isinstance(metadata, dict) else {}
    names = meta.get("classes") or meta.get("class_names") or []
    return [str(n) for n in names]


def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_side(viewer, default: int = 600) -> int:
    """The shorter side of the viewer's canvas in screen pixels (napari has no public call)."""
    try:
        return int(min(viewer.window._qt_viewer.canvas.size))
    except (AttributeError, TypeError, ValueError):
        return default
