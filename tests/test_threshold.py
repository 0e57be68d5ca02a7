"""A threshold estimated on painted slices the model did not train on."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_models import Pointwise

from napari_cem.threshold import (
    CANDIDATES,
    estimate_threshold,
    held_out_slices,
    paint_targets,
    threshold_from_paint,
)


def test_the_best_candidate_is_found_from_the_paint():
    rng = np.random.default_rng(0)
    target = (rng.random(20_000) < 0.3).astype(np.uint8)
    # structure pixels at confidence 0.3-1.0, background at 0-0.25: only thresholds in [0.25, 0.3) separate them
    q = np.where(target == 1, rng.integers(77, 256, target.size), rng.integers(0, 64, target.size)).astype(np.uint8)
    est = estimate_threshold(q, target, slices=[4])
    assert est.threshold == 0.25 and est.iou == 1.0 and est.iou_at_default < 0.8
    assert est.n_pixels == target.size and "threshold 0.25 estimated on 20,000 painted pixels of slice 4" in est.describe()
    unpainted = target.copy()
    unpainted[:5000] = 255  # ignored pixels do not count
    assert estimate_threshold(q, unpainted).n_pixels == 15_000


def test_the_iou_matches_a_direct_count():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, 5000).astype(np.uint8)
    target = (rng.random(5000) < q / 255.0).astype(np.uint8)
    est = estimate_threshold(q, target)
    pred = q > est.threshold * 255
    assert est.iou == pytest.approx((pred & (target == 1)).sum() / (pred | (target == 1)).sum())
    others = [((q > c * 255) & (target == 1)).sum() / ((q > c * 255) | (target == 1)).sum() for c in CANDIDATES]
    assert est.iou == pytest.approx(max(others))


def test_too_little_paint_is_refused():
    with pytest.raises(ValueError, match="Too little paint"):
        estimate_threshold(np.zeros(100, np.uint8), np.ones(100, np.uint8))


def test_held_out_slices_and_the_paint_convention():
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[0, :2] = 1
    labels[2, 3:] = 2
    labels[3, 0, 0] = 1
    assert held_out_slices(labels, [0]) == [2, 3]
    training = {"label_values": {"1": 0, "2": 1}, "complete_slices": False}
    t = paint_targets(labels[2], training)
    assert set(np.unique(t)) == {1, 255}
    t = paint_targets(labels[2], {"label_values": {"1": 1}, "complete_slices": True})
    assert set(np.unique(t)) == {0, 255}  # unpainted: background; value 2, unknown to the model: ignored
    assert (paint_targets(labels[0], {"label_values": {"1": 1},
                                                                 "complete_slices": True})[:2] == 1).all()
    with pytest.raises(ValueError, match="one-structure"):
        paint_targets(labels, {"label_values": {"1": 1, "2": 2}})


def _bundle(trained_on):
    from napari_cem.model import ModelBundle

    return ModelBundle(model=Pointwise().eval(), classes=["background", "mito"], norms=(0.0, 1.0),
                       training={"painted_slices": trained_on, "label_values": {"1": 1},
                                 "complete_slices": True})


def test_the_threshold_comes_from_the_slices_not_trained_on():
    # Pointwise: P = sigmoid(4 x - 1), x = the pixel / 255: the structure is x > 0.6 (P > 0.81)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    labels = np.zeros(image.shape, np.uint8)
    labels[0] = image[0] > 30  # the trained slice says another story: it is left out
    labels[2] = image[2] > 153
    est = threshold_from_paint(image, labels, _bundle([0]), device="cpu")
    assert est.slices == (2,) and est.threshold == 0.8 and est.iou > 0.95 > est.iou_at_default
    with pytest.raises(ValueError, match="No painted slice is held out"):
        threshold_from_paint(image, labels, _bundle([0, 2]), device="cpu")
    with pytest.raises(ValueError, match="which slices it trained on"):
        threshold_from_paint(image, labels, _bundle(None), device="cpu")
