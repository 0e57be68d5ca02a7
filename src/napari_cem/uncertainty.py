"""How unsure a segmentation is, per voxel and per slice: where a correction pays most.

One structure: ``1 - |2p - 1|`` (0 where p is 0 or 1, 1 at p = 0.5). Several classes: the
entropy of the class probabilities divided by ``log(n_classes)`` (0 when one class has all
of it, 1 when all are equal). Orthoplane: the larger of that score of the averaged
probabilities and the disagreement between the xy, xz and yz predictions (the largest range
of a class's probability across the three). Stored as uint8, 255 = 1.0.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["confidence_range", "next_slices", "plane_disagreement", "slice_scores", "voxel_uncertainty",
           "voxel_uncertainty_torch"]


def voxel_uncertainty(p: np.ndarray) -> np.ndarray:
    """Uncertainty in [0, 1] of class probabilities *p* (C, ...) summing to 1 over C, or of
    one structure's probability (C = 1)."""
    p = np.asarray(p, np.float32)
    if p.shape[0] == 1:
        return 1.0 - np.abs(2.0 * p[0] - 1.0)
    q = np.clip(p, 1e-7, 1.0)
    return np.clip(-(q * np.log(q)).sum(0) / math.log(p.shape[0]), 0.0, 1.0)


def voxel_uncertainty_torch(probs):
    """The same on a torch batch (n, C, H, W): (n, H, W), on the batch's device."""
    if probs.shape[1] == 1:
        return 1.0 - (2.0 * probs[:, 0] - 1.0).abs()
    q = probs.clamp(1e-7, 1.0)
    return (-(q * q.log()).sum(1) / math.log(probs.shape[1])).clamp_(0.0, 1.0)


def plane_disagreement(parts) -> np.ndarray:
    """Largest range, over the classes, of the probability the three planes give (uint8
    confidences (C, ...) per plane, 255 = 1.0): 0 when xy, xz and yz agree."""
    stack = np.stack([np.asarray(part) for part in parts])  # (3, C, ...)
    return confidence_range(stack.min(0), stack.max(0))


def confidence_range(low, high) -> np.ndarray:
    """Largest range over the classes (axis 0) between the lowest and highest uint8
    confidences the planes gave: the disagreement, 0-1."""
    return (np.asarray(high).astype(np.int16) - low).max(0).astype(np.float32) / 255.0


def slice_scores(uncertainty) -> np.ndarray:
    """Mean uncertainty (0-1) of each z slice of a uint8 uncertainty volume (255 = 1.0),
    read 64 MiB at a time (it may be a zarr array)."""
    n = int(uncertainty.shape[0])
    plane = int(np.prod(uncertainty.shape[1:])) or 1
    step = max(1, (64 << 20) // plane)
    out = np.empty(n, np.float64)
    for z0 in range(0, n, step):
        block = np.asarray(uncertainty[z0:z0 + step], np.float64)
        out[z0:z0 + len(block)] = block.reshape(len(block), -1).mean(1) / 255.0
    return out


SPREAD_NM = 200.0  # slices closer than this to a painted one look much like it (a mitochondrion's radius)


def next_slices(scores, painted=(), z_spacing_nm: float = 40.0, spread_nm: float = SPREAD_NM) -> list[int]:
    """Unpainted slices, the best to correct first: mean uncertainty *scores* discounted near
    the *painted* slices (weight ``min(1, distance / spread_nm)``), so that the next
    correction is not a near copy of one already made. No painted slices: by score alone."""
    scores = np.asarray(scores, np.float64)
    z = np.arange(len(scores))
    taken = sorted({int(k) for k in painted if 0 <= int(k) < len(scores)})
    weight = np.ones(len(scores))
    if taken and spread_nm > 0:
        distance = np.abs(z[:, None] - np.asarray(taken)[None, :]).min(1) * float(z_spacing_nm)
        weight = np.minimum(1.0, distance / spread_nm)
    free = np.setdiff1d(z, taken)
    return [int(k) for k in free[np.argsort(-(scores * weight)[free], kind="stable")]]
