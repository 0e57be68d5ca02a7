"""Batched training augmentations in torch, run on the training device.

The CPU only cuts square windows around the sampled points (uint8, a cheap copy); the
rotation, flips, optional zoom (random resized crop) (one affine ``grid_sample`` per
batch), brightness / contrast, optional Gaussian noise and blur, and the normalisation
happen on the device in one go, so two CPU cores do not starve a GPU.

Two presets. ``Augment()`` (the default) is for the short runs a user waits for: quarter
turns and flips (exact: no resampling), brightness and contrast +-10 %. ``Augment.cem500k()``
is the paper's recipe (SPEC "Segmentation model"): any angle, random resized crop (here the
crop's side is 0.7-1.4 x the crop size, aspect 0.67-1.5, because the source is a window
around a painted point, not a whole image), brightness and contrast +-30 %. On the VNC
mitochondria (random init, 300 iterations of batch 8 at crop 256; benchmarks/RESULTS.md)
the paper's recipe reached IoU 0.47 and the default 0.76: every resampled crop is blurred
by the interpolation, which the images to segment never are, and strong jitter slows a
short run. The paper used its recipe for runs of thousands of iterations (not measured here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Augment", "augment_batch", "window_side"]

IGNORE = 255


@dataclass
class Augment:
    """Which augmentations to use and how strong."""

    rotate: bool = True  # see *angles*
    angles: str = "right"  # "right": quarter turns only (exact); "any": uniform in [-180, 180) degrees
    flips: bool = True  # horizontal and vertical, p 0.5 each
    scale: tuple[float, float] = (1.0, 1.0)  # zoom: side of the source window / crop side
    aspect: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.1  # x * contrast + brightness, both +-value (albumentations style)
    contrast: float = 0.1
    p_intensity: float = 0.75
    noise: bool = False  # Gaussian noise, variance 1e-5 .. 1e-4 (of the [0, 1] range), p 0.5
    blur: bool = False  # Gaussian blur, sigma 0.1 .. 2 px, p 0.5

    PRESETS = ("default", "cem500k")

    @classmethod
    def cem500k(cls) -> "Augment":
        """The CEM500K paper's fine-tuning augmentations (for long runs)."""
        return cls(angles="any", scale=(0.7, 1.4), aspect=(0.67, 1.5), brightness=0.3, contrast=0.3)

    @classmethod
    def preset(cls, name: str) -> "Augment":
        """``"default"`` (short runs: exact quarter turns, flips, +-10 % intensity) or ``"cem500k"``."""
        if name == "default":
            return cls()
        if name == "cem500k":
            return cls.cem500k()
        raise ValueError(f"augmentation preset must be one of {', '.join(cls.PRESETS)}, got {name!r}.")

    def as_dict(self) -> dict:
        return asdict(self)


def window_side(crop: int, aug: Augment) -> int:
    """Side of the uint8 window to cut so that any augmented crop stays inside it."""
    factor = max(aug.scale) * math.sqrt(max(aug.aspect))
    if aug.rotate and aug.angles != "right":
        factor *= math.sqrt(2.0)
    side = int(math.ceil(crop * max(factor, 1.0))) + 2
    # the same parity as the crop: then an unrotated, unzoomed crop samples the window at
    # its pixel centres (an exact copy); an odd margin would sample half-way between
    # pixels, a 2 x 2 box blur on every training crop that the images to segment never have
    return side + (side - crop) % 2


