"""Segment a whole EM volume with a fine-tuned U-Net: 2D stack or orthoplane.

* **stack**: every xy slice is predicted; **orthoplane** (near-isotropic volumes): every
  xy, xz and yz slice is predicted and the three confidence volumes are averaged. Then a
  threshold (one structure, 0.5 by default) or an argmax (several) gives the labels.
* A slice that fits in one tile is predicted whole (padded to a multiple of 32, as the
  original CEM500K code did; of 32 x bin for a binned model); a larger one is cut into overlapping tiles whose
  predictions are blended with a cosine window, so there are no seams.
* Slices go through the network in batches, under ``torch.inference_mode``, in
  channels-last layout, with bf16 (or fp16) autocast on CUDA and on CPUs with native
  bf16; the first batch is also predicted in float32 and the label agreement recorded.
  Reduced precision moves confidences by about 1 %, so voxels near the threshold may
  flip; it is dropped (float32 used) only if labels differ where float32 is confident.
* Probabilities are kept as uint8 (255 = 1.0), per-plane sums as uint16, so memory stays
  near the size of the volume. Volumes can be numpy, dask or zarr arrays; with
  ``out=`` a zarr store, slabs are read and written chunk by chunk (nothing is held in
  memory but one slab) and the work resumes after an interruption.

The model is duck-typed: any object with ``.model`` (a torch module returning logits),
``.classes`` (names, ``classes[0]`` the background; two classes = one sigmoid output,
more = one softmax output per class) and ``.norms`` (mean, std of ``uint8 / 255``).
torch is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._cancel import Cancelled, stoppable
from .uncertainty import (
    confidence_range,
    plane_disagreement,
    slice_scores,
    voxel_uncertainty,
    voxel_uncertainty_torch,
)

__all__ = [
    "MODES",
    "Segmentation",
    "finished_slabs",
    "labels_dtype",
    "open_segmentation",
    "plan_tiles",
    "segment",
]

MODES = ("stack", "orthoplane")
_PLANE_AXIS = {"xy": 0, "xz": 1, "yz": 2}
_STORE_FORMAT = "napari-cem-segmentation"
# Reduced precision is kept when its labels match float32 on >= 99.9 % of the pixels whose
# float32 confidence is at least _CONFIDENT away from the decision (0.5 or the runner-up).
_AGREEMENT_MIN = 0.999
_CONFIDENT = 0.05


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    ``labels``: label values (``classes[i]`` for value i), shape of the input volume, in
    the smallest unsigned dtype that holds them (numpy, or a zarr array with ``out=``).
    ``probabilities``: uint8 confidences (255 = 1.0) or None: shape of the volume for one
    structure (P(classes[1])), (n_classes, *volume shape) for several.
    ``metadata``: mode, threshold, device, precision, float32 agreement, timing, warnings,
    and with an uncertainty its per-slice means (``slice_uncertainty``, 0-1).
    ``uncertainty``: uint8 (255 = most unsure, see :mod:`napari_cem.uncertainty`) or None.
    """

    labels: Any
    probabilities: Any
    classes: list[str]
    metadata: dict = field(default_factory=dict)
    store: Path | None = None
    uncertainty: Any = None

    @property
    def layer_metadata(self) -> dict:
        """What the Labels layer keeps: class names and how the labels were made."""
        return {"napari_cem": {"classes": list(self.classes), "segmentation": dict(self.metadata)}}


