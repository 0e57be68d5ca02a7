"""Where the segmentation is unsure: the per-voxel score on hand-made probabilities, and
segment()'s uncertainty output (stack, orthoplane, in memory and in a zarr store)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _tiny_models import Pointwise

from napari_cem.infer import segment
from napari_cem.synthetic import make_em_volume
from napari_cem.uncertainty import (
    next_slices,
    plane_disagreement,
    slice_scores,
    voxel_uncertainty,
    voxel_uncertainty_torch,
)


@pytest.mark.parametrize(("p", "expected"), [
    ([[0.0, 0.25, 0.5, 0.75, 1.0]], [0.0, 0.5, 1.0, 0.5, 0.0]),  # one structure: 1 - |2p - 1|
    ([[1.0, 0.5], [0.0, 0.5]], [0.0, 1.0]),  # two classes: entropy / log 2
    ([[1 / 3, 1.0], [1 / 3, 0.0], [1 / 3, 0.0]], [1.0, 0.0]),  # three: uniform is 1, one-hot 0
    ([[0.9], [0.1]], [0.4690]),  # -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 2
])
def test_voxel_uncertainty_on_hand_made_probabilities(p, expected):
    p = np.asarray(p, np.float32)
    np.testing.assert_allclose(voxel_uncertainty(p), expected, atol=1e-3)
    torch_batch = torch.from_numpy(p)[None, :, None, :]  # (1, C, 1, W)
    np.testing.assert_allclose(voxel_uncertainty_torch(torch_batch)[0, 0].numpy(), expected, atol=1e-3)


def test_plane_disagreement_is_the_largest_range_across_planes():
    agree = np.full((1, 2, 3), 200, np.uint8)
    assert plane_disagreement([agree, agree, agree]).max() == 0.0
    xz = agree.copy()
    xz[0, 1, 2] = 200 - 153  # one voxel where xz says 0.18 and the others 0.78
    np.testing.assert_allclose(plane_disagreement([agree, xz, agree])[1, 2], 0.6)


def test_slice_scores_are_mean_uncertainty_per_slice():
    u = np.zeros((3, 4, 4), np.uint8)
    u[1] = 255
    u[2, :2] = 255
    np.testing.assert_allclose(slice_scores(u), [0.0, 1.0, 0.5])


def test_next_slices_skip_painted_ones_and_discount_their_neighbours():
    scores = [0.9, 0.8, 0.7, 0.1, 0.2, 0.6, 0.3, 0.0]
    assert next_slices(scores) == [0, 1, 2, 5, 6, 4, 3, 7]  # nothing painted: by score
    # slice 0 painted, 40 nm sections, 200 nm spread: slice 1 counts 0.2, 2 counts 0.4 ...
    assert next_slices(scores, painted=[0]) == [5, 6, 2, 1, 4, 3, 7]
    assert next_slices(scores, painted=[0], spread_nm=0) == [1, 2, 5, 6, 4, 3, 7]
    # thin FIB-SEM sections (8 nm): every slice lies within 200 nm of slice 0 or 7, so the
    # weight is 8 nm x distance / 200 nm: slice 2 (0.7 x 0.08) before 5 (0.6 x 0.08), 1, 4 ...
    assert next_slices(scores, painted=[0, 7], z_spacing_nm=8.0) == [2, 5, 1, 4, 3, 6]
    assert next_slices([0.5, 0.5], painted=[0, 1]) == []


@pytest.fixture(scope="module")
def volume():
    return make_em_volume((12, 40, 48), isotropic=True, seed=2).image


def _bundle():
    return SimpleNamespace(model=Pointwise(), classes=["background", "mito"], norms=(0.5, 0.25))


def test_segment_returns_the_uncertainty_of_its_probabilities(volume):
    res = segment(volume, _bundle(), keep_probabilities=True, keep_uncertainty=True,
                  device="cpu", precision="float32")
    assert res.uncertainty.shape == volume.shape and res.uncertainty.dtype == np.uint8
    p = res.probabilities.astype(np.float32) / 255.0
    expected = (1.0 - np.abs(2.0 * p - 1.0)) * 255.0
    assert np.abs(res.uncertainty.astype(np.float32) - expected).max() <= 2.0  # two roundings
    scores = res.metadata["slice_uncertainty"]
    assert len(scores) == volume.shape[0]
    np.testing.assert_allclose(scores, res.uncertainty.reshape(12, -1).mean(1) / 255.0, atol=1e-4)
    assert segment(volume, _bundle(), device="cpu").uncertainty is None  # only when asked


def test_orthoplane_uncertainty_is_the_same_in_memory_and_in_a_store(volume, tmp_path):
    kwargs = dict(mode="orthoplane", keep_uncertainty=True, device="cpu", precision="float32",
                  voxel_size=(8, 8, 8))
    mem = segment(volume, _bundle(), **kwargs)
    store = segment(volume, _bundle(), out=tmp_path / "seg.zarr", slab=4, **kwargs)
    np.testing.assert_array_equal(np.asarray(store.uncertainty), mem.uncertainty)
    assert store.metadata["slice_uncertainty"] == mem.metadata["slice_uncertainty"]
    # a pointwise model gives every plane the same answer: no disagreement on top
    res = segment(volume, _bundle(), keep_probabilities=True, keep_uncertainty=True, device="cpu",
                  precision="float32")
    assert np.abs(mem.uncertainty.astype(int) - res.uncertainty.astype(int)).max() <= 2


def test_a_2d_image_gives_a_2d_uncertainty(volume):
    res = segment(volume[3], _bundle(), keep_uncertainty=True, device="cpu")
    assert res.uncertainty.shape == volume.shape[1:] and len(res.metadata["slice_uncertainty"]) == 1
