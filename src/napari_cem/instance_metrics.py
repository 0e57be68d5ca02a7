"""Instance labels scored against ground-truth instances: matches, F1, panoptic quality,
splits and merges.

A predicted object matches a true one when their IoU is at least the threshold; the pairs
are chosen by the Hungarian method on IoU (one match per object). At thresholds of 0.5
and above at most one pair per object can pass, except for exact ties. Panoptic quality
(Kirillov et al. 2019) is the sum of matched IoUs over TP + FP/2 + FN/2 at 0.5.
A true object is *split* when two or more predicted objects each have at least half of
their voxels inside it; a predicted object is a *merge* when it holds at least half of the
voxels of two or more true objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["InstanceScores", "evaluate_instances", "overlaps"]

THRESHOLDS = (0.5, 0.75)


@dataclass
class InstanceScores:
    n_true: int
    n_pred: int
    at: dict = field(default_factory=dict)  # threshold -> {tp, fp, fn, precision, recall, f1}
    mean_matched_iou: float = 0.0  # over the matches at 0.5
    panoptic_quality: float = 0.0
    splits: int = 0
    merges: int = 0

    def as_dict(self) -> dict:
        return {"n_true": self.n_true, "n_pred": self.n_pred,
                **{f"{k}@{t:g}": v for t, row in self.at.items() for k, v in row.items()},
                "mean_matched_iou": self.mean_matched_iou, "panoptic_quality": self.panoptic_quality,
                "splits": self.splits, "merges": self.merges}

    def table(self) -> str:
        """Plain-text table for the CLI."""
        lines = [f"objects: {self.n_true:,} true, {self.n_pred:,} predicted",
                 "IoU >=  TP      FP      FN      precision  recall  F1"]
        for t, r in self.at.items():
            lines.append(f"{t:<6g}  {r['tp']:<7,} {r['fp']:<7,} {r['fn']:<7,} {r['precision']:<10.3f} "
                         f"{r['recall']:<7.3f} {r['f1']:.3f}")
        lines.append(f"mean matched IoU (at 0.5) {self.mean_matched_iou:.3f}; panoptic quality "
                     f"{self.panoptic_quality:.3f}; {self.splits:,} true objects split, "
                     f"{self.merges:,} predicted objects merge several")
        return "\n".join(lines)


def overlaps(pred, true):
    """(true ids, pred ids, shared voxels) of every overlapping pair, and the voxel counts of
    each true and predicted id; read 16 slices at a time (zarr arrays work)."""
    pred_n = _n_ids(pred)
    true_n = _n_ids(true)
    sizes_p = np.zeros(pred_n + 1, np.int64)
    sizes_t = np.zeros(true_n + 1, np.int64)
    pairs: dict = {}
    shape = np.shape(pred)
    if shape != np.shape(true):
        raise ValueError(f"The prediction {shape} and the ground truth {np.shape(true)} differ in shape.")
    step = 16 if len(shape) == 3 else max(shape[0], 1)
    for z0 in range(0, max(shape[0], 1), step):
        p = np.asarray(pred[z0:z0 + step]).ravel().astype(np.int64)
        t = np.asarray(true[z0:z0 + step]).ravel().astype(np.int64)
        sizes_p += np.bincount(p, minlength=pred_n + 1)[:pred_n + 1]
        sizes_t += np.bincount(t, minlength=true_n + 1)[:true_n + 1]
        both = (p > 0) & (t > 0)
        key, n = np.unique(t[both] * (pred_n + 1) + p[both], return_counts=True)
        for k, c in zip(key.tolist(), n.tolist()):
            pairs[k] = pairs.get(k, 0) + c
    keys = np.fromiter(pairs.keys(), np.int64, len(pairs))
    shared = np.fromiter(pairs.values(), np.int64, len(pairs))
    return keys // (pred_n + 1), keys % (pred_n + 1), shared, sizes_t, sizes_p


def _n_ids(labels) -> int:
    shape = np.shape(labels)
    top = 0
    step = 16 if len(shape) == 3 else max(shape[0], 1)
    for z0 in range(0, max(shape[0], 1), step):
        block = np.asarray(labels[z0:z0 + step])
        if block.dtype.kind not in "ui":
            raise ValueError(f"Instance labels must be whole numbers, got {block.dtype}.")
        if block.size:
            top = max(top, int(block.max()))
    return top


def _matches(t_ids, p_ids, iou, threshold: float):
    """(true, pred, iou) of the one-to-one matches with IoU >= threshold (Hungarian on IoU)."""
    from scipy.optimize import linear_sum_assignment

    ok = iou >= threshold
    t_ids, p_ids, iou = t_ids[ok], p_ids[ok], iou[ok]
    if not len(iou):
        return t_ids, p_ids, iou
    ut, ti = np.unique(t_ids, return_inverse=True)
    up, pi = np.unique(p_ids, return_inverse=True)
    if len(ut) == len(iou) and len(up) == len(iou):  # no object in two pairs: nothing to choose
        return t_ids, p_ids, iou
    cost = np.zeros((len(ut), len(up)))
    cost[ti, pi] = -iou
    rows, cols = linear_sum_assignment(cost)
    good = cost[rows, cols] < 0
    return ut[rows[good]], up[cols[good]], -cost[rows[good], cols[good]]


def evaluate_instances(pred, true, thresholds=THRESHOLDS) -> InstanceScores:
    """Scores of instance labels *pred* against *true* (same shape; 0 is background)."""
    t_ids, p_ids, shared, sizes_t, sizes_p = overlaps(pred, true)
    n_true, n_pred = int((sizes_t[1:] > 0).sum()), int((sizes_p[1:] > 0).sum())
    iou = shared / (sizes_t[t_ids] + sizes_p[p_ids] - shared) if len(shared) else np.zeros(0)
    scores = InstanceScores(n_true, n_pred)
    for t in sorted({*thresholds, 0.5}):
        mt, _mp, miou = _matches(t_ids, p_ids, iou, t)
        tp = len(mt)
        fp, fn = n_pred - tp, n_true - tp
        precision = tp / n_pred if n_pred else float(n_true == 0)
        recall = tp / n_true if n_true else float(n_pred == 0)
        f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        if t == 0.5:
            scores.mean_matched_iou = float(miou.mean()) if tp else 0.0
            denom = tp + fp / 2 + fn / 2
            scores.panoptic_quality = float(miou.sum() / denom) if denom else 1.0
        if t in thresholds:
            scores.at[float(t)] = {"tp": tp, "fp": fp, "fn": fn, "precision": float(precision),
                                   "recall": float(recall), "f1": float(f1)}
    mostly_in = shared * 2 >= sizes_p[p_ids]  # the predicted object lies mostly in the true one
    scores.splits = int((np.bincount(t_ids[mostly_in], minlength=1) >= 2).sum()) if mostly_in.any() else 0
    holds = shared * 2 >= sizes_t[t_ids]  # the true object lies mostly in the predicted one
    scores.merges = int((np.bincount(p_ids[holds], minlength=1) >= 2).sum()) if holds.any() else 0
    return scores
