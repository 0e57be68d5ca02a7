"""Segmentation quality: Intersection-over-Union per class, as the CEM500K benchmarks report it.

For every foreground class c (the background, label 0, is excluded):

* **3D (whole volume)**: |pred == c and gt == c| / |pred == c or gt == c| counted over
  every voxel, the figure the paper gives for volume benchmarks;
* **2D (mean over slices)**: the same ratio on each xy slice, averaged over the slices
  where the class occurs in the prediction or the ground truth (a slice where it is
  absent from both says nothing and is skipped), the figure for stacks of 2D images.

A class absent from both prediction and ground truth has no IoU (NaN, shown as "-") and
is left out of the means. Everything is computed from one confusion matrix per slice, so
lazy (dask/zarr) volumes are read one slab at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._cancel import Cancelled

__all__ = ["Evaluation", "confusion_per_slice", "evaluate", "iou_from_confusion"]


def _slab(a, z0: int, z1: int) -> np.ndarray:
    block = a[z0:z1]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


def confusion_per_slice(pred, gt, n_classes: int, progress=None, should_stop=None) -> np.ndarray:
    """(n_slices, n_classes, n_classes) counts: [z, g, p] = voxels of slice z with gt g and pred p."""
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"Prediction and ground truth differ in shape: {tuple(pred.shape)} vs "
                         f"{tuple(gt.shape)}; they must cover the same voxels.")
    if len(pred.shape) == 2:
        pred, gt = np.asarray(pred)[None], np.asarray(gt)[None]
    if len(pred.shape) != 3:
        raise ValueError(f"Evaluation needs 2D or 3D label images, got shape {tuple(pred.shape)}.")
    nz = int(pred.shape[0])
    plane = int(np.prod(pred.shape[1:]))
    step = max(1, min(nz, (64 << 20) // max(plane, 1)))
    out = np.zeros((nz, n_classes, n_classes), np.int64)
    for z0 in range(0, nz, step):
        if should_stop is not None and should_stop():
            raise Cancelled("Evaluation cancelled.")
        z1 = min(z0 + step, nz)
        p, g = _slab(pred, z0, z1), _slab(gt, z0, z1)
        for name, a in (("prediction", p), ("ground truth", g)):
            if a.dtype.kind not in "biu":
                raise ValueError(f"The {name} must hold integer labels, not {a.dtype}.")
            if a.size and (a.min() < 0 or a.max() >= n_classes):
                raise ValueError(f"The {name} has label value {int(a.max() if a.max() >= n_classes else a.min())} "
                                 f"but only {n_classes} classes (0 .. {n_classes - 1}) are named.")
        idx = (g.astype(np.int64) * n_classes + p.astype(np.int64)).reshape(z1 - z0, -1)
        for k in range(z1 - z0):
            out[z0 + k] = np.bincount(idx[k], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        if progress is not None:
            progress(z1, nz, "evaluating")
    return out


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """IoU per class of a (..., C, C) confusion matrix; NaN where the class is in neither."""
    conf = np.asarray(conf, np.float64)
    inter = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(-1) + conf.sum(-2) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


@dataclass
class Evaluation:
    """IoU per foreground class (3D and mean of 2D), with the counts behind them."""

    classes: list[str]  # names of label values 0 .. C-1 (0 = background)
    iou_3d: np.ndarray  # (C,) whole-volume IoU (index 0, background, is not reported)
    iou_2d: np.ndarray  # (C,) mean over slices where the class occurs
    slices_2d: np.ndarray  # (C,) number of slices that went into iou_2d
    gt_voxels: np.ndarray  # (C,)
    pred_voxels: np.ndarray  # (C,)
    n_slices: int
    extra: dict = field(default_factory=dict)

    @property
    def foreground(self) -> range:
        return range(1, len(self.classes))

    @property
    def mean_iou_3d(self) -> float:
        vals = self.iou_3d[1:]
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    @property
    def mean_iou_2d(self) -> float:
        vals = self.iou_2d[1:]
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    def rows(self) -> list[dict]:
        """One dict per foreground class (for tables, CSV, JSON)."""
        return [{"label": c, "class": self.classes[c], "iou_3d": _num(self.iou_3d[c]),
                 "iou_2d_mean": _num(self.iou_2d[c]), "slices": int(self.slices_2d[c]),
                 "gt_voxels": int(self.gt_voxels[c]), "pred_voxels": int(self.pred_voxels[c])}
                for c in self.foreground]

    def table(self) -> str:
        """A plain-text table: class, IoU 3D, mean IoU 2D, voxels; then the means."""
        name_w = max([len("class")] + [len(n) for n in self.classes]) + 2
        head = f"{'class':<{name_w}}{'IoU 3D':>8}{'IoU 2D':>9}{'slices':>8}{'GT voxels':>13}{'pred voxels':>13}"
        lines = [head, "-" * len(head)]
        for r in self.rows():
            lines.append(f"{r['class']:<{name_w}}{_fmt(r['iou_3d']):>8}{_fmt(r['iou_2d_mean']):>9}"
                         f"{r['slices']:>8}{r['gt_voxels']:>13,}{r['pred_voxels']:>13,}")
        if len(self.classes) > 2:
            lines.append(f"{'mean':<{name_w}}{_fmt(self.mean_iou_3d):>8}{_fmt(self.mean_iou_2d):>9}")
        return "\n".join(lines)


def _num(v) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _fmt(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def evaluate(
    pred,
    gt,
    classes: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Evaluation:
    """IoU of label image *pred* against ground truth *gt* (same shape, 2D or zyx).

    classes names the label values (classes[0] is the background); by default
    ``background, class 1, class 2, ...`` up to the largest value found.
    """
    if classes is None:
        top = 0
        for a in (pred, gt):
            m = a.max()
            m = m.compute() if hasattr(m, "compute") else m
            top = max(top, int(m))
        classes = ["background"] + [f"class {i}" for i in range(1, max(top, 1) + 1)]
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError("Name at least two classes: the background and one structure.")
    n = len(classes)
    conf = confusion_per_slice(pred, gt, n, progress=progress, should_stop=should_stop)
    total = conf.sum(0)
    per_slice = iou_from_confusion(conf)  # (Z, C)
    with np.errstate(invalid="ignore"):
        counted = np.isfinite(per_slice).sum(0)
        mean2d = np.where(counted > 0, np.nansum(per_slice, 0) / np.maximum(counted, 1), np.nan)
    return Evaluation(classes=classes, iou_3d=iou_from_confusion(total), iou_2d=mean2d,
                      slices_2d=counted, gt_voxels=total.sum(1), pred_voxels=total.sum(0),
                      n_slices=int(conf.shape[0]))