def labels_dtype(n_classes: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds label values 0 .. n_classes - 1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_classes - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def plan_tiles(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of *tile* px covering 0 .. length with at least *overlap* px
    shared between neighbours, spread evenly (the first at 0, the last ending at length)."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [int(round(s)) for s in np.linspace(0, length - tile, n)]


def _ramp(n: int) -> np.ndarray:
    """Rising half-cosine of n samples in (0, 1); ramp + reversed ramp == 1 (partition of unity)."""
    t = (np.arange(n) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def _window_1d(starts: list[int], k: int, tile: int) -> np.ndarray:
    """Blending weights along one axis for tile *k*: 1 inside, cosine ramps over the parts
    shared with the previous and next tiles (so overlapping weights sum to 1)."""
    w = np.ones(tile, np.float32)
    if k > 0:
        shared = starts[k - 1] + tile - starts[k]
        if shared > 0:
            w[:shared] = _ramp(shared)
    if k < len(starts) - 1:
        shared = starts[k] + tile - starts[k + 1]
        if shared > 0:
            w[tile - shared:] = np.minimum(w[tile - shared:], _ramp(shared)[::-1])
    return w


def _round_up(n: int, step: int) -> int:
    return max(step, int(math.ceil(n / step)) * step)


# ----------------------------------------------------------------------------------- model
def _model_parts(bundle):
    """(module, classes, mean, std, n_outputs), checking what can be checked before running."""
    import torch

    for attr in ("model", "classes", "norms"):
        if not hasattr(bundle, attr):
            raise ValueError(f"This is not a segmentation model: it has no '{attr}'. Load a "
                             "model bundle (napari_cem.model.load_bundle) or fine-tune one first.")
    module = bundle.model
    if not isinstance(module, torch.nn.Module):
        raise ValueError("The model bundle holds no torch network.")
    classes = [str(c) for c in bundle.classes]
    if len(classes) < 2:
        raise ValueError("A segmentation model needs at least two classes (background and one structure).")
    mean, std = (float(v) for v in bundle.norms)
    if not std > 0:
        raise ValueError(f"The model's normalisation std must be positive, got {std}.")
    first = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first is not None and first.in_channels != 1:
        raise ValueError(f"The model expects {first.in_channels} input channels; EM images are grey "
                         "(1 channel). Use a model built with in_channels=1.")
    n_out = 1 if len(classes) == 2 else len(classes)
    return module, classes, mean, std, n_out


def _model_fingerprint(module) -> str:
    """A cheap checksum of the weights (shapes and sums), to refuse resuming with another model."""
    import torch

    from .model import bin_of

    h = hashlib.sha1(f"bin {bin_of(module)}".encode())  # the same weights binned are another model
    with torch.no_grad():
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            if t.is_floating_point():
                h.update(np.float64(t.double().sum().item()).tobytes())
                h.update(np.float64(t.double().abs().sum().item()).tobytes())
    return h.hexdigest()[:16]


class _Predictor:
    """Runs the network on batches of uint8 slices; returns float probabilities on the device."""

    def __init__(self, bundle, device="auto", tile=1024, overlap=64, batch_size=None,
                 precision="auto", tta="none", engine="auto"):
        import torch

        from .device import autocast_policy, describe_device, select_device
        from .model import size_step
        from .tta import check_tta

        self.tta = check_tta(tta)

        module, self.classes, self.mean, self.std, self.n_out = _model_parts(bundle)
        self.device = select_device(device) if not isinstance(device, torch.device) else device
        info = describe_device(self.device)
        self.device_name = str(info)
        tile, self.step = int(tile), size_step(module)
        if tile < self.step:
            raise ValueError(f"The tile must be at least {self.step} px for this model, got {tile}.")
        self.tile = tile // self.step * self.step
        if int(overlap) < 0:
            raise ValueError(f"The tile overlap must be 0 or more pixels, got {overlap}.")
        self.overlap = min(int(overlap), self.tile // 2)  # more than half a tile only costs time
        precision = (precision or "auto").lower()
        if precision not in ("auto", "float32", "bf16", "fp16"):
            raise ValueError(f"Unknown precision {precision!r}; choose auto, float32, bf16 or fp16.")
        self.fallback = precision == "auto"  # an explicit choice is kept, only checked
        self.precision = autocast_policy(self.device, precision, "inference", info).name
        self.agreement = None  # float32 label agreement of the first batch, when reduced
        self.confident_agreement = None  # the same, on pixels float32 is confident about
        if batch_size in (None, 0, "auto"):
            batch_size = self._auto_batch(info)
        self.batch_size = max(1, int(batch_size))
        # our own copy: the caller's model (maybe training, maybe shown elsewhere) is untouched
        model = copy.deepcopy(module).eval().to(self.device)
        if self.device.type in ("cuda", "cpu"):
            model = model.to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self._windows: dict = {}
        from .engines import OpenVinoNetwork, resolve_engine

        self.engine = resolve_engine(engine, self.device, precision, info)
        self._network = None
        if self.engine == "openvino":  # its own reduced precision; checked against float32 as bf16 is
            try:
                self._network = OpenVinoNetwork(model, _model_fingerprint(module), precision)
            except Exception as exc:  # noqa: BLE001 - auto falls back to torch; an explicit choice says why
                if (engine or "auto").lower() != "auto":
                    raise
                warnings.warn(f"OpenVINO could not convert this model ({exc}); using torch.",
                              RuntimeWarning, stacklevel=2)
                self.engine = "torch"
        if self.engine == "openvino":
            self.precision = "openvino-float32" if precision == "float32" else "openvino"

    def _auto_batch(self, info) -> int:
        if self.device.type != "cuda" or not info.memory_gib:
            return 1  # on CPU a bigger batch gains nothing and costs memory
        # about 1.5 GiB per 1024^2 tile in reduced precision for a ResNet50 U-Net, half free
        per_tile = 1.5 * (self.tile / 1024) ** 2
        return int(np.clip(info.memory_gib * 0.4 / per_tile, 1, 32))

    # -- forward ------------------------------------------------------------------------
    def _forward(self, x, precision: str):
        import torch

        from .device import Precision

        if precision.startswith("openvino"):
            logits = torch.from_numpy(self._network(x.numpy()))
        else:
            if self.device.type in ("cuda", "cpu"):
                x = x.contiguous(memory_format=torch.channels_last)
            with Precision(precision).autocast(self.device.type):
                logits = self.model(x)
        logits = logits.float()
        if logits.ndim != 4 or logits.shape[1] != self.n_out:
            got = logits.shape[1] if logits.ndim == 4 else f"shape {tuple(logits.shape)}"
            raise ValueError(f"The model gives {got} outputs but its {len(self.classes)} classes need "
                             f"{self.n_out} ({'one sigmoid output' if self.n_out == 1 else 'one per class'}).")
        return torch.sigmoid(logits) if self.n_out == 1 else torch.softmax(logits, dim=1)

    def _forward_averaged(self, x, precision: str):
        """Probabilities of the batch, averaged over the test-time augmentation's transforms."""
        from .tta import averaged

        return averaged(lambda t: self._forward(t, precision), x, self.tta)

    def _forward_checked(self, x):
        """Forward in the chosen precision; the very first time, compare labels with float32."""
        import torch

        probs = self._forward_averaged(x, self.precision)
        if self.precision != "float32" and self.agreement is None:
            ref = self._forward_averaged(x[:2], "float32")  # two slices (or tiles) tell enough
            same = _decide(probs[:2], 0.5) == _decide(ref, 0.5)
            self.agreement = float(same.float().mean().item())
            confident = _margin(ref) >= _CONFIDENT
            n_conf = int(confident.sum().item())
            agree = float(same[confident].float().mean().item()) if n_conf else 1.0
            self.confident_agreement = agree
            if agree < _AGREEMENT_MIN:
                then = "continuing in float32" if self.fallback else "kept as requested"
                warnings.warn(f"{self.precision} labels agree with float32 on only {100 * agree:.2f} % "
                              f"of the confidently predicted pixels; {then}.",
                              RuntimeWarning, stacklevel=2)
                if self.fallback:
                    self.precision, self.engine = "float32", "torch"
                    probs = self._forward_averaged(x, "float32")
            del ref
        return probs.to(torch.float32)

    def _window(self, ys, xs, iy, ix, th, tw):
        import torch

        key = (tuple(ys), tuple(xs), iy, ix, th, tw)
        w = self._windows.get(key)
        if w is None:
            w2 = np.outer(_window_1d(ys, iy, th), _window_1d(xs, ix, tw))
            w = torch.from_numpy(w2).to(self.device)
            if len(self._windows) > 64:
                self._windows.clear()
            self._windows[key] = w
        return w

    def predict(self, slices: np.ndarray):
        """Probabilities (n, n_out, H, W), float32 on the device, of uint8 slices (n, H, W)."""
        import torch
        import torch.nn.functional as F

        _, h, w = slices.shape
        x = torch.from_numpy(np.ascontiguousarray(slices)).to(self.device, non_blocking=True)
        x = ((x.float() / 255.0) - self.mean) / self.std
        x = x[:, None]
        hp, wp = _round_up(h, self.step), _round_up(w, self.step)
        if (hp, wp) != (h, w):
            # pad bottom/right to a multiple of 32 (x bin), as the original code did; reflect when it can
            mode = "reflect" if (hp - h) < h and (wp - w) < w else "replicate"
            x = F.pad(x, (0, wp - w, 0, hp - h), mode=mode)
        # cuDNN autotuning pays here: the same few input shapes come back for every batch
        autotune = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = autotune or self.device.type == "cuda"
        try:
            with torch.inference_mode():
                if hp <= self.tile and wp <= self.tile:
                    out = self._forward_checked(x)
                else:
                    out = self._predict_tiled(x)
        finally:
            torch.backends.cudnn.benchmark = autotune
        return out[:, :, :h, :w]

    def _predict_tiled(self, x):
        import torch

        n, _, hp, wp = x.shape
        th, tw = min(self.tile, hp), min(self.tile, wp)
        ys = plan_tiles(hp, th, self.overlap)
        xs = plan_tiles(wp, tw, self.overlap)
        acc = torch.zeros((n, self.n_out, hp, wp), dtype=torch.float32, device=self.device)
        wsum = torch.zeros((hp, wp), dtype=torch.float32, device=self.device)
        jobs = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]
        for iy, ix in jobs:
            wsum[ys[iy]:ys[iy] + th, xs[ix]:xs[ix] + tw] += self._window(ys, xs, iy, ix, th, tw)
        # batch tiles across slices and positions
        items = [(i, iy, ix) for i in range(n) for iy, ix in jobs]
        for b in range(0, len(items), self.batch_size):
            part = items[b:b + self.batch_size]
            crops = torch.stack([x[i, :, ys[iy]:ys[iy] + th, xs[ix]:xs[ix] + tw] for i, iy, ix in part])
            probs = self._forward_checked(crops)
            for (i, iy, ix), p in zip(part, probs):
                acc[i, :, ys[iy]:ys[iy] + th, xs[ix]:xs[ix] + tw] += p * self._window(ys, xs, iy, ix, th, tw)
        return acc / wsum


def _decide(probs, threshold: float):
    """Labels from probabilities (torch, (n, C, H, W)): threshold for one output, else argmax."""
    import torch

    if probs.shape[1] == 1:
        return (probs[:, 0] > threshold).to(torch.uint8)
    return probs.argmax(1)


def _margin(probs):
    """How far each pixel is from flipping: |p - 0.5| for one output, top-1 minus top-2 else."""
    if probs.shape[1] == 1:
        return (probs[:, 0] - 0.5).abs()
    top2 = probs.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def _decide_np(q: np.ndarray, threshold: float, scale: float, dtype) -> np.ndarray:
    """Labels from quantised confidences (C, ...) scaled by *scale* (255 per plane)."""
    if q.shape[0] == 1:
        return (q[0] > threshold * scale).astype(dtype)
    return np.argmax(q, axis=0).astype(dtype)


# ----------------------------------------------------------------------------------- volume
def _as_volume(volume):
    """(array, was_2d): the volume as a 3D array-like (numpy views, dask and zarr stay lazy)."""
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"Segmentation needs a 2D image or a 3D zyx volume; this array has shape {shape}"
                         " (pick one channel or time point first).")
    if min(shape) < 1:
        raise ValueError(f"The volume is empty (shape {shape}).")
    if np.dtype(volume.dtype) != np.uint8:
        raise ValueError(f"The volume is {np.dtype(volume.dtype)}; the model expects 8-bit images. "
                         "Standardise it to uint8 first (napari_cem.io.standardize, or open it with "
                         "napari-cem).")
    if len(shape) == 2:
        return (volume[None] if isinstance(volume, np.ndarray) else _Add0(volume)), True
    return volume, False


class _Add0:
    """A lazy 2D array seen as (1, Y, X)."""

    def __init__(self, a):
        self.a = a
        self.shape = (1, *tuple(int(s) for s in a.shape))
        self.dtype = a.dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.a[key[1:] if len(key) > 1 else slice(None)])[None][key[:1]]


def _read(volume, axis: int, start: int, stop: int) -> np.ndarray:
    """Slices start..stop along *axis* as an (n, H, W) uint8 numpy array."""
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    block = volume[tuple(index)]
    if hasattr(block, "compute"):
        block = block.compute()
    block = np.asarray(block)
    if axis:
        block = np.moveaxis(block, axis, 0)
    return np.ascontiguousarray(block, dtype=np.uint8)


def _index(axis: int, start: int, stop: int, lead: int = 0) -> tuple:
    index = [slice(None)] * (3 + lead)
    index[lead + axis] = slice(start, stop)
    return tuple(index)


def _from_plane(block: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of the moveaxis in _read for (..., n, H, W) blocks with leading channels."""
    if axis == 0:
        return block
    return np.moveaxis(block, -3, -3 + axis)


def _chunk_thickness(volume, axis: int) -> int | None:
    chunks = getattr(volume, "chunks", None)
    if chunks is None:
        return None
    c = chunks[axis]
    if isinstance(c, tuple):  # dask: a tuple of chunk sizes
        return int(max(c)) if c else None
    return int(c)


# ----------------------------------------------------------------------------------- output
class _Memory:
    """Outputs held in numpy arrays."""

    def __init__(self, shape, n_out, dtype, mode, keep_probabilities, classes, keep_uncertainty=False):
        self.labels = np.zeros(shape, dtype)
        self.probabilities = (np.zeros((n_out, *shape), np.uint8) if keep_probabilities else None)
        self.acc = np.zeros((n_out, *shape), np.uint16) if mode == "orthoplane" else None
        self.uncertainty = np.zeros(shape, np.uint8) if keep_uncertainty else None
        # orthoplane with uncertainty: the lowest / highest confidence a plane gave
        self.lo = self.hi = None
        if keep_uncertainty and mode == "orthoplane":
            self.lo = np.full((n_out, *shape), 255, np.uint8)
            self.hi = np.zeros((n_out, *shape), np.uint8)
        self.n_out, self.classes = n_out, list(classes)

    def is_done(self, stage, block) -> bool:
        return False

    def mark_done(self, stage, block) -> None:
        pass

    def add_plane(self, plane, axis, start, stop, q):
        where = _index(axis, start, stop, lead=1)
        part = _from_plane(q, axis)
        self.acc[where] += part
        if self.lo is not None:
            np.minimum(self.lo[where], part, out=self.lo[where])
            np.maximum(self.hi[where], part, out=self.hi[where])

    def read_planes(self, z0, z1):
        return self.acc[:, z0:z1]

    def plane_disagreement(self, z0, z1) -> np.ndarray:
        """Largest range over the classes of the three planes' confidences (0-1)."""
        return confidence_range(self.lo[:, z0:z1], self.hi[:, z0:z1])

    def planes_averaged(self) -> None:
        self.acc = self.lo = self.hi = None  # only needed until the average: free them now

    def finish(self, metadata, was_2d: bool) -> Segmentation:
        labels = self.labels[0] if was_2d else self.labels
        probs = self.probabilities
        if probs is not None:
            probs = probs[0] if self.n_out == 1 else probs
            if was_2d:
                probs = probs[..., 0, :, :]
        unsure = self.uncertainty
        if unsure is not None:
            metadata["slice_uncertainty"] = [round(float(v), 5) for v in slice_scores(unsure)]
            unsure = unsure[0] if was_2d else unsure
        return Segmentation(labels, probs, self.classes, metadata, None, unsure)


class _ZarrStore:
    """Outputs in a zarr group: labels, probabilities, per-plane confidences (orthoplane),
    and the list of finished slabs in the attributes, so an interrupted run resumes."""

    def __init__(self, path, shape, n_out, dtype, mode, keep_probabilities, fingerprint,
                 chunks, class_names, keep_uncertainty=False):
        import zarr

        self.path = Path(path)
        self.fingerprint = fingerprint
        existing = None
        if self.path.exists():
            try:
                existing = zarr.open_group(str(self.path), mode="r+")
            except Exception:  # noqa: BLE001 - any unreadable folder gets the same plain message
                raise ValueError(f"'{self.path}' exists and is not a napari-cem segmentation store; "
                                 "choose another output or delete it.") from None
            info = dict(existing.attrs.get("napari_cem", {}))
            if info.get("format") != _STORE_FORMAT:
                raise ValueError(f"'{self.path}' exists and is not a napari-cem segmentation store; "
                                 "choose another output or delete it.")
            if info.get("fingerprint") != fingerprint:
                raise ValueError(f"'{self.path}' holds a segmentation made with another model, volume "
                                 "or settings; choose another output or delete it to start over.")
            self.group = existing
            self.info = info
        else:
            self.group = zarr.open_group(str(self.path), mode="w")
            self.info = {"format": _STORE_FORMAT, "fingerprint": fingerprint, "done": {},
                         "complete": False, "classes": list(class_names)}
            self.group.create_array("labels", shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                                    dimension_names=tuple("zyx"[-len(shape):]))  # as OME-Zarr asks
            if keep_probabilities:
                self.group.create_array("probabilities", shape=(n_out, *shape), chunks=(1, *chunks),
                                        dtype=np.uint8, fill_value=0)
            if mode == "orthoplane":
                for plane in ("xy", "xz", "yz"):
                    self.group.create_array(f"planes_{plane}", shape=(n_out, *shape), chunks=(1, *chunks),
                                            dtype=np.uint8, fill_value=0)
            if keep_uncertainty:
                self.group.create_array("uncertainty", shape=shape, chunks=chunks, dtype=np.uint8,
                                        fill_value=0)
            self._save_info()
        self.labels = self.group["labels"]
        self.probabilities = self.group["probabilities"] if "probabilities" in self.group else None
        self.uncertainty = self.group["uncertainty"] if "uncertainty" in self.group else None
        self._done = {k: set(v) for k, v in self.info.get("done", {}).items()}

    def _save_info(self):
        self.group.attrs["napari_cem"] = self.info

    def is_done(self, stage, block) -> bool:
        return int(block) in self._done.get(stage, set())

    def mark_done(self, stage, block) -> None:
        self._done.setdefault(stage, set()).add(int(block))
        self.info["done"] = {k: sorted(v) for k, v in self._done.items()}
        self._save_info()

    def add_plane(self, plane, axis, start, stop, q):
        self.group[f"planes_{plane}"][_index(axis, start, stop, lead=1)] = _from_plane(q, axis)

    def read_planes(self, z0, z1):
        total = None
        for plane in ("xy", "xz", "yz"):
            part = np.asarray(self.group[f"planes_{plane}"][:, z0:z1]).astype(np.uint16)
            total = part if total is None else total + part
        return total

    def plane_disagreement(self, z0, z1) -> np.ndarray:
        return plane_disagreement([self.group[f"planes_{plane}"][:, z0:z1] for plane in ("xy", "xz", "yz")])

    def planes_averaged(self) -> None:
        pass  # kept until finish(): a rerun after an interruption may still need them

    def finish(self, metadata, was_2d: bool) -> Segmentation:
        """Mark the store complete, drop the per-plane confidences, open it as the result."""
        self.info["complete"] = True
        self.info["metadata"] = metadata
        self._save_info()
        for plane in ("xy", "xz", "yz"):
            name = f"planes_{plane}"
            if name in self.group:
                del self.group[name]  # per-plane confidences are only needed until the average
        if self.uncertainty is not None:
            metadata["slice_uncertainty"] = [round(float(v), 5) for v in slice_scores(self.uncertainty)]
            self.info["metadata"] = metadata
            self._save_info()
        result = open_segmentation(self.path)
        result.metadata.update(metadata)
        if was_2d:
            result.labels = np.asarray(result.labels[0])
            if result.probabilities is not None:
                result.probabilities = np.asarray(result.probabilities[..., 0, :, :])
            if result.uncertainty is not None:
                result.uncertainty = np.asarray(result.uncertainty[0])
        return result


def open_segmentation(path) -> Segmentation:
    """Open a finished (or partial) zarr store written by :func:`segment` with ``out=``."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    info = dict(group.attrs.get("napari_cem", {}))
    if info.get("format") != _STORE_FORMAT:
        raise ValueError(f"'{path}' is not a napari-cem segmentation store.")
    probs = group["probabilities"] if "probabilities" in group else None
    if probs is not None and probs.shape[0] == 1:
        probs = probs[0]
    meta = dict(info.get("metadata", {}))
    meta["complete"] = bool(info.get("complete"))
    unsure = group["uncertainty"] if "uncertainty" in group else None
    return Segmentation(group["labels"], probs, list(info.get("classes", [])), meta, Path(path), unsure)


def _check_memory(shape, n_out, dtype, mode, keep_probabilities, in_memory, slabs) -> None:
    """Refuse, before any work, a segmentation that cannot fit in this machine's memory.

    Counted: the outputs held in memory (none with a zarr ``out``) and, per plane, one slab
    of input and outputs plus the float32 work of one slice (input, padding, blended
    confidences). A rough upper bound; only a clear excess is refused.
    """
    from .device import available_memory

    available = available_memory()
    if available is None:
        return
    voxels = math.prod(shape)
    held = 0
    if in_memory:
        held = voxels * np.dtype(dtype).itemsize
        held += voxels * n_out if keep_probabilities else 0
        held += voxels * n_out * 2 if mode == "orthoplane" else 0
    work = 0
    for plane, thickness in slabs.items():
        axis = _PLANE_AXIS[plane]
        plane_px = voxels // max(shape[axis], 1)
        work = max(work, plane_px * (int(thickness) * (2 + n_out) + 12 + 9 * n_out))
    if held + work <= available:
        return
    size = " x ".join(str(s) for s in shape)
    if work > available:
        raise ValueError(
            f"One slice of this {size} volume needs about {_gib(work)} to segment, but only "
            f"{_gib(available)} of memory is available. Segment a crop or a lower resolution level.")
    raise ValueError(
        f"Segmenting this {size} volume in memory needs about {_gib(held + work)}, but only "
        f"{_gib(available)} is available. Write the result to a zarr store instead "
        "(napari-cem segment --zarr, or out= in Python): only one slab is then held in memory.")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 30):,.1f} GiB"


def finished_slabs(path) -> tuple[list[tuple[int, int]], int]:
    """``(z ranges whose labels are final, number of slabs)`` of a store written by segment.

    Labels are final slab by slab: in stack mode when the slab's xy slices are predicted,
    in orthoplane mode when the three planes are averaged ("combine"). A finished store
    has every slab.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r")
    info = dict(group.attrs.get("napari_cem", {}))
    labels = group["labels"]
    depth, step = int(labels.shape[0]), int(labels.chunks[0])
    n_slabs = max(1, math.ceil(depth / step))
    if info.get("complete"):
        return [(0, depth)], n_slabs
    stage = "combine" if "planes_xy" in group else "xy"  # orthoplane stores keep per-plane arrays
    done = sorted(int(b) for b in info.get("done", {}).get(stage, []))
    return [(b * step, min((b + 1) * step, depth)) for b in done], n_slabs


# ----------------------------------------------------------------------------------- main
def segment(
    volume,
    bundle,
    mode: str = "stack",
    threshold: float = 0.5,
    tile: int = 1024,
    overlap: int = 64,
    batch_size: int | None = None,
    device="auto",
    out=None,
    keep_probabilities: bool = False,
    keep_uncertainty: bool = False,
    voxel_size=None,
    isotropy_tolerance: float = 0.2,
    precision: str = "auto",
    slab: int | None = None,
    tta: str = "none",
    z_smooth: bool = False,
    engine: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Segmentation:
    """Segment *volume* (zyx uint8, or a 2D yx image) with *bundle*; see the module docstring.

    mode: ``"stack"`` (xy slices) or ``"orthoplane"`` (xy, xz and yz, averaged; for
    near-isotropic volumes: with a *voxel_size* (z, y, x) that is not, or none, it warns).
    threshold: for one structure, P > threshold is foreground; several classes use argmax.
    tile / overlap: slices larger than *tile* px are predicted in tiles overlapping by at
    least *overlap* px, blended with a cosine window. batch_size: slices (or tiles) per
    forward; None picks one for the device. device: "auto", "cuda", "mps" or "cpu".
    out: a zarr store path: labels (and probabilities) are written there slab by slab and
    a rerun with the same model, volume and settings resumes where it stopped.
    keep_probabilities: also return uint8 confidences (255 = 1.0).
    keep_uncertainty: also return how unsure each voxel is (uint8, 255 = most; see
    :mod:`napari_cem.uncertainty`) and each slice's mean in ``metadata["slice_uncertainty"]``.
    precision: "auto" (bf16/fp16 autocast where it pays; float32 instead if the first
    batch's labels differ from float32 where float32 is confident), "float32", "bf16" or
    "fp16" (kept even if the check disagrees, with a warning).
    tta: test-time augmentation, "none", "flips" (4 passes) or "d4" (8: quarter turns and
    flips), the probabilities averaged (:mod:`napari_cem.tta`).
    engine: "auto" (OpenVINO on a CPU with native bf16 when installed, else torch), "torch" or
        "openvino" (CPU; :mod:`napari_cem.engines`).
    z_smooth: stack mode, in memory: threshold each slice's confidences averaged with its
    two neighbours' (:mod:`napari_cem.smoothing`), for flicker between anisotropic sections.
    progress(done, total, stage) is called after every batch; should_stop() is polled and
    a True answer raises napari_cem._cancel.Cancelled (finished slabs of *out* are kept).
    """
    t0 = time.perf_counter()
    plan = _plan(volume, bundle, mode=mode, threshold=threshold, tile=tile, overlap=overlap,
                 batch_size=batch_size, device=device, out=out,
                 keep_probabilities=keep_probabilities, keep_uncertainty=keep_uncertainty,
                 voxel_size=voxel_size,
                 isotropy_tolerance=isotropy_tolerance, precision=precision, slab=slab, tta=tta,
                 z_smooth=z_smooth, engine=engine)
    count = _Count(plan.total, progress)
    count.add(0, plan.stage(plan.planes[0]))  # the total is known before the first slice
    with stoppable(plan.predictor.model, should_stop):
        for plane in plan.planes:
            _predict_plane(plan, plane, count, should_stop)
        if plan.mode == "orthoplane":
            _average_planes(plan, count, should_stop)
    if plan.z_smooth:
        _smooth_and_decide(plan, keep_probabilities)
    return plan.store.finish(plan.metadata(time.perf_counter() - t0), plan.was_2d)


def _smooth_and_decide(plan: _Plan, keep_probabilities: bool) -> None:
    """Stack mode with z_smooth: the labels again, from the confidences smoothed across slices."""
    from .smoothing import smooth_across_slices

    store = plan.store
    q = smooth_across_slices(store.probabilities)
    for z in range(q.shape[1]):  # slice by slice: no full-volume temporary
        store.labels[z] = _decide_np(q[:, z], plan.threshold, 255.0, plan.dtype)
    if not keep_probabilities:
        store.probabilities = None


def _check_stop(should_stop) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("Segmentation cancelled.")


class _Count:
    """The slices done so far, reported as ``progress(done, total, stage)``."""

    def __init__(self, total: int, progress):
        self.done, self.total, self.progress = 0, total, progress

    def add(self, n: int, stage: str) -> None:
        self.done += int(n)
        if self.progress is not None:
            self.progress(self.done, self.total, stage)


@dataclass
class _Plan:
    """What one segmentation run does: the volume, the predictor, the planes and their slab
    thickness, and where the outputs go."""

    vol: Any
    was_2d: bool
    mode: str
    threshold: float
    predictor: _Predictor
    dtype: Any
    planes: tuple
    slabs: dict
    store: Any  # _Memory or _ZarrStore
    voxel_size: Any
    notes: list
    z_smooth: bool = False

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.vol.shape)

    @property
    def total(self) -> int:
        """Slices to predict, plus the xy slabs to average in orthoplane mode."""
        n = sum(self.shape[_PLANE_AXIS[p]] for p in self.planes)
        return n + (self.shape[0] if self.mode == "orthoplane" else 0)

    def stage(self, plane: str) -> str:
        return "xy slices" if self.mode == "stack" else f"{plane} planes"

    def metadata(self, seconds: float) -> dict:
        pr = self.predictor
        return {
            "mode": self.mode, "threshold": self.threshold, "classes": list(pr.classes),
            "device": pr.device_name, "precision": pr.precision,
            "float32_agreement": pr.agreement,
            "float32_agreement_confident": pr.confident_agreement, "tile": pr.tile,
            "overlap": pr.overlap, "batch_size": pr.batch_size, "tta": pr.tta, "z_smooth": self.z_smooth,
            "engine": pr.engine,
            "seconds": round(seconds, 3),
            "voxel_size": None if self.voxel_size is None else [float(v) for v in self.voxel_size],
            "warnings": self.notes,
        }


def _orthoplane_notes(was_2d: bool, shape, voxel_size, tolerance) -> list[str]:
    """Refuse orthoplane on a 2D image; warn when the voxels are unknown or anisotropic."""
    from .patches import is_isotropic

    if was_2d or shape[0] == 1:
        raise ValueError("Orthoplane segmentation needs a 3D volume; this is a single 2D image. "
                         "Use the 2D stack mode.")
    if voxel_size is None:
        return ["The voxel size is unknown: orthoplane assumes the volume is near-isotropic."]
    if not is_isotropic(voxel_size, tolerance):
        vs = " x ".join(f"{float(v):g}" for v in voxel_size)
        return [f"The voxel size ({vs}) is not near-isotropic: xz and yz slices look unlike "
                "the xy slices the model learnt; the 2D stack mode is advised."]
    return []


def _plan(volume, bundle, *, mode, threshold, tile, overlap, batch_size, device, out,
          keep_probabilities, voxel_size, isotropy_tolerance, precision, slab,
          keep_uncertainty=False, tta="none", z_smooth=False, engine="auto") -> _Plan:
    """Check the settings, build the predictor, choose the slabs and the output store."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose 'stack' or 'orthoplane'.")
    z_smooth = bool(z_smooth)
    if z_smooth and mode != "stack":
        raise ValueError("Smoothing across slices is for the 2D stack mode (orthoplane already "
                         "averages three directions).")
    if z_smooth and out is not None:
        raise ValueError("Smoothing across slices works in memory; it cannot be combined with a zarr output.")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"The threshold is a probability between 0 and 1, got {threshold}.")
    vol, was_2d = _as_volume(volume)
    shape = tuple(int(s) for s in vol.shape)
    notes: list[str] = []
    if mode == "orthoplane":
        notes = _orthoplane_notes(was_2d, shape, voxel_size, isotropy_tolerance)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)

    predictor = _Predictor(bundle, device=device, tile=tile, overlap=overlap,
                           batch_size=batch_size, precision=precision, tta=tta, engine=engine)
    n_out, classes = predictor.n_out, predictor.classes
    dtype = labels_dtype(len(classes))
    planes = ("xy",) if mode == "stack" else ("xy", "xz", "yz")
    chunks = _store_chunks(vol, shape, mode, slab) if out is not None else None
    slabs = {p: _slab_thickness(vol, shape, _PLANE_AXIS[p], n_out, slab, chunks) for p in planes}
    _check_memory(shape, n_out, dtype, mode, keep_probabilities or z_smooth, out is None, slabs)
    if out is not None:
        fingerprint = hashlib.sha1(repr((shape, mode, threshold, predictor.tile, predictor.overlap,
                                         tuple(classes), predictor.mean, predictor.std,
                                         (keep_probabilities, keep_uncertainty) if keep_uncertainty else keep_probabilities,
                                         chunks, _model_fingerprint(predictor.model))
                                        + ((predictor.tta,) if predictor.tta != "none" else ())
                                        + ((predictor.engine,) if predictor.engine != "torch" else ())
                                        ).encode()).hexdigest()[:20]
        store = _ZarrStore(out, shape, n_out, dtype, mode, keep_probabilities, fingerprint, chunks, classes,
                           keep_uncertainty)
    else:
        store = _Memory(shape, n_out, dtype, mode, keep_probabilities or z_smooth, classes, keep_uncertainty)
    return _Plan(vol, was_2d, mode, threshold, predictor, dtype, planes, slabs, store, voxel_size, notes,
                 z_smooth)


def _store_chunks(vol, shape, mode, slab) -> tuple:
    """Chunks of a zarr output: cubes in orthoplane mode (read along every axis), else xy slabs."""
    if mode == "orthoplane":
        c = 64 if not slab else int(slab)
        return (min(c, shape[0]), min(c, shape[1]), min(c, shape[2]))
    c = int(slab) if slab else (_chunk_thickness(vol, 0) or 16)
    return (min(c, shape[0]), min(512, shape[1]), min(512, shape[2]))


def _slab_thickness(vol, shape, axis, n_out, slab, chunks) -> int:
    """Slices read at once along *axis*: the given slab, the output's (or a lazy input's)
    chunk, else what fits a 256 MiB budget."""
    if slab:
        return max(1, int(slab))
    c = chunks[axis] if chunks is not None else _chunk_thickness(vol, axis)
    if c:
        return int(c)
    plane_px = np.prod([s for i, s in enumerate(shape) if i != axis])
    return int(np.clip((256 << 20) // max(plane_px * (n_out + 1) * 2, 1), 1, shape[axis]))


def plane_blocks(plan: _Plan, plane: str):
    """(block index, first slice, end slice) of each slab of one plane direction."""
    step, size = plan.slabs[plane], plan.shape[_PLANE_AXIS[plane]]
    for b, start in enumerate(range(0, size, step)):
        yield b, start, min(start + step, size)


def _predict_plane(plan: _Plan, plane: str, count: _Count, should_stop) -> None:
    """Predict every slice of one plane direction, slab by slab (finished slabs skipped)."""
    axis, store = _PLANE_AXIS[plane], plan.store
    for b, start, stop in plane_blocks(plan, plane):
        if store.is_done(plane, b):
            count.add(stop - start, plan.stage(plane))
            continue
        _check_stop(should_stop)
        outputs = predict_block(plan.predictor, _read(plan.vol, axis, start, stop), **block_options(plan),
                                on_batch=lambda n: count.add(n, plan.stage(plane)), should_stop=should_stop)
        store_block(plan, plane, start, stop, *outputs)
        store.mark_done(plane, b)


def block_options(plan: _Plan) -> dict:
    """What :func:`predict_block` needs to know of a run besides the predictor."""
    store = plan.store
    return {"stack": plan.mode == "stack", "threshold": plan.threshold, "dtype": np.dtype(plan.dtype).name,
            "keep_q": plan.mode == "orthoplane" or store.probabilities is not None,
            "keep_unsure": plan.mode == "stack" and store.uncertainty is not None}


def store_block(plan: _Plan, plane: str, start: int, stop: int, labels, q, unsure) -> None:
    """Write one predicted slab of *plane* (slices start..stop along its axis) into the outputs."""
    store = plan.store
    if plan.mode == "stack":
        store.labels[start:stop] = labels
        if store.probabilities is not None:
            store.probabilities[:, start:stop] = q
        if unsure is not None:
            store.uncertainty[start:stop] = unsure
    else:
        store.add_plane(plane, _PLANE_AXIS[plane], start, stop, q)


def predict_block(predictor: _Predictor, block, *, stack: bool, threshold: float, dtype, keep_q: bool,
                  keep_unsure: bool, on_batch=None, should_stop=None):
    """(labels, uint8 confidences, uint8 uncertainty; each or None) of one slab of slices,
    batch by batch; *on_batch(n)* after each batch. Used in this process and on cluster workers."""
    n, h, w = block.shape
    q = np.empty((predictor.n_out, n, h, w), np.uint8) if keep_q else None
    labels = np.empty((n, h, w), np.dtype(dtype)) if stack else None
    unsure = np.empty((n, h, w), np.uint8) if stack and keep_unsure else None
    bs = predictor.batch_size if max(h, w) <= predictor.tile else 1
    for i in range(0, n, bs):
        _check_stop(should_stop)
        probs = predictor.predict(block[i:i + bs])
        if labels is not None:
            labels[i:i + bs] = _decide(probs, threshold).cpu().numpy()
        if q is not None:
            q[:, i:i + bs] = _quantise(probs).cpu().numpy().transpose(1, 0, 2, 3)
        if unsure is not None:
            unsure[i:i + bs] = _quantise(voxel_uncertainty_torch(probs)).cpu().numpy()
        del probs
        if on_batch is not None:
            on_batch(min(bs, n - i))
    return labels, q, unsure


def _average_planes(plan: _Plan, count: _Count, should_stop) -> None:
    """Orthoplane: the labels (and confidences) from the mean of the three planes, per xy slab."""
    store, step, z_size = plan.store, plan.slabs["xy"], plan.shape[0]
    for b, z0 in enumerate(range(0, z_size, step)):
        z1 = min(z0 + step, z_size)
        if not store.is_done("combine", b):
            _check_stop(should_stop)
            summed = store.read_planes(z0, z1)  # uint16, 3 x 255 = certain
            store.labels[z0:z1] = _decide_np(summed, plan.threshold, 3 * 255.0, plan.dtype)
            if store.probabilities is not None:
                store.probabilities[:, z0:z1] = ((summed + 1) // 3).astype(np.uint8)
            if store.uncertainty is not None:
                unsure = np.maximum(voxel_uncertainty(summed / np.float32(3 * 255.0)),
                                    store.plane_disagreement(z0, z1))
                store.uncertainty[z0:z1] = (unsure * 255.0 + 0.5).astype(np.uint8)
            del summed
            store.mark_done("combine", b)
        count.add(z1 - z0, "averaging planes")
    store.planes_averaged()


def _quantise(probs):
    """float probabilities in [0, 1] -> uint8 (255 = 1.0), rounded."""
    import torch

    return (probs * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
