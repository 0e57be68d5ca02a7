"""Test-time augmentation: average a model's probabilities over flips (4) or the 8 dihedral
transforms of the square (quarter turns and flips), each mapped back before averaging.

EM has no preferred orientation in the section plane, so the averaged prediction is less
noisy at the cost of 4 or 8 forward passes. Works on any (n, C, H, W) batch (a tile, a
whole slice, a slab's planes) on its device.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TTA_CHOICES", "TTA_PASSES", "averaged", "check_tta"]

TTA_CHOICES = ("none", "flips", "d4")
TTA_PASSES = {"none": 1, "flips": 4, "d4": 8}

# (quarter turns, flip x): applied as flip then rotate; undone as rotate back then flip
_TRANSFORMS = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),  # identity, flip x, flip y, both
    "d4": tuple((k, f) for k in range(4) for f in (False, True)),
}


def check_tta(kind: str) -> str:
    kind = (kind or "none").lower()
    if kind not in TTA_CHOICES:
        raise ValueError(f"Unknown test-time augmentation {kind!r}; choose {', '.join(TTA_CHOICES)}.")
    return kind


def _apply(x, k: int, flip: bool):
    import torch

    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _undo(y, k: int, flip: bool):
    import torch

    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


def averaged(forward: Callable, x, kind: str = "none"):
    """The mean over the *kind*'s transforms t of t^-1(forward(t(x))), x a (n, C, H, W) batch.
    Quarter turns of a non-square batch swap H and W: *forward* must accept both (a fully
    convolutional network on sides that are multiples of 32 does)."""
    transforms = _TRANSFORMS[check_tta(kind)]
    total = None
    for k, flip in transforms:
        y = _undo(forward(_apply(x, k, flip)), k, flip)
        total = y if total is None else total.add_(y)
    return total if len(transforms) == 1 else total.div_(len(transforms))
