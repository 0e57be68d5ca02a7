"""The four hand-made features of CEM500K's light informative/uninformative model (SPEC 2).

Per patch (uint8, any size):

1. ``lbp_std``: standard deviation of ``local_binary_pattern(img, P=8, R=8)``;
2. ``geometric_mean_median``: median of ``rank.geometric_mean(img, square(11))``;
3. ``entropy_std``: standard deviation of ``rank.entropy(img, square(7))``;
4. ``canny_mean``: mean of ``canny(img, sigma=1)`` (the fraction of edge pixels).

The geometric mean is computed for a whole batch of equal-sized patches at once with a box
filter on ``log(1 + img)`` (rounded to uint8 exactly as scikit-image does; the test pins the
equality); the others call scikit-image per patch. Large jobs can spread the patches over
processes (``n_jobs``): scikit-image's rank filters hold the GIL, so threads would not help.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._cancel import Cancelled

__all__ = ["FEATURE_NAMES", "patch_features", "quality_features"]

FEATURE_NAMES = ("lbp_std", "geometric_mean_median", "entropy_std", "canny_mean")
_CHUNK = 32


def _as_patch(p) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim != 2:
        raise ValueError(f"a patch must be a 2D grey image, got shape {p.shape}")
    if p.dtype != np.uint8:
        raise ValueError(f"patches must be 8-bit (uint8), got {p.dtype}; standardise the volume first")
    if min(p.shape) < 16:
        raise ValueError(f"a patch of {p.shape[0]} x {p.shape[1]} px is too small for the quality "
                         "features (at least 16 x 16 px)")
    return p


def geometric_mean_batch(batch: np.ndarray, size: int = 11) -> np.ndarray:
    """``rank.geometric_mean(img, square(size))`` of every image of a (n, h, w) uint8 batch.

    Near the border only the pixels inside the image count, as in scikit-image.
    """
    from scipy import ndimage as ndi

    logs = np.log1p(batch.astype(np.float64))
    sums = ndi.uniform_filter(logs, size=(1, size, size), mode="constant", cval=0.0)
    counts = ndi.uniform_filter(np.ones(batch.shape[1:], np.float64), size=size, mode="constant", cval=0.0)
    return np.round(np.expm1(sums / counts[None])).astype(np.uint8)


def _per_patch(p: np.ndarray) -> tuple[float, float, float]:
    from skimage.feature import canny, local_binary_pattern
    from skimage.filters import rank

    lbp = local_binary_pattern(p, P=8, R=8)
    ent = rank.entropy(p, np.ones((7, 7), bool))
    edges = canny(p, sigma=1)
    return float(lbp.std()), float(ent.std()), float(edges.mean())


def patch_features(patches: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 4) float64 features (FEATURE_NAMES order) of a list of uint8 patches, in this process."""
    patches = [_as_patch(p) for p in patches]
    out = np.empty((len(patches), 4), np.float64)
    # the geometric mean is vectorised over each group of equal-sized patches
    shapes: dict[tuple, list[int]] = {}
    for i, p in enumerate(patches):
        shapes.setdefault(p.shape, []).append(i)
    for idx in shapes.values():
        gm = geometric_mean_batch(np.stack([patches[i] for i in idx]))
        out[idx, 1] = np.median(gm.reshape(len(idx), -1), axis=1)
    for i, p in enumerate(patches):
        out[i, 0], out[i, 2], out[i, 3] = _per_patch(p)
    return out


def quality_features(patches, *, n_jobs: int = 1, progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The four SPEC features of every patch: an (n, 4) float64 array.

    *patches* is a (n, h, w) uint8 array or a sequence of 2D uint8 arrays (sizes may differ).
    ``n_jobs`` > 1 (or -1: all cores) spreads chunks of patches over processes. Progress is
    reported as ``progress(done, total)``; ``should_stop()`` true raises Cancelled.
    """
    n = len(patches)
    if n == 0:
        return np.zeros((0, 4), np.float64)
    chunks = [list(patches[i:i + _CHUNK]) for i in range(0, n, _CHUNK)]
    if n_jobs == -1:
        import os

        n_jobs = os.cpu_count() or 1
    out = []
    done = 0
    if n_jobs > 1 and len(chunks) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(patch_features)(c) for c in chunks)
    else:
        results = (patch_features(c) for c in chunks)
    for chunk, feats in zip(chunks, results):
        out.append(feats)
        done += len(chunk)
        if progress is not None:
            progress(done, n)
        if should_stop is not None and should_stop():
            raise Cancelled("computing the patch features was cancelled")
    return np.concatenate(out)
