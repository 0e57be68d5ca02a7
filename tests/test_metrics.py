"""IoU per class (3D whole volume and mean over 2D slices, background excluded) on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cem.metrics import evaluate, iou_from_confusion


def _case():
    gt = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros((2, 4, 4), np.uint8)
    # slice 0: gt class 1 = 4 px, pred class 1 = 2 of them + 2 others -> I 2, U 6
    gt[0, 0, :4] = 1
    pred[0, 0, :2] = 1
    pred[0, 1, :2] = 1
    # slice 1: gt class 1 = 2 px, pred exactly those -> I 2, U 2
    gt[1, 3, :2] = 1
    pred[1, 3, :2] = 1
    # class 2 only in slice 1: gt 4 px, pred 2 of them -> I 2, U 4
    gt[1, 2, :4] = 2
    pred[1, 2, :2] = 2
    return pred, gt


def test_hand_made_iou_3d_and_2d():
    pred, gt = _case()
    ev = evaluate(pred, gt, classes=["bg", "mito", "er"])
    rows = {r["class"]: r for r in ev.rows()}
    assert list(rows) == ["mito", "er"]  # background excluded
    # mito: 3D I = 2 + 2 = 4, U = 6 + 2 = 8 -> 0.5 ; 2D mean of (2/6, 2/2) = 2/3
    assert rows["mito"]["iou_3d"] == pytest.approx(0.5)
    assert rows["mito"]["iou_2d_mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert rows["mito"]["slices"] == 2
    # er: only slice 1 counts for 2D (absent from both in slice 0)
    assert rows["er"]["iou_3d"] == pytest.approx(0.5)
    assert rows["er"]["iou_2d_mean"] == pytest.approx(0.5)
    assert rows["er"]["slices"] == 1
    assert rows["mito"]["gt_voxels"] == 6 and rows["mito"]["pred_voxels"] == 6
    assert ev.mean_iou_3d == pytest.approx(0.5)
    assert ev.mean_iou_2d == pytest.approx(((1 / 3 + 1) / 2 + 0.5) / 2)
    table = ev.table()
    assert "mito" in table and "0.500" in table and "0.667" in table and "mean" in table
    assert "bg" not in table.splitlines()[2]


def test_perfect_and_disjoint_and_absent_classes():
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[:, 2:5, 2:5] = 1
    assert evaluate(gt, gt, ["bg", "fg"]).iou_3d[1] == pytest.approx(1.0)
    pred = np.zeros_like(gt)
    pred[:, 6:, 6:] = 1
    assert evaluate(pred, gt, ["bg", "fg"]).iou_3d[1] == 0.0
    ev = evaluate(gt, gt, ["bg", "fg", "never"])  # class 2 absent from both
    assert math.isnan(ev.iou_3d[2]) and ev.rows()[1]["iou_3d"] is None
    assert ev.mean_iou_3d == pytest.approx(1.0)  # the absent class does not count
    assert "-" in ev.table().splitlines()[3]


def test_default_class_names_2d_and_lazy_input():
    import dask.array as da

    pred, gt = _case()
    ev = evaluate(pred, gt)
    assert ev.classes == ["background", "class 1", "class 2"]
    lazy = evaluate(da.from_array(pred, chunks=(1, 4, 4)), da.from_array(gt, chunks=(1, 4, 4)),
                    ["bg", "mito", "er"])
    np.testing.assert_allclose(lazy.iou_3d, ev.iou_3d, equal_nan=True)
    one = evaluate(pred[0], gt[0], ["bg", "mito", "er"])  # a 2D image is one slice
    assert one.n_slices == 1 and one.iou_3d[1] == pytest.approx(2 / 6)


def test_iou_from_confusion_matches_definition():
    conf = np.array([[5, 1], [2, 3]])  # rows gt, cols pred
    np.testing.assert_allclose(iou_from_confusion(conf), [5 / 8, 3 / 6])


def test_bad_input_messages():
    a = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate(a, np.zeros((2, 4, 5), np.uint8), ["bg", "fg"])
    b = a.copy()
    b[0, 0, 0] = 3
    with pytest.raises(ValueError, match="label value 3 but only 2 classes"):
        evaluate(a, b, ["bg", "fg"])
    with pytest.raises(ValueError, match="integer labels"):
        evaluate(a.astype(np.float32), a, ["bg", "fg"])
    with pytest.raises(ValueError, match="at least two classes"):
        evaluate(a, a, ["bg"])
