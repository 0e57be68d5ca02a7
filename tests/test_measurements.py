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


def test_slab_by_slab_equals_in_memory(tmp_path):
    import zarr

    from napari_cem.measurements import measure_objects_in_slabs

    rng = np.random.default_rng(3)
    labels = np.zeros((23, 40, 50), np.uint32)
    for i in range(1, 30):  # boxes crossing the 4-slice slab borders
        z, y, x = rng.integers(0, 20), rng.integers(0, 34), rng.integers(0, 44)
        labels[z:z + rng.integers(1, 9), y:y + 6, x:x + 6] = i
    labels[labels == 7] = 0  # an id with no voxels
    labels[1:21, 34:38, 0:4] = 30  # taller than two slabs: its surface is read slab by slab
    image = rng.integers(0, 255, labels.shape).astype(np.uint8)
    store = zarr.open_array(tmp_path / "l.zarr", mode="w", shape=labels.shape, chunks=(4, 40, 50), dtype=np.uint32)
    store[...] = labels
    kwargs = dict(voxel_size=(40, 8, 8), object_class=np.ones(31, np.int64), class_names=["bg", "mito"])
    want = measure_objects(labels, image=image, **kwargs)
    seen = []
    got = measure_objects_in_slabs(store, image=image, slab=4, progress=lambda d, t, s: seen.append(d), **kwargs)
    assert list(got) == list(want) and 7 not in got["label"]
    for key in want:
        if want[key].dtype == object:
            assert list(got[key]) == list(want[key])
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-9, err_msg=key)
    assert seen[-1] == 23


def test_surface_read_slab_by_slab_adds_up():
    from napari_cem.measurements import _surface, _surface_in_slabs

    rng = np.random.default_rng(0)
    labels = np.zeros((30, 20, 20), np.uint16)
    labels[2:27, 3:17, 3:17] = (rng.random((25, 14, 14)) > 0.3) * 4
    box = (slice(2, 27), slice(3, 17), slice(3, 17))
    whole = _surface(labels[box] == 4, (40.0, 8.0, 8.0))
    for step in (1, 3, 7, 100):
        part = _surface_in_slabs(lambda b: labels[b], box, 4, (40.0, 8.0, 8.0), step)
        assert part == pytest.approx(whole, rel=1e-9), step
