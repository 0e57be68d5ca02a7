"""Per-object measurements on a hand-made label volume: units, positions, intensities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cem.measurements import measure_objects, table_csv


def test_box_in_nm_and_px():
    labels = np.zeros((4, 10, 10), np.uint16)
    labels[1:3, 2:4, 2:7] = 5  # 2 x 2 x 5 = 20 voxels
    image = np.full(labels.shape, 7, np.uint8)
    image[1, 2, 2] = 1
    cols = measure_objects(labels, image=image, voxel_size=(40, 8, 8), object_class=[0, 0, 0, 0, 0, 2],
                           class_names=["bg", "a", "mito"])
    assert cols["label"].tolist() == [5] and cols["class"].tolist() == ["mito"]
    assert cols["voxels"][0] == 20 and cols["volume_nm3"][0] == pytest.approx(20 * 40 * 64)
    assert cols["equivalent_diameter_nm"][0] == pytest.approx((6 * 20 * 2560 / math.pi) ** (1 / 3))
    assert cols["centroid_z_nm"][0] == pytest.approx(1.5 * 40) and cols["centroid_x_nm"][0] == pytest.approx(4 * 8)
    assert (cols["first_slice"][0], cols["last_slice"][0], cols["slices"][0]) == (1, 2, 2)
    assert cols["bbox_x0_nm"][0] == 16 and cols["bbox_x1_nm"][0] == 56
    assert cols["intensity_min"][0] == 1 and cols["intensity_max"][0] == 7
    assert cols["intensity_mean"][0] == pytest.approx((19 * 7 + 1) / 20)
    # a 2 x 2 x 5 box of 40 x 8 x 8 nm voxels: marching cubes cuts its corners, so a bit under
    # the box's 2 * (80 * 16 + 80 * 40 + 16 * 40) nm^2
    box_area = 2 * (80 * 16 + 80 * 40 + 16 * 40)
    assert 0.6 * box_area < cols["surface_area_nm2"][0] < box_area
    px = measure_objects(labels)
    assert "volume_px3" in px and px["volume_px3"][0] == 20 and "class" not in px


def test_2d_area_and_csv():
    labels = np.zeros((6, 6), np.uint8)
    labels[0:2, 0:3] = 1
    labels[4, 4] = 2
    cols = measure_objects(labels)
    assert cols["area_px2"].tolist() == [6, 1] and "first_slice" not in cols
    assert cols["solidity"].tolist() == [1.0, 1.0]
    text = table_csv(cols)
    assert text.splitlines()[0].startswith("label,voxels,area_px2") and len(text.splitlines()) == 3


def test_empty_and_bad_shapes():
    cols = measure_objects(np.zeros((2, 3, 3), np.uint8))
    assert len(cols["label"]) == 0 and table_csv(cols).count("\n") == 1
    with pytest.raises(ValueError, match="differ in shape"):
        measure_objects(np.ones((2, 3, 3), np.uint8), image=np.ones((2, 3, 4)))
