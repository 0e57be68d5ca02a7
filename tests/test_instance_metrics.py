"""Instance scores on hand-made labels: perfect, a split, a merge, a miss."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem.instance_metrics import evaluate_instances


def _truth():
    t = np.zeros((1, 10, 30), np.uint16)
    t[0, 1:9, 1:9] = 1
    t[0, 1:9, 11:19] = 2
    t[0, 1:9, 21:29] = 3
    return t


def test_perfect_match_with_other_ids():
    t = _truth()
    p = np.choose(t, [0, 7, 5, 9]).astype(np.uint16)
    s = evaluate_instances(p, t)
    assert s.at[0.5]["f1"] == 1.0 and s.at[0.75]["f1"] == 1.0
    assert s.panoptic_quality == pytest.approx(1.0) and s.splits == s.merges == 0


def test_split_merge_and_miss_counted():
    t = _truth()
    p = np.zeros_like(t)
    p[0, 1:9, 1:4], p[0, 1:9, 4:6], p[0, 1:9, 6:9] = 1, 2, 4  # true 1 cut in three
    p[0, 1:9, 11:29] = 3  # true 2 and 3 merged
    s = evaluate_instances(p, t)
    assert s.splits == 1 and s.merges == 1
    assert s.at[0.5]["tp"] == 0 and s.at[0.5]["fn"] == 3 and s.at[0.5]["fp"] == 4
    assert s.at[0.5]["f1"] == 0.0


def test_partial_overlap_threshold():
    t = _truth()
    p = t.copy()
    p[0, 1:9, 21:25] = 0  # object 3 half found: IoU 0.5
    s = evaluate_instances(p, t)
    assert s.at[0.5]["tp"] == 3 and s.at[0.75]["tp"] == 2
    assert s.mean_matched_iou == pytest.approx((1 + 1 + 0.5) / 3)


def test_shape_mismatch_and_float_refused():
    with pytest.raises(ValueError, match="shape"):
        evaluate_instances(np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="whole numbers"):
        evaluate_instances(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8))


def test_empty_both():
    s = evaluate_instances(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8))
    assert s.n_true == s.n_pred == 0 and s.at[0.5]["f1"] == 1.0
