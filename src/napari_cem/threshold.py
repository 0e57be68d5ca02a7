"""A threshold estimated from painted slices the model did not train on.

A one-structure model labels a voxel when P > threshold, 0.5 by default. After a training
round the user often paints (or corrects) more slices; on their painted pixels, which the
model has not seen, the threshold that gives the highest IoU is an estimate for this
volume. Only thresholds on a coarse grid (0.05 ... 0.95) are tried, so a few hundred
pixels cannot tune it to noise, and the estimate says on how many pixels and slices it
rests. Slices the model trained on are left out: their IoU rewards the threshold that
fits its own training pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CANDIDATES", "ThresholdEstimate", "estimate_threshold", "held_out_slices", "paint_targets",
           "threshold_from_paint"]

CANDIDATES = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 ... 0.95
MIN_PIXELS = 1000  # painted pixels of each kind (structure, background) needed for an estimate


@dataclass(frozen=True)
class ThresholdEstimate:
    threshold: float
    iou: float  # on the painted pixels, at *threshold*
    iou_at_default: float  # ... at 0.5
    n_pixels: int  # painted pixels used
    slices: tuple  # the held-out painted slices (z)

    def describe(self) -> str:
        where = ", ".join(str(z) for z in self.slices)
        return (f"threshold {self.threshold:.2f} estimated on {self.n_pixels:,} painted pixels of "
                f"slice{'s' if len(self.slices) > 1 else ''} {where} (not trained on): IoU "
                f"{self.iou:.3f} there, {self.iou_at_default:.3f} at 0.5")


def held_out_slices(labels: np.ndarray, trained_on) -> list[int]:
    """The z of the slices of *labels* (zyx) holding paint that are not in *trained_on*."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError("A threshold is estimated on painted slices of a volume (zyx labels).")
    painted = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    seen = {int(z) for z in (trained_on or ())}
    return [int(z) for z in painted if int(z) not in seen]


def paint_targets(labels: np.ndarray, training: dict) -> np.ndarray:
    """Per pixel: 1 structure, 0 background, 255 not painted, with the painted values read
    as the model's training did (its ``label_values``; unpainted pixels of a painted slice
    are background when it trained on complete slices)."""
    labels = np.asarray(labels)
    value_map = {int(k): int(v) for k, v in (training.get("label_values") or {}).items()}
    if not value_map:
        raise ValueError("This model does not record how its paint was read; retrain it to estimate a threshold.")
    if max(value_map.values()) > 1:  # output classes 0 (background) and 1 only
        raise ValueError("A threshold is for one-structure models; this one has several classes (argmax).")
    target = np.full(labels.shape, 255, np.uint8)
    for value, cls in value_map.items():
        target[labels == value] = 1 if cls > 0 else 0
    if training.get("complete_slices"):
        target[labels == 0] = 0  # the caller passes painted slices only
    return target


def estimate_threshold(confidence: np.ndarray, target: np.ndarray, slices=()) -> ThresholdEstimate:
    """The candidate threshold with the highest IoU of ``confidence > threshold`` (uint8,
    255 = 1.0) against *target* (1 structure, 0 background, anything else ignored)."""
    q = np.asarray(confidence).ravel()
    t = np.asarray(target).ravel()
    if q.shape != t.shape:
        raise ValueError(f"The confidences ({np.shape(confidence)}) and the paint ({np.shape(target)}) differ in shape.")
    fg = np.bincount(q[t == 1], minlength=256).astype(np.int64)
    bg = np.bincount(q[t == 0], minlength=256).astype(np.int64)
    if fg.sum() < MIN_PIXELS or bg.sum() < MIN_PIXELS:
        raise ValueError(f"Too little paint to estimate a threshold ({int(fg.sum()):,} structure and "
                         f"{int(bg.sum()):,} background pixels; {MIN_PIXELS:,} of each are needed).")
    fg_above = np.cumsum(fg[::-1])[::-1]  # fg_above[k]: structure pixels with q >= k
    bg_above = np.cumsum(bg[::-1])[::-1]
    total_fg = int(fg.sum())

    def iou(threshold: float) -> float:
        k = int(np.floor(threshold * 255)) + 1  # q > threshold * 255
        tp = int(fg_above[k]) if k < 256 else 0
        fp = int(bg_above[k]) if k < 256 else 0
        return tp / max(total_fg + fp, 1)

    scores = [iou(c) for c in CANDIDATES]
    best = int(np.argmax(scores))  # the first of equals: the lowest threshold
    return ThresholdEstimate(CANDIDATES[best], scores[best], iou(0.5), int(fg.sum() + bg.sum()),
                             tuple(int(z) for z in slices))


def threshold_from_paint(image, labels, bundle, *, device="auto", progress=None,
                         should_stop=None) -> ThresholdEstimate:
    """Predict the painted slices of *labels* (zyx, the image's shape) that *bundle* did not
    train on and estimate the threshold there (:func:`estimate_threshold`)."""
    from .infer import segment

    labels = np.asarray(labels)  # the image may be lazy (zarr, dask): only its held-out slices are read
    if tuple(image.shape) != labels.shape:
        raise ValueError(f"The paint (shape {labels.shape}) and the image (shape {image.shape}) differ in shape.")
    if bundle.n_outputs != 1:
        raise ValueError("A threshold is for one-structure models; this one has several classes (argmax).")
    trained = bundle.training.get("painted_slices")
    if trained is None:
        raise ValueError("This model does not record which slices it trained on; retrain it to estimate a threshold.")
    slices = held_out_slices(labels, trained)
    if not slices:
        raise ValueError("No painted slice is held out: paint (or correct) a slice the model did not "
                         "train on, then estimate the threshold.")
    target = paint_targets(labels[slices], bundle.training)
    held = np.stack([np.asarray(image[z]) for z in slices])
    result = segment(held, bundle, device=device, keep_probabilities=True, progress=progress,
                     should_stop=should_stop)
    q = result.probabilities.reshape(target.shape)
    return estimate_threshold(q, target, slices)
