"""Label clean-up on hand-made volumes: specks removed per class, holes filled, 3D versus
per slice, sizes in nm."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem.cleanup import clean_labels, min_size_voxels


def _volume():
    v = np.zeros((3, 12, 12), np.uint8)
    v[:, 2:8, 2:8] = 1  # a 3 x 6 x 6 mitochondrion ...
    v[1, 4:6, 4:6] = 0  # ... with a hole in its middle slice
    v[0, 10, 10] = 1  # a one-voxel speck of class 1
    v[2, 0:2, 10:12] = 2  # a 2 x 2 piece of class 2 (4 voxels)
    return v


def test_small_pieces_go_per_class_and_the_input_is_untouched():
    v = _volume()
    out, info = clean_labels(v, min_size=5)
    assert out[0, 10, 10] == 0 and not (out == 2).any()  # speck and small class-2 piece gone
    assert (out[:, 2:8, 2:8] == v[:, 2:8, 2:8]).all()  # the big one stays, hole and all
    assert info["removed_voxels"] == 1 + 4 and info["filled_voxels"] == 0
    assert v[0, 10, 10] == 1  # a copy was cleaned
    kept, _ = clean_labels(v, min_size=4)
    assert (kept == 2).sum() == 4  # exactly the size: kept


def test_holes_fill_per_slice_but_not_in_3d_when_open_above():
    v = _volume()
    per_slice, info = clean_labels(v, holes=True, per_slice=True)
    assert (per_slice[1, 4:6, 4:6] == 1).all() and info["filled_voxels"] == 4
    in_3d, info3 = clean_labels(v, holes=True, per_slice=False)
    assert info3["filled_voxels"] == 4  # enclosed by slices 0 and 2 too: a 3D cavity
    v[0, 4:6, 4:6] = 0  # opened from the top: no longer a cavity in 3D, still a hole in slice 1
    assert clean_labels(v, holes=True)[1]["filled_voxels"] == 0
    assert clean_labels(v, holes=True, per_slice=True)[1]["filled_voxels"] == 4 + 4


def test_a_hole_is_never_filled_over_another_class():
    v = np.zeros((1, 7, 7), np.uint8)
    v[0, 1:6, 1:6] = 1
    v[0, 3, 3] = 2  # class 2 inside class 1
    out, info = clean_labels(v, holes=True, per_slice=True)
    assert out[0, 3, 3] == 2 and info["filled_voxels"] == 0


def test_per_slice_size_counts_pixels_of_one_slice():
    v = np.zeros((4, 6, 6), np.uint8)
    v[:, 1:3, 1:3] = 1  # 4 px per slice, 16 voxels in 3D
    assert clean_labels(v, min_size=5)[1]["removed_voxels"] == 0
    assert clean_labels(v, min_size=5, per_slice=True)[1]["removed_voxels"] == 16


def test_sizes_in_nm_use_the_voxel_size():
    assert min_size_voxels(10, "voxels") == 10
    assert min_size_voxels(1e6, "nm", (40, 10, 10)) == 250  # 1e6 nm^3 / 4000 nm^3
    assert min_size_voxels(1e4, "nm", (40, 10, 10), per_slice=True) == 100  # nm^2 / 100
    with pytest.raises(ValueError, match="voxel size"):
        min_size_voxels(1e6, "nm", None)
    with pytest.raises(ValueError, match="0 or more"):
        min_size_voxels(-1)
