"""Instance labels: connectivity, classes, split, size, ids and dtype; the slab-by-slab
labelling equals the in-memory one; bad input gets a plain message."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem import instances
from napari_cem.instances import find_instances, resolve_connectivity
from napari_cem.instances_slabs import find_instances_in_slabs, open_instances


def _two_blobs():
    vol = np.zeros((6, 20, 20), np.uint8)
    vol[1:3, 2:6, 2:6] = 1
    vol[3:5, 6:10, 6:10] = 1  # touches the first only through a corner in z
    vol[1:5, 12:18, 12:18] = 2
    return vol


def test_connectivity_faces_and_full():
    vol = _two_blobs()
    assert find_instances(vol, value=1, connectivity="faces").count == 2
    assert find_instances(vol, value=1, connectivity="full").count == 1


def test_auto_connectivity_follows_the_voxel_size():
    assert resolve_connectivity("auto", "3d", (8, 8, 8))[0] == 26
    assert resolve_connectivity("auto", "3d", (45, 4.6, 4.6))[0] == 6
    assert resolve_connectivity("auto", "3d", None)[0] == 6
    assert resolve_connectivity("auto", "2d", None)[0] == 8


def test_classes_stay_apart_and_are_recorded():
    vol = _two_blobs()
    vol[1:3, 6:12, 2:6] = 2  # class 2 touching class 1: never joined
    r = find_instances(vol, connectivity="full", class_names=["bg", "a", "b"])
    assert r.count == 3
    assert sorted(r.object_class[1:].tolist()) == [1, 2, 2]
    assert set(np.unique(r.labels[vol == 0])) == {0}


def test_ids_in_raster_order_and_smallest_dtype():
    vol = np.zeros((1, 10, 10), np.uint8)
    vol[0, 8, 8] = vol[0, 0, 5] = vol[0, 3, 1] = 1
    r = find_instances(vol, mode="2d")
    assert r.labels[0, 0, 5] == 1 and r.labels[0, 3, 1] == 2 and r.labels[0, 8, 8] == 3
    assert r.labels.dtype == np.uint16


def test_min_size_in_nm_and_voxels():
    vol = np.zeros((4, 20, 20), np.uint8)
    vol[0:2, 0:2, 0:2] = 1  # 8 voxels
    vol[0:4, 10:15, 10:15] = 1  # 100 voxels
    assert find_instances(vol, min_size=9).count == 1
    r = find_instances(vol, min_size=8 * 1000 + 1, unit="nm", voxel_size=(10, 10, 10))
    assert r.count == 1 and r.info["removed"] == 1
    with pytest.raises(ValueError, match="voxel size"):
        find_instances(vol, min_size=5, unit="nm")


def test_split_cuts_two_touching_balls():
    z, y, x = np.mgrid[:20, :20, :40]
    ball = lambda cx: (z - 10) ** 2 + (y - 10) ** 2 + (x - cx) ** 2 <= 64  # noqa: E731
    vol = (ball(11) | ball(26)).astype(np.uint8)
    assert find_instances(vol).count == 1
    r = find_instances(vol, split=True, split_depth=2)
    assert r.count == 2
    assert (r.labels > 0).sum() == vol.sum()  # no voxel lost by the watershed


def test_probabilities_thresholded_float_and_uint8():
    p = np.zeros((3, 8, 8), np.float32)
    p[1, 2:5, 2:5] = 0.8
    assert find_instances(p).count == 1
    assert find_instances(p, threshold=0.9).count == 0
    assert find_instances((p * 255).astype(np.uint8), kind="probabilities").count == 1


def test_bad_input_messages():
    with pytest.raises(ValueError, match="between 0 and 1"):
        find_instances(np.full((2, 4, 4), 3.0))
    with pytest.raises(ValueError, match="background"):
        find_instances(np.ones((2, 4, 4), np.uint8), value=0)
    with pytest.raises(ValueError, match="2D image or a 3D"):
        find_instances(np.ones((4,), np.uint8))
    empty = find_instances(np.zeros((2, 4, 4), np.uint8), value=1, class_names=["bg", "mito"])
    assert empty.count == 0 and "No objects" in empty.describe()


def test_too_many_objects_refused(monkeypatch):
    monkeypatch.setattr(instances, "MAX_OBJECTS", 2)
    vol = np.zeros((1, 9, 9), np.uint8)
    vol[0, ::3, ::3] = 1
    with pytest.raises(ValueError, match="more than instance labels can hold"):
        find_instances(vol, mode="2d")


def test_a_2d_image_is_labelled_in_2d():
    img = np.zeros((10, 10), np.uint8)
    img[1:3, 1:3] = img[6:9, 6:9] = 1
    r = find_instances(img)
    assert r.count == 2 and r.labels.shape == img.shape and r.info["mode"] == "2d"


@pytest.mark.parametrize("options", [dict(value=2), dict(), dict(connectivity="full", min_size=40),
                                     dict(mode="2d", min_size=5), dict(mode="2d", split=True, split_depth=1)])
@pytest.mark.parametrize("slab", [1, 3, 7])
def test_slabs_equal_in_memory(tmp_path, options, slab):
    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((12, 128, 128), isotropic=False, seed=0)
    a = find_instances(vol.labels, voxel_size=vol.voxel_size, **options)
    b = find_instances_in_slabs(vol.labels, tmp_path / "o.zarr", slab=slab, voxel_size=vol.voxel_size, **options)
    assert b.count == a.count > 0
    np.testing.assert_array_equal(np.asarray(b.labels[:]), a.labels)
    assert b.labels.dtype == a.labels.dtype
    np.testing.assert_array_equal(b.object_class, a.object_class)


def test_object_across_a_slab_border(tmp_path):
    vol = np.zeros((6, 10, 10), np.uint8)
    vol[1:5, 4:6, 4:6] = 1  # crosses the border at z = 3
    vol[2, 0, 0] = vol[3, 1, 1] = 1  # joined only through a corner: 26- not 6-connected
    for conn, n in (("full", 2), ("faces", 3)):
        a = find_instances(vol, connectivity=conn)
        b = find_instances_in_slabs(vol, tmp_path / f"{conn}.zarr", slab=3, connectivity=conn)
        assert a.count == b.count == n
        np.testing.assert_array_equal(np.asarray(b.labels[:]), a.labels)


def test_slabs_cancel_leaves_nothing(tmp_path):
    from napari_cem._cancel import Cancelled

    vol = np.ones((6, 8, 8), np.uint8)
    out = tmp_path / "o.zarr"
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        find_instances_in_slabs(vol, out, slab=1, should_stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_slabs_refuse_3d_split_and_reopen(tmp_path):
    vol = np.ones((4, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="in memory"):
        find_instances_in_slabs(vol, tmp_path / "o.zarr", split=True)
    find_instances_in_slabs(vol, tmp_path / "o.zarr", class_names=["bg", "mito"])
    r = open_instances(tmp_path / "o.zarr")
    assert r.count == 1 and r.class_names == ["bg", "mito"] and r.object_class.tolist() == [0, 1]
