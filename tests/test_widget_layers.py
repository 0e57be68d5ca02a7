"""The one rule per layer fact the widgets read (_widgets/_layers.py), each as a table."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes

from napari_cem._widgets._layers import (
    full_data,
    has_units,
    image_choices,
    slice_on_screen,
    units_of,
    voxel_size,
)

VOL = np.zeros((6, 8, 10), np.uint8)


@pytest.mark.parametrize(("layer", "expected"), [
    # napari-cem's own metadata wins (the reader writes it)
    (Image(VOL, scale=(1, 1, 1), metadata={"napari_cem": {"voxel_size": [40, 8, 8]}}), (40.0, 8.0, 8.0)),
    # a scale with physical units means nm
    (Image(VOL, scale=(50, 4.6, 4.6), units=("nm",) * 3), (50.0, 4.6, 4.6)),
    # a scale without units, or the default pixel scale, says nothing
    (Image(VOL, scale=(50, 4.6, 4.6)), None),
    (Image(VOL, units=("nm",) * 3), None),
    (Image(VOL), None),
    # metadata of the wrong length (a 2D voxel size on a volume) is not trusted
    (Image(VOL, metadata={"napari_cem": {"voxel_size": [8, 8]}}), None),
    (Image(VOL[0], scale=(4, 4), units=("nm", "nm")), (4.0, 4.0)),
])
def test_voxel_size(layer, expected):
    got = voxel_size(layer)
    assert got == (pytest.approx(expected) if expected is not None else None)
    assert has_units(layer) == (expected is not None and "napari_cem" not in layer.metadata)


@pytest.mark.parametrize(("layer", "expected"), [
    (Image(VOL, units=("nm",) * 3), ("nanometer",) * 3),
    (Image(VOL), ("pixel",) * 3),
])
def test_units_follow_the_image(layer, expected):
    assert tuple(str(u) for u in units_of(layer)["units"]) == expected


def test_full_data_is_level_zero_of_a_pyramid():
    pyramid = [np.zeros((64, 64), np.uint8), np.zeros((32, 32), np.uint8)]
    assert full_data(Image(pyramid, multiscale=True)).shape == (64, 64)
    assert full_data(Image(VOL)) is not None and full_data(Image(VOL)).shape == VOL.shape


def test_image_choices_are_grey_2d_and_3d_images(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(VOL, name="volume")
    viewer.add_image(VOL[0], name="plane")
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((2, 6, 8, 10), np.uint8), name="4d")
    viewer.add_labels(VOL, name="labels")
    viewer.add_layer(Shapes(name="rois"))
    assert [name for name, _layer in image_choices(viewer)] == ["volume", "plane"]
    assert isinstance(image_choices(viewer)[0][1], Image) and not isinstance(viewer.layers["labels"], Image)
    assert isinstance(viewer.layers["labels"], Labels)


@pytest.mark.parametrize(("order", "point", "plane", "index", "shape"), [
    ((0, 1, 2), (3, 0, 0), "xy", 3, (8, 10)),   # the usual view: z slices
    ((1, 0, 2), (0, 5, 0), "xz", 5, (6, 10)),   # rows z, columns x, at y = 5
    ((2, 0, 1), (0, 0, 7), "yz", 7, (6, 8)),    # rows z, columns y, at x = 7
])
def test_slice_on_screen_honours_the_displayed_axes(make_napari_viewer, order, point, plane, index, shape):
    viewer = make_napari_viewer()
    data = np.arange(np.prod(VOL.shape), dtype=np.int32).reshape(VOL.shape)
    layer = viewer.add_image(data, scale=(2, 1, 1), translate=(0, 0, 0))
    viewer.dims.order = order
    world = np.asarray(layer.data_to_world(point), float)
    viewer.dims.point = tuple(world)
    screen = slice_on_screen(viewer, layer)
    assert (screen.plane, screen.index) == (plane, index)
    assert data[screen.key].shape == shape
    expected = data[{"xy": (index,), "xz": (slice(None), index),
                     "yz": (slice(None), slice(None), index)}[plane]]
    np.testing.assert_array_equal(data[screen.key], expected)
    assert screen.describe() == f"{plane} slice {'zyx'['xy xz yz'.split().index(plane)]} = {index}"


def test_no_slice_in_3d_view_and_the_whole_image_in_2d(make_napari_viewer):
    viewer = make_napari_viewer()
    volume = viewer.add_image(VOL)
    viewer.dims.ndisplay = 3
    assert slice_on_screen(viewer, volume) is None
    viewer.dims.ndisplay = 2
    plane = Image(VOL[0])
    screen = slice_on_screen(viewer, plane)
    assert screen.index is None and VOL[0][screen.key].shape == (8, 10) and screen.describe() == "the image"
