"""Smoothing of a stack's confidences across neighbouring slices, before thresholding.

In the 2D stack mode every xy slice is predicted on its own, so in an anisotropic ssTEM
stack a structure's outline can flicker from one section to the next. A weighted mean of
each slice with its two neighbours (1/4, 1/2, 1/4) lets the neighbours vote; the end
slices count themselves for the missing neighbour. Done in place, one slice at a time, so
it needs two slices of extra memory, not a copy of the volume.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WEIGHTS", "smooth_across_slices"]

WEIGHTS = (1, 2, 1)  # previous, this, next slice (divided by their sum, 4)


def smooth_across_slices(q: np.ndarray) -> np.ndarray:
    """Replace the (C, Z, H, W) uint8 confidences *q* (255 = 1.0) in place by their 3-slice
    weighted mean along Z, rounded; returns *q*."""
    if q.ndim != 4:
        raise ValueError(f"Confidences of shape (classes, z, y, x) are expected, got {q.shape}.")
    depth = q.shape[1]
    if depth < 2:
        return q
    a, b, c = WEIGHTS
    total = a + b + c
    previous = q[:, 0].astype(np.uint16)
    for k in range(depth):
        here = q[:, k].astype(np.uint16)
        after = q[:, min(k + 1, depth - 1)].astype(np.uint16)
        q[:, k] = ((a * previous + b * here + c * after + total // 2) // total).astype(np.uint8)
        previous = here
    return q