def augment_batch(images, targets, crop: int, aug: Augment, norms, generator, *,
                  train: bool = True):
    """Augment a batch of windows on their device.

    *images*: uint8 tensor (B, W, W); *targets*: uint8 tensor (B, W, W) with 255 =
    ignored. Returns (float input (B, 1, crop, crop) normalised by *norms*, long target
    (B, crop, crop), 255 = ignored). *generator* is a CPU ``torch.Generator`` (random
    parameters are drawn on the CPU, so a run is reproducible on any device).
    """
    import torch
    import torch.nn.functional as F

    device = images.device
    b, wh, ww = images.shape
    x = images.to(torch.float32).unsqueeze(1) / 255.0
    y = targets.to(torch.float32).unsqueeze(1)

    def uniform(lo, hi, n=b):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    if train:
        side = uniform(*aug.scale)
        log_a = uniform(math.log(aug.aspect[0]), math.log(aug.aspect[1]))
        sx = side * torch.exp(log_a / 2)
        sy = side / torch.exp(log_a / 2)
        if not aug.rotate:
            angle = torch.zeros(b)
        elif aug.angles == "right":
            angle = torch.randint(0, 4, (b,), generator=generator) * (math.pi / 2)
        elif aug.angles == "any":
            angle = uniform(-math.pi, math.pi)
        else:
            raise ValueError(f"angles must be 'any' or 'right', got {aug.angles!r}.")
        if aug.flips:
            sx = sx * torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
            sy = sy * torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    else:
        sx = sy = torch.ones(b)
        angle = torch.zeros(b)
    # affine_grid works in normalised coordinates of the input window ([-1, 1]):
    # the crop spans crop/W of it, times the scale, rotated.
    fx, fy = crop / ww, crop / wh
    cos, sin = torch.cos(angle), torch.sin(angle)
    cos, sin = _snap(cos), _snap(sin)  # quarter turns exact (cos(pi/2) is 6e-17, not 0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * sx * fx
    theta[:, 0, 1] = -sin * sy * fx
    theta[:, 1, 0] = sin * sx * fy
    theta[:, 1, 1] = cos * sy * fy
    grid = F.affine_grid(theta.to(device), (b, 1, crop, crop), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    # outside the window (never with the default window side) counts as not annotated
    inside = F.grid_sample(torch.ones_like(y[:, :, :1, :1]).expand(b, 1, wh, ww), grid, mode="nearest",
                           padding_mode="zeros", align_corners=False)
    y = torch.where(inside > 0.5, y, torch.full_like(y, IGNORE))

    if train:
        apply = (torch.rand(b, generator=generator) < aug.p_intensity).float()
        contrast = 1 + uniform(-aug.contrast, aug.contrast) * apply
        bright = uniform(-aug.brightness, aug.brightness) * apply
        x = x * contrast.to(device).view(b, 1, 1, 1) + bright.to(device).view(b, 1, 1, 1)
        if aug.blur:
            x = _gaussian_blur(x, uniform(0.1, 2.0), torch.rand(b, generator=generator) < 0.5)
        if aug.noise:
            var = uniform(1e-5, 1e-4) * (torch.rand(b, generator=generator) < 0.5).float()
            noise = torch.randn(x.shape, generator=generator).to(device)
            x = x + noise * var.sqrt().to(device).view(b, 1, 1, 1)
        x = x.clamp_(0.0, 1.0)
    x = (x - float(norms[0])) / float(norms[1])
    return x, y.squeeze(1).round_().long()


def _snap(values, eps=1e-6):
    """Round values within *eps* of -1, 0 or 1 to them."""
    import torch

    rounded = torch.round(values)
    return torch.where((values - rounded).abs() < eps, rounded, values)


def _gaussian_blur(x, sigma, apply):
    """Per-sample Gaussian blur (separable, one grouped convolution per axis)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    radius = 6
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    identity = torch.zeros_like(k)
    identity[:, radius] = 1
    k = torch.where(apply[:, None], k, identity).to(x.device)
    xs = x.transpose(0, 1)  # (1, B, H, W): one group per sample
    xs = F.pad(xs, (radius, radius, radius, radius), mode="reflect")
    xs = F.conv2d(xs, k.view(b, 1, 1, -1), groups=b)
    xs = F.conv2d(xs, k.view(b, 1, -1, 1), groups=b)
    return xs.transpose(0, 1)
