"""Smoothing of a stack's confidences across neighbouring slices (segment z_smooth)."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_models import Pointwise

from napari_cem.infer import segment
from napari_cem.smoothing import smooth_across_slices


def _bundle(module):
    from napari_cem.model import ModelBundle

    return ModelBundle(model=module.eval(), classes=["background", "mito"], norms=(0.0, 1.0))


def test_a_one_slice_flicker_is_outvoted_by_its_neighbours():
    q = np.zeros((1, 3, 2, 2), np.uint8)
    q[0, 1, 0, 0] = 255  # a bright pixel in the middle slice only
    q[0, :, 1, 1] = [255, 0, 255]  # a pixel that drops out in the middle slice
    smooth_across_slices(q)
    np.testing.assert_array_equal(q[0, :, 0, 0], [64, 128, 64])  # (0+0+255)/4, (0+510+0)/4 rounded
    np.testing.assert_array_equal(q[0, :, 1, 1], [191, 128, 191])
    assert q[0, :, 0, 1].tolist() == [0, 0, 0]


def test_constant_and_linear_stacks_are_unchanged_inside():
    q = np.broadcast_to(np.arange(0, 250, 50, dtype=np.uint8)[None, :, None, None], (2, 5, 3, 3)).copy()
    out = smooth_across_slices(q.copy())
    np.testing.assert_array_equal(out[:, 1:-1], q[:, 1:-1])  # a linear ramp keeps its inside
    flat = np.full((1, 4, 3, 3), 77, np.uint8)
    np.testing.assert_array_equal(smooth_across_slices(flat.copy()), flat)
    one = np.full((1, 1, 3, 3), 9, np.uint8)
    np.testing.assert_array_equal(smooth_across_slices(one.copy()), one)
    with pytest.raises(ValueError, match="classes, z, y, x"):
        smooth_across_slices(np.zeros((3, 3, 3), np.uint8))


def test_segment_thresholds_the_smoothed_confidences():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 256, (5, 32, 32), dtype=np.uint8)
    bundle = _bundle(Pointwise())
    plain = segment(vol, bundle, device="cpu", keep_probabilities=True, precision="float32")
    smoothed = segment(vol, bundle, device="cpu", z_smooth=True, precision="float32")
    expect = smooth_across_slices(plain.probabilities[None].copy())[0] > 0.5 * 255
    np.testing.assert_array_equal(smoothed.labels, expect.astype(smoothed.labels.dtype))
    assert smoothed.probabilities is None and smoothed.metadata["z_smooth"] is True
    assert not np.array_equal(smoothed.labels, plain.labels)
    kept = segment(vol, bundle, device="cpu", z_smooth=True, keep_probabilities=True, precision="float32")
    np.testing.assert_array_equal(kept.probabilities, smooth_across_slices(plain.probabilities[None].copy())[0])


def test_smoothing_is_refused_where_it_cannot_run(tmp_path):
    vol = np.zeros((4, 32, 32), np.uint8)
    bundle = _bundle(Pointwise())
    with pytest.raises(ValueError, match="2D stack mode"):
        segment(vol, bundle, device="cpu", mode="orthoplane", z_smooth=True)
    with pytest.raises(ValueError, match="zarr"):
        segment(vol, bundle, device="cpu", z_smooth=True, out=tmp_path / "s.zarr")
