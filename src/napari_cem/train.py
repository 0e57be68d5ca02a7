"""Fine-tune a U-Net (ResNet encoder, pre-trained and frozen when weights are given) on
painted labels.

Label convention (what the user paints, in a Labels layer of the image's shape):

* 0 = not annotated: ignored by the loss;
* 1..K = painted values; *class_names* (optional) names them (``class_names[i-1]`` is the
  name of value ``i``); a painted value above ``len(class_names)`` is an error.
* The **background** is, in this order: the value given as *background_label*; else the
  value whose name is "background"; else, with *complete_slices*, the unpainted pixels
  (every painted value is then a structure); else value 1.
* *complete_slices*: in every slice that holds paint (or inside every ROI rectangle given
  in *rois*), unpainted pixels (0) are background.

The bundle's ``classes`` follow the output convention of ``napari_cem.model``:
``classes[0]`` is the background and the other painted values follow in ascending order,
so predictions come out as napari labels with 0 = background.

``finetune(...)`` is a generator: it yields ``TrainProgress`` after every iteration and
returns the ``ModelBundle`` (``run_finetune`` drives it for you). A stop request
(*should_stop*) ends training early and still returns the model trained so far; a stop
before the first iteration raises ``napari_cem._cancel.Cancelled``.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._cancel import Cancelled, stoppable
from .augment import IGNORE, Augment, augment_batch, window_side
from .model import ARCHS, pretty_encoder
from .patches import is_isotropic

__all__ = ["FREEZE_CHOICES", "FinetuneConfig", "TrainProgress", "TrainingData", "class_weights", "finetune",
           "masked_loss", "prepare_training_data", "run_finetune"]

FREEZE_CHOICES = ("auto", "encoder", "layer4", "none")
ARCH_CHOICES = ("auto", *ARCHS)
ENCODER_BN_CHOICES = ("keep", "adapt")
#: what "auto" says on a CPU that trains in float32 (no native bf16), where the ResNet50 is
#: slowest: the faster model and its measured cost (VNC mito, RESULTS.md, issue 17). It does
#: not reach the ResNet50's IoU within 0.02 in half the time, so auto keeps the ResNet50.
CPU_FLOAT32_HINT = ("resnet18-slim trains 2.4x faster here, about 0.03 IoU lower on the VNC mitochondria; "
                    "binned 2 x 2 it trains 3.7x faster again, for organelles as large as mitochondria")


@dataclass
class TrainProgress:
    """One step of training, as shown by the widget and the CLI."""

    iteration: int  # iterations done so far
    total: int
    loss: float
    lr: float
    train_iou: float | None
    batch_size: int
    seconds: float  # since the start of training
    message: str = ""  # notices such as "GPU out of memory: batch halved to 8"
    painted: int = 0  # annotated pixels in use (it grows when paint is picked up while training)
    preview: np.ndarray | None = field(default=None, repr=False)
    evaluation: object = None  # what *evaluate(bundle)* returned at this iteration, if asked


@dataclass
class TrainingData:
    """Image and target views ready for crop sampling."""

    views: list  # [(image (n, H, W) uint8, target (n, H, W) uint8, plane name)]
    classes: list[str]  # output classes, [0] = background
    value_map: dict[int, int]  # painted value -> output class (0 -> 0 in complete slices)
    fractions: list[float]  # share of each output class among annotated pixels
    n_annotated: int
    warnings: list[str]
    slice_weights: list  # per view: annotated pixels per slice (float64)


# -- labels -> targets -----------------------------------------------------------------------
def prepare_training_data(image, labels, *, class_names: Sequence[str] | None = None,
                          background_label: int | None = None, complete_slices: bool = False,
                          rois: Sequence[Sequence[int]] | None = None, planes: str = "auto",
                          voxel_size=None) -> TrainingData:
    """Check the user's image and labels and turn the labels into training targets.

    Raises ValueError with a plain message for: shapes that differ, no paint, a label value
    above the class count, a single class only.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    _check_image_and_labels(image, labels)
    painted = [int(v) for v in np.unique(labels) if v != 0]
    if not painted and not rois:
        raise ValueError("Nothing is painted: paint a few regions of each class in the Labels layer "
                         "(0 = not annotated), including some background.")
    names = _check_names(class_names, painted)
    bg = _background_value(background_label, names, complete_slices)
    classes, value_map, warnings = _classes(names, painted, bg)
    target = _targets(labels, value_map)
    if complete_slices:
        _unpainted_is_background(target, labels, image.ndim, rois)
    elif bg not in painted:
        raise ValueError(f"No background is painted (value {bg}, '{classes[0]}'): paint some background, "
                         "or use 'painted slices are complete' when every painted slice is fully labelled.")
    annotated = target != IGNORE
    n_annotated = int(annotated.sum())
    counts = np.bincount(target[annotated].ravel(), minlength=len(classes))[: len(classes)]
    if (counts > 0).sum() < 2:
        raise ValueError("The annotated pixels hold only one class: paint at least one structure "
                         "and the background.")
    fractions = (counts / max(n_annotated, 1)).tolist()
    views, slice_weights = _views(image, target, annotated, planes, voxel_size)
    return TrainingData(views=views, classes=classes, value_map=value_map, fractions=fractions,
                        n_annotated=n_annotated, warnings=warnings, slice_weights=slice_weights)


def _check_image_and_labels(image: np.ndarray, labels: np.ndarray) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(f"The image must be 2D or 3D (a stack of slices), got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"The image must be 8-bit (uint8), got {image.dtype}; load it with "
                         "napari-cem's reader, which standardises it.")
    if labels.shape != image.shape:
        raise ValueError(f"The labels (shape {labels.shape}) and the image (shape {image.shape}) "
                         "must have the same shape.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The labels must be integers, got {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError("The labels hold negative values; use 0 for 'not annotated' and 1, 2, ... "
                         "for the classes.")


def _check_names(class_names, painted: list[int]) -> list[str] | None:
    """The user's class names (of the values 1, 2, ...), checked against the paint."""
    names = list(class_names) if class_names else None
    if names is None:
        return None
    names = [str(n).strip() for n in names]
    if any(not n for n in names):
        raise ValueError("Class names must not be empty.")
    if len(set(n.lower() for n in names)) != len(names):
        raise ValueError(f"Class names must be distinct, got {', '.join(names)}.")
    too_high = [v for v in painted if v > len(names)]
    if too_high:
        raise ValueError(f"Label value {too_high[0]} is painted but there are only {len(names)} "
                         f"classes ({', '.join(names)}); add a class name or repaint.")
    return names


def _name_of(value: int, names: list[str] | None) -> str:
    if names is not None and 1 <= value <= len(names):
        return names[value - 1]
    return "background" if value == 0 else f"class {value}"


def _background_value(background_label, names, complete_slices: bool) -> int:
    """Which painted value is background (0: the unpainted pixels of complete slices)."""
    if background_label is not None:
        bg = int(background_label)
        if bg < 0 or (names is not None and bg > len(names)):
            raise ValueError(f"Background label {bg} is not one of the classes.")
        if bg == 0 and not complete_slices:
            raise ValueError("Background label 0 (unpainted) needs 'painted slices are complete'.")
        return bg
    if names is not None and any(n.lower() == "background" for n in names):
        return [n.lower() for n in names].index("background") + 1
    return 0 if complete_slices else 1


def _classes(names, painted: list[int], bg: int):
    """(output classes, painted value -> output class, warnings): background first."""
    warnings: list[str] = []
    fg_values = [v for v in painted if v != bg]
    if names is not None:
        unpainted = [names[v - 1] for v in range(1, len(names) + 1) if v != bg and v not in painted]
        if unpainted:
            warnings.append(f"no paint for {', '.join(unpainted)}: the model will not learn "
                            f"{'it' if len(unpainted) == 1 else 'them'}.")
    if not fg_values:
        only = _name_of(bg, names) if bg in painted else _name_of(painted[0], names)
        raise ValueError(f"Only one class is painted ({only}): "
                         "paint at least one structure and the background.")
    if len(fg_values) + 1 > IGNORE:
        raise ValueError(f"Too many classes ({len(fg_values) + 1}); at most {IGNORE - 1} are supported.")
    bg_name = _name_of(bg, names) if (bg != 0 and names is not None) else "background"
    classes = [bg_name] + [_name_of(v, names) for v in fg_values]
    if len(set(c.lower() for c in classes)) != len(classes):
        raise ValueError(f"Class names must be distinct, got {', '.join(classes)}.")
    value_map = {v: i + 1 for i, v in enumerate(fg_values)}
    if bg != 0:
        value_map[bg] = 0
    return classes, value_map, warnings


def _targets(labels: np.ndarray, value_map: dict[int, int]) -> np.ndarray:
    """Output class per pixel; IGNORE where nothing is painted."""
    top = max(int(labels.max()), max(value_map, default=0))  # (a slice may lack some values)
    if top <= 65535:
        lut = np.full(top + 1, IGNORE, np.uint8)
        for v, c in value_map.items():
            lut[v] = c
        return lut[labels]
    target = np.full(labels.shape, IGNORE, np.uint8)
    for v, c in value_map.items():
        target[labels == v] = c
    return target


def _unpainted_is_background(target, labels, ndim: int, rois) -> None:
    """Complete slices: unpainted pixels inside every ROI (or every slice holding paint)
    become background, in place."""
    target3 = target[None] if ndim == 2 else target
    labels3 = labels[None] if ndim == 2 else labels
    for z in range(len(labels3)):
        _unpainted_is_background_in(target3[z], labels3[z], z, ndim, rois)


def _unpainted_is_background_in(target, labels, z: int, ndim: int, rois) -> None:
    """The complete-slices rule for slice *z* (2D *target* and *labels*), in place: inside
    the ROIs on it (a 4-value ROI is on every slice), else on the whole slice if painted."""
    if not rois:
        if labels.any():
            target[labels == 0] = 0
        return
    for roi in rois:
        roi = [int(round(float(r))) for r in roi]
        if ndim == 3 and len(roi) == 5:
            if roi[0] != z:
                continue
            y0, x0, y1, x1 = roi[1:]
        elif len(roi) == 4:
            y0, x0, y1, x1 = roi
        else:
            raise ValueError(f"An ROI must be (z, y0, x0, y1, x1) for a volume or (y0, x0, y1, x1), got {roi}.")
        region = (slice(max(y0, 0), y1), slice(max(x0, 0), x1))
        sub = target[region]
        sub[labels[region] == 0] = 0


def _views(image, target, annotated, planes: str, voxel_size):
    """The (image, target, plane) stacks to crop from (xz and yz too for isotropic volumes
    with planes "all"/"auto"), and the annotated pixels per slice of each."""
    if planes == "auto":
        planes = "all" if image.ndim == 3 and is_isotropic(voxel_size) else "xy"
    if planes not in ("xy", "all"):
        raise ValueError(f"planes must be 'auto', 'xy' or 'all', got {planes!r}.")
    img3 = image[None] if image.ndim == 2 else image
    tgt3 = target[None] if image.ndim == 2 else target
    views = [(img3, tgt3, "xy")]
    if planes == "all" and image.ndim == 3:
        views += [(img3.transpose(1, 0, 2), tgt3.transpose(1, 0, 2), "xz"),
                  (img3.transpose(2, 0, 1), tgt3.transpose(2, 0, 1), "yz")]
    return views, _slice_weights(views, annotated[None] if image.ndim == 2 else annotated)


def _slice_weights(views, ann3) -> list:
    """Annotated pixels per slice of each view (where crops are drawn from)."""
    return [ann3.sum(axis={"xy": (1, 2), "xz": (0, 2), "yz": (0, 1)}[plane]).astype(np.float64)
            for _, _, plane in views]


class _LivePaint:
    """Paint the user adds or changes while training: every *refresh_s* seconds the live
    labels are compared with the copy training started from, and the changed slices' targets
    are rebuilt (the comparison runs in the training thread, never on the UI's)."""

    def __init__(self, live, labels, data: TrainingData, complete_slices: bool, rois, refresh_s: float):
        self.live, self.labels, self.data = live, labels, data
        self.complete, self.rois = complete_slices, rois
        self.refresh_s = float(refresh_s)
        self.last = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.refresh_s

    def pick_up(self) -> str:
        """Take the changed slices; a note for the user ("" when nothing changed)."""
        self.last = time.perf_counter()
        live = np.asarray(self.live)
        if live.shape != self.labels.shape:
            return ""
        live3 = live[None] if live.ndim == 2 else live
        mine3 = self.labels[None] if self.labels.ndim == 2 else self.labels
        changed = np.flatnonzero((live3 != mine3).reshape(len(mine3), -1).any(1))
        if not len(changed):
            return ""
        target3 = self.data.views[0][1]  # xy targets; the xz / yz views are views of them
        old = target3[changed].copy()
        for z in changed:
            mine3[z] = live3[z]
            target3[z] = self._targets_of(mine3, z)
        annotated = target3 != IGNORE
        n_annotated = int(annotated.sum())
        if n_annotated == 0:  # everything erased: keep training on what there was
            target3[changed] = old
            return "all paint erased: training goes on with the paint it had"
        counts = np.bincount(target3[annotated].ravel(), minlength=len(self.data.classes))
        self.data.fractions = (counts[: len(self.data.classes)] / n_annotated).tolist()
        self.data.n_annotated = n_annotated
        self.data.slice_weights = _slice_weights(self.data.views, annotated)
        new = sorted(set(np.unique(live3[changed]).tolist()) - set(self.data.value_map) - {0})
        note = f"paint picked up on {len(changed)} slice{'s' if len(changed) > 1 else ''}"
        if new:
            note += (f"; value{'s' if len(new) > 1 else ''} {', '.join(map(str, new))} "
                     "are new classes: a new model learns them")
        return note

    def _targets_of(self, labels3, z: int) -> np.ndarray:
        target = _targets(labels3[z], self.data.value_map)
        if self.complete:
            _unpainted_is_background_in(target, labels3[z], z, self.labels.ndim, self.rois)
        return target


def class_weights(fractions: Sequence[float]) -> list[float]:
    """SPEC: 0.1 for the background, 3 for classes under 10 % of the annotated pixels, else 1."""
    return [0.1 if i == 0 else (3.0 if f < 0.10 else 1.0) for i, f in enumerate(fractions)]


# -- sampling ----------------------------------------------------------------------------------
class _CropSampler:
    """Cuts uint8 windows around sampled points: a share *structure_fraction* centred on a
    pixel of a structure class (classes drawn evenly), the rest on annotated pixels, of
    which a share *random_fraction* anywhere in a painted slice.

    Centring crops on structures matters when they are rare (mitochondria are ~5 % of an
    ssTEM slice): with crops drawn evenly, a randomly initialised network first learns
    "all background" and shows nothing for hundreds of iterations.
    """

    MAX_POINTS = 200_000  # structure pixels kept per class and view (a random subset)

    def __init__(self, data: TrainingData, window: int, random_fraction: float, rng: np.random.Generator,
                 structure_fraction: float = 0.5):
        self.data = data
        self.window = window
        self.random_fraction = float(random_fraction)
        self.structure_fraction = float(structure_fraction)
        self.rng = rng
        totals = np.array([w.sum() for w in data.slice_weights])
        self.view_p = totals / totals.sum()
        self.slice_p = [w / w.sum() if w.sum() > 0 else None for w in data.slice_weights]
        # flat indices of the pixels of each structure class, per view
        self.structure_points = []
        for _, tgt, _ in data.views:
            per_class = []
            for c in range(1, len(data.classes)):
                flat = np.flatnonzero(tgt == c)
                if len(flat) > self.MAX_POINTS:
                    flat = rng.choice(flat, self.MAX_POINTS, replace=False)
                if len(flat):
                    per_class.append(flat)
            self.structure_points.append(per_class)

    def _point(self, view: int) -> tuple[int, int, int]:
        img, tgt, _ = self.data.views[view]
        n, h, w = tgt.shape
        points = self.structure_points[view]
        if points and self.rng.random() < self.structure_fraction:
            flat = points[int(self.rng.integers(len(points)))]
            k, rest = divmod(int(flat[self.rng.integers(len(flat))]), h * w)
            return k, rest // w, rest % w
        k = int(self.rng.choice(n, p=self.slice_p[view]))
        if self.rng.random() < self.random_fraction:
            return k, int(self.rng.integers(h)), int(self.rng.integers(w))
        plane = tgt[k]
        for _ in range(32):
            y, x = int(self.rng.integers(h)), int(self.rng.integers(w))
            if plane[y, x] != IGNORE:
                return k, y, x
        flat = np.flatnonzero(plane != IGNORE)
        idx = int(flat[self.rng.integers(len(flat))])
        return k, idx // w, idx % w

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        win = self.window
        images = np.empty((size, win, win), np.uint8)
        targets = np.empty((size, win, win), np.uint8)
        views = self.rng.choice(len(self.data.views), size=size, p=self.view_p)
        for i, view in enumerate(views):
            k, y, x = self._point(int(view))
            img, tgt, _ = self.data.views[int(view)]
            images[i], targets[i] = _cut(img[k], tgt[k], y, x, win)
        return images, targets


def _cut(img2d, tgt2d, cy: int, cx: int, win: int):
    h, w = img2d.shape
    y0, x0 = cy - win // 2, cx - win // 2
    y1, x1 = y0 + win, x0 + win
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    im = img2d[sy0:sy1, sx0:sx1]
    tg = tgt2d[sy0:sy1, sx0:sx1]
    pads = ((sy0 - y0, y1 - sy1), (sx0 - x0, x1 - sx1))
    if any(p for pair in pads for p in pair):
        mode = "reflect" if all(p < s for (a, b), s in zip(pads, im.shape) for p in (a, b)) else "edge"
        im = np.pad(im, pads, mode=mode)
        tg = np.pad(tg, pads, mode="constant", constant_values=IGNORE)
    return im, tg


# -- loss and metric -----------------------------------------------------------------------------
def masked_loss(logits, target, weights=None):
    """BCE (one output) or weighted cross-entropy (several), over annotated pixels only.

    *target*: long (B, H, W) with 255 = not annotated. Returns a scalar tensor (0 when
    nothing in the batch is annotated). The weighted mean is PyTorch's (divided by the sum
    of the weights of the annotated pixels), written without a host-device sync.
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    valid = (target != IGNORE).float()
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], (target == 1).float(), reduction="none")
        return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)
    safe = torch.where(target == IGNORE, torch.zeros_like(target), target)
    per_pixel = F.cross_entropy(logits, safe, reduction="none")
    w = valid
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)[safe] * valid
    return (per_pixel * w).sum() / w.sum().clamp_min(1e-8)


def iou_counts(logits, target):
    """(intersection, union) per structure class over the annotated pixels, as one tensor
    of shape (2, n_classes - 1) on the device (no sync)."""
    import torch

    with torch.no_grad():
        valid = target != IGNORE
        if logits.shape[1] == 1:
            pred = (logits[:, 0] > 0).long()
            n_classes = 2
        else:
            pred = logits.argmax(1)
            n_classes = logits.shape[1]
        rows = []
        for c in range(1, n_classes):
            p = (pred == c) & valid
            t = (target == c) & valid
            rows.append(torch.stack([(p & t).sum(), (p | t).sum()]))
        return torch.stack(rows, 1).float()


def _mean_iou(counts) -> float | None:
    inter, union = np.asarray(counts, dtype=np.float64)
    ok = union > 0
    return float(np.mean(inter[ok] / union[ok])) if ok.any() else None


def batch_iou(logits, target) -> float | None:
    """Mean IoU of the structure classes over the annotated pixels of a batch."""
    return _mean_iou(iou_counts(logits, target).cpu().numpy())


# -- training ------------------------------------------------------------------------------------
def _set_modes(model, freeze: str, encoder_bn: str = "keep") -> None:
    """Train mode, except a frozen encoder: in eval mode (BatchNorm keeps the checkpoint's
    statistics) unless *encoder_bn* is "adapt" (statistics follow the training data, as in
    the original CEM500K fine-tuning; the parameters stay frozen either way)."""
    model.train()
    if encoder_bn == "adapt":
        return
    if freeze == "encoder":
        model.encoder.eval()
    elif freeze == "layer4":
        model.encoder.eval()
        model.encoder.layer4.train()


def _freeze(model, freeze: str) -> None:
    for p in model.encoder.parameters():
        p.requires_grad_(freeze == "none")
    if freeze == "layer4":
        for p in model.encoder.layer4.parameters():
            p.requires_grad_(True)


def _to_device(array: np.ndarray, device):
    """uint8 batch -> device tensor (through pinned memory on CUDA, asynchronously)."""
    import torch

    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _norms_from_image(image: np.ndarray) -> tuple[float, float]:
    flat = np.asarray(image).ravel()
    step = max(1, flat.size // 4_000_000)
    sample = flat[::step].astype(np.float32) / 255.0
    return float(sample.mean()), float(max(sample.std(), 1e-3))


@dataclass(frozen=True)
class FinetuneConfig:
    """The settings of one fine-tuning run: what the Fine-tune widget's fields and the
    ``napari-cem finetune`` options set (the data and the callbacks are not settings).

    *weights*: None/"none" (random init, everything trains), a released name
    (``cem500k-mocov2``, ``cem1.5m-swav``; downloaded into the cache when *download*) or a
    checkpoint path. *bin*: the U-Net works on the image averaged over bin x bin pixels
    (:func:`napari_cem.model.set_bin`; crops stay in image pixels); a model continued from
    keeps its own. *init*: a model bundle (or its file) to continue from: its whole U-Net
    (encoder and decoder), its normalisation and, with *freeze* "auto", its freeze setting
    are kept and *weights* is not used; the painted classes must be the bundle's (with
    *add_classes*, more: the head is widened and each new class learns from scratch).
    *freeze*: "auto" (= "encoder" with weights, "none" without),
    "encoder" (frozen encoder), "layer4" (only layer4 of the encoder trains), "none"
    (everything trains); *encoder_bn*: a frozen encoder's BatchNorm statistics "keep" the
    checkpoint's or "adapt" to the training data. *arch*: the encoder, ResNet50/34/18
    ("auto": :func:`pick_arch`). Crops: a share *structure_crop_fraction*
    centred on structure pixels, the rest on painted pixels (*random_crop_fraction* of those
    anywhere in a painted slice). AdamW + OneCycle (peak *lr*, *weight_decay*; *warmup*: the
    share of the run spent rising to the peak). *lr* and *warmup* None: the defaults of the
    kind of run (:func:`schedule_shape`: a new model, or a short round continued from one).
    """

    weights: str | None = None
    freeze: str = "auto"
    iterations: int = 500
    crop_size: int = 512
    batch_size: int = 16
    device: object = "auto"
    lr: float | None = None
    weight_decay: float = 0.1
    seed: int = 42
    random_crop_fraction: float = 0.25
    structure_crop_fraction: float = 0.5
    augment: Augment | None = None
    amp: str | bool = "auto"
    channels_last: str | bool = "auto"
    download: bool = True
    init: object = None  # a ModelBundle, (bundle, its file) or a file: continue from its U-Net
    add_classes: bool = False  # with init: a painted class the bundle lacks gets a new output
    warmup: float | None = None
    arch: str = "auto"  # the U-Net: one of ARCH_CHOICES (auto: pick_arch)
    encoder_bn: str = "keep"  # a frozen encoder's BatchNorm statistics: keep | adapt
    bin: int = 1  # the U-Net works binned bin x bin (model.BINS; 1: full resolution)

    def __post_init__(self):
        from .model import BINS, bin_step

        for name in ("iterations", "crop_size", "batch_size", "seed", "bin"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.arch not in ARCH_CHOICES:
            raise ValueError(f"arch must be one of {', '.join(ARCH_CHOICES)}, got {self.arch!r}.")
        if self.encoder_bn not in ENCODER_BN_CHOICES:
            raise ValueError(f"encoder_bn must be one of {', '.join(ENCODER_BN_CHOICES)}, got {self.encoder_bn!r}.")
        if self.freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}.")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}.")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}.")
        if self.bin not in BINS:
            raise ValueError(f"bin must be one of {', '.join(map(str, BINS))}, got {self.bin}.")
        step = bin_step(self.bin)
        if self.crop_size < 2 * step or self.crop_size % step:
            binned = f" when binned {self.bin} x {self.bin}" if self.bin > 1 else ""
            raise ValueError(f"The crop size must be a multiple of {step} and at least {2 * step}{binned}, "
                             f"got {self.crop_size}.")
        if not 0 <= self.random_crop_fraction <= 1:
            raise ValueError("random_crop_fraction must be between 0 and 1.")
        if not 0 <= self.structure_crop_fraction <= 1:
            raise ValueError("structure_crop_fraction must be between 0 and 1.")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be above 0, got {self.lr}.")
        if self.warmup is not None and not 0 < self.warmup < 1:
            raise ValueError(f"warmup must be between 0 and 1 (a share of the iterations), got {self.warmup}.")

    def schedule(self) -> tuple[float, float]:
        """(peak lr, warm-up share) of this run: the fields, or the defaults of its kind."""
        lr, warmup = schedule_shape(continued=self.init is not None)
        return (self.lr if self.lr is not None else lr), (self.warmup if self.warmup is not None else warmup)


NEW_MODEL_SCHEDULE = (3e-3, 0.3)  # peak lr, warm-up share of a run from a new model
# ... of a short round continued from a model: its own one cycle; a 5 % warm-up lost, a third
# of the peak won on 4 of 6 splits and seeds only (bench_loop --strategy schedule, RESULTS.md)
CONTINUED_SCHEDULE = (3e-3, 0.3)


def schedule_shape(continued: bool) -> tuple[float, float]:
    """The OneCycle (peak lr, warm-up share) of a new model's run or of a continued round."""
    return CONTINUED_SCHEDULE if continued else NEW_MODEL_SCHEDULE


@dataclass
class _Run:
    """Everything one fine-tuning run sets up and then changes as it goes."""

    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    sampler: Any
    device: Any
    info: Any  # describe_device
    precision: Any  # device.Precision
    memory_format: Any
    channels_last: bool
    class_weights: Any  # tensor or None
    n_out: int
    norms: tuple
    encoder_info: dict
    freeze: str
    crop: int
    augment: Augment
    generator: Any
    batch_size: int
    losses: list = field(default_factory=list)
    ious: list = field(default_factory=list)
    done: int = 0
    stopped: bool = False
    message: str = ""  # said with the next TrainProgress (crop reduced, batch halved)
    live: Any = None  # _LivePaint when the paint is picked up while training
    encoder_bn: str = "keep"  # FinetuneConfig.encoder_bn


def finetune(image, labels, config: FinetuneConfig | None = None, *,
             classes: Sequence[str] | None = None, background_label: int | None = None,
             complete_slices: bool = False, rois=None, planes: str = "auto", voxel_size=None,
             should_stop: Callable[[], bool] | None = None,
             preview_request: Callable[[], np.ndarray | None] | None = None,
             evaluate: Callable | None = None, evaluate_at: Sequence[int] = (),
             data_source: str = "", live_labels=None, refresh_s: float = 10.0,
             **settings) -> Iterator[TrainProgress]:
    """Fine-tune a U-Net on painted labels; yields ``TrainProgress``, returns a ``ModelBundle``.

    *config* holds the settings (:class:`FinetuneConfig`); keyword *settings* override its
    fields (``finetune(image, labels, iterations=50, device="cpu")``). *preview_request()*
    may return a 2D uint8 slice: its prediction by the current weights comes back in the
    next ``TrainProgress.preview``. *evaluate(bundle)* is called (model in eval mode) after
    each iteration listed in *evaluate_at*; its result comes back in
    ``TrainProgress.evaluation`` (validation curves, benchmarks). *live_labels*: the labels
    array the user keeps painting (the widget's layer data); every *refresh_s* seconds of
    training its changed slices are picked up without a restart.
    """
    from dataclasses import replace

    config = replace(config, **settings) if config is not None else FinetuneConfig(**settings)
    data = prepare_training_data(image, labels, class_names=classes, background_label=background_label,
                                 complete_slices=complete_slices, rois=rois, planes=planes,
                                 voxel_size=voxel_size)
    parent = _parent_bundle(config.init) if config.init is not None else None
    run = _setup(image, data, config, parent)
    if live_labels is not None:
        run.live = _LivePaint(live_labels, np.array(labels, copy=True), data, complete_slices, rois,
                              refresh_s)
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-cem-crops")
    try:
        yield from _iterate(run, config, data, pool, start, should_stop, preview_request,
                            evaluate, evaluate_at)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return _record(run, config, data, image, time.perf_counter() - start,
                   complete_slices=complete_slices, data_source=data_source, parent=parent)


def _setup(image, data: TrainingData, config: FinetuneConfig, parent=None) -> _Run:
    """The device, precision, U-Net (new with its encoder weights, or a copy of the *parent*
    bundle's), optimizer and crop sampler."""
    import torch

    from .device import autocast_policy, describe_device, select_device
    from .model import arch_name, bin_of, bin_words, build_unet, n_outputs_for, set_bin, size_step
    from .weights import load_encoder_weights, read_encoder

    dev = select_device(str(config.device))
    info = describe_device(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = autocast_policy(dev, config.amp, "training", info)
    use_cl = (dev.type in ("cuda", "cpu")) if config.channels_last == "auto" else bool(config.channels_last)
    memory_format = torch.channels_last if use_cl else torch.contiguous_format

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n_out = n_outputs_for(len(data.classes))
    if parent is not None:
        model, encoder_info, freeze, norms = _continue_from(parent[0], data, config.freeze, config.add_classes)
        arch, why = pick_arch(config.arch, info, parent=arch_name(model))
        if config.bin not in (1, bin_of(model)):
            raise ValueError(f"The model continued from is {bin_words(model) or 'not binned'}, "
                             f"not binned {config.bin} x {config.bin}: it keeps its own binning.")
    else:
        checkpoint = read_encoder(config.weights, download=config.download)
        arch, why = pick_arch(config.arch, info, checkpoint=checkpoint.arch if checkpoint else None)
        model = set_bin(build_unet(n_out, arch), config.bin)
        encoder_info = load_encoder_weights(model, checkpoint)
        freeze = config.freeze
        if freeze == "auto":
            freeze = "encoder" if encoder_info["layout"] != "none" else "none"
        norms = tuple(encoder_info["norms"]) if encoder_info.get("norms") else _norms_from_image(image)
        encoder_info = {**encoder_info, "frozen": freeze,
                        "norms_source": "checkpoint" if encoder_info.get("norms") else "training image"}
    _freeze(model, freeze)
    model.to(dev, memory_format=memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    peak, warmup = config.schedule()
    optimizer = torch.optim.AdamW(params, lr=peak, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=config.iterations,
                                                    pct_start=warmup)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.enabled and precision.dtype == torch.float16)
    weights_ce = torch.tensor(class_weights(data.fractions), device=dev) if n_out > 1 else None

    aug = config.augment or Augment()
    crop, step = config.crop_size, size_step(model)
    if crop % step:  # a model continued from may be binned more than the settings say
        raise ValueError(f"The crop size must be a multiple of {step} for this model "
                         f"({bin_words(model)}), got {crop}.")
    min_side = min(image.shape[-2:])
    if crop > min_side and min_side >= 2 * step:
        crop = max(2 * step, (min_side // step) * step)
    sampler = _CropSampler(data, window_side(crop, aug), config.random_crop_fraction, rng,
                           structure_fraction=config.structure_crop_fraction)
    binned = f", {bin_words(model)}" if bin_of(model) > 1 else ""
    messages = [f"model U-Net {pretty_encoder(arch)}{binned} ({why})"] + list(data.warnings)
    if crop != config.crop_size:
        messages.append(f"crop reduced to {crop} to fit the {image.shape[-2]} x {image.shape[-1]} image")
    encoder_info = {**encoder_info, "batchnorm": config.encoder_bn if freeze != "none" else "trained"}
    _set_modes(model, freeze, config.encoder_bn)
    return _Run(model, optimizer, scheduler, scaler, sampler, dev, info, precision, memory_format,
                use_cl, weights_ce, n_out, norms, encoder_info, freeze, crop, aug, gen,
                config.batch_size, message="; ".join(messages), encoder_bn=config.encoder_bn)


def pick_arch(request: str, info, *, checkpoint: str | None = None, parent: str | None = None):
    """(U-Net name, why) of a run: the one asked for, else the encoder of the weights or of
    the model continued from, else CEM500K's ResNet50 (on a CPU in float32 the why names
    the faster model: CPU_FLOAT32_HINT)."""
    if request != "auto":
        if parent is not None and parent != request:
            raise ValueError(f"The model continued from is a U-Net {pretty_encoder(parent)}, not a "
                             f"{pretty_encoder(request)}: choose model {parent} or auto.")
        if checkpoint is not None and checkpoint != ARCHS[request][0]:
            raise ValueError(f"The encoder weights are a {pretty_encoder(checkpoint)}, not a "
                             f"{pretty_encoder(ARCHS[request][0])}: choose model {checkpoint} or auto.")
        return request, "as chosen"
    if parent is not None:
        return parent, "the model continued from"
    if checkpoint is not None:
        return checkpoint, "the encoder weights"
    if info.kind == "cpu" and not info.bf16:
        return "resnet50", f"auto; this CPU has no native bf16: {CPU_FLOAT32_HINT}"
    return "resnet50", "auto"


def _parent_bundle(init):
    """(bundle, its file or None) of *init*: a ModelBundle, (bundle, its file), or a file."""
    from .model import load_bundle

    if isinstance(init, tuple):
        return init[0], (Path(init[1]) if init[1] is not None else None)
    if hasattr(init, "model"):
        return init, None
    return load_bundle(init), Path(init)


def _continue_from(parent, data: TrainingData, freeze: str, add_classes: bool = False):
    """(model, encoder record, freeze, norms) of a round that continues from a bundle: a copy
    of its whole U-Net (the parent, maybe the viewer's active model, is left untouched); with
    *add_classes*, painted classes the parent lacks get new outputs."""
    import copy

    from .model import widen_head

    new = [c for c in data.classes if c not in parent.classes]
    widen = add_classes and data.classes[0] == parent.classes[0] and set(parent.classes) < set(data.classes)
    if list(parent.classes) != list(data.classes) and not widen:
        missing = [c for c in parent.classes if c not in data.classes]
        detail = (f"no paint for {', '.join(map(repr, missing))}" if missing else
                  f"new class {', '.join(map(repr, new))}" if new else "another order")
        hint = ("" if missing or not new else
                 " (or allow new classes: the model gets an output for each, learned from scratch)")
        raise ValueError(f"The model to continue from has the classes {', '.join(parent.classes)}; "
                         f"the paint gives {', '.join(data.classes)} ({detail}). Name and paint the "
                         f"same classes{hint}, or train a new model.")
    model = copy.deepcopy(parent.model).float().cpu()
    if widen:
        widen_head(model, parent.classes, data.classes)
    encoder = dict(getattr(parent, "encoder", None) or {})
    if freeze == "auto":
        freeze = encoder.get("frozen", "none")
    encoder["frozen"] = freeze
    return model, encoder, freeze, tuple(float(v) for v in parent.norms)


def _lineage(parent, classes) -> dict | None:
    """The chain of rounds a continued model comes from (parent file, iterations per round,
    the classes this round added)."""
    if parent is None:
        return None
    parent, path = parent
    training = dict(getattr(parent, "training", None) or {})
    before = training.get("lineage") or {}
    rounds = list(before.get("rounds", [])) + [int(training.get("iterations", 0))]
    out = {"parent": str(path) if path is not None else before.get("parent"), "rounds": rounds}
    added = [c for c in classes if c not in parent.classes]
    if added:
        out["added_classes"] = added
    return out


def _iterate(run: _Run, config: FinetuneConfig, data: TrainingData, pool, start, should_stop,
             preview_request, evaluate, evaluate_at) -> Iterator[TrainProgress]:
    """The training loop: a TrainProgress per iteration until done or stopped."""
    pending = None
    while run.done < config.iterations:
        if should_stop is not None and should_stop():
            if run.done == 0:
                raise Cancelled()
            run.stopped = True
            return
        if pending is None or pending[0] != run.batch_size:
            pending = (run.batch_size, pool.submit(run.sampler.batch, run.batch_size))
        imgs, tgts = pending[1].result()
        pending = (run.batch_size, pool.submit(run.sampler.batch, run.batch_size))  # next batch, while we train
        try:
            stepped = _step(run, imgs, tgts, should_stop)
        except Cancelled:  # from inside the forward: this batch is dropped, no step taken
            if run.done == 0:
                raise
            run.stopped = True
            return
        if stepped is None:
            continue  # out of GPU memory: the batch was halved, try again
        if run.live is not None and run.live.due():
            _take_new_paint(run, config, data)
        yield _progress(run, config, data, stepped, start, preview_request, evaluate, evaluate_at)


def _take_new_paint(run: _Run, config: FinetuneConfig, data: TrainingData) -> None:
    """Rebuild what the crops are drawn from after the user painted (between iterations)."""
    import torch

    note = run.live.pick_up()
    if not note:
        return
    if data.n_annotated and sum(w.sum() for w in data.slice_weights) > 0:
        run.sampler = _CropSampler(data, window_side(run.crop, run.augment), config.random_crop_fraction,
                                   run.sampler.rng, structure_fraction=config.structure_crop_fraction)
        if run.n_out > 1:
            run.class_weights = torch.tensor(class_weights(data.fractions), device=run.device)
    run.message = "; ".join(m for m in (run.message, note) if m)


def _step(run: _Run, imgs, tgts, should_stop):
    """One optimisation step on a batch: (logits, targets, loss), or None after halving the
    batch on a GPU out-of-memory error."""
    import torch

    from .model import forward_logits

    try:
        x_u8 = _to_device(imgs, run.device)
        y_u8 = _to_device(tgts, run.device)
        x, y = augment_batch(x_u8, y_u8, run.crop, run.augment, run.norms, run.generator)
        x = x.contiguous(memory_format=run.memory_format)
        # Stop also lands inside the forward pass (seconds per batch on a CPU)
        with stoppable(run.model, should_stop), run.precision.autocast(run.device.type):
            logits = forward_logits(run.model, x, encoder_grad=run.freeze != "encoder")
        loss = masked_loss(logits, y, run.class_weights)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    except torch.cuda.OutOfMemoryError:
        del imgs, tgts
        run.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        if run.batch_size == 1:
            raise RuntimeError("The GPU ran out of memory even with a batch of 1; use a smaller "
                               "crop size or the CPU.") from None
        run.batch_size = max(1, run.batch_size // 2)
        run.message = f"GPU out of memory: batch halved to {run.batch_size}, retrying"
        return None
    run.scheduler.step()
    run.done += 1
    return logits, y, loss


def _progress(run: _Run, config, data, stepped, start, preview_request, evaluate,
              evaluate_at) -> TrainProgress:
    """Record the step's loss and IoU; the preview and evaluation asked for; the progress."""
    import torch

    from .model import ModelBundle, predict_slice

    logits, y, loss = stepped
    counts = iou_counts(logits.detach(), y)
    stats = torch.cat([loss.detach().float().view(1), counts.view(-1)]).cpu().numpy()  # one sync
    loss_value = float(stats[0])
    iou = _mean_iou(stats[1:].reshape(2, -1))
    run.losses.append(round(loss_value, 6))
    run.ious.append(None if iou is None else round(iou, 5))
    bundle = None
    preview = None
    request = preview_request() if preview_request is not None else None
    if request is not None:
        bundle = ModelBundle(model=run.model, classes=data.classes, norms=run.norms, crop_size=run.crop)
        preview = predict_slice(bundle, request, run.device, amp=run.precision.enabled)
        _set_modes(run.model, run.freeze, run.encoder_bn)
    evaluation = None
    if evaluate is not None and run.done in evaluate_at:
        run.model.eval()
        evaluation = evaluate(bundle or ModelBundle(model=run.model, classes=data.classes,
                                                    norms=run.norms, crop_size=run.crop))
        _set_modes(run.model, run.freeze, run.encoder_bn)
    message, run.message = run.message, ""
    return TrainProgress(iteration=run.done, total=config.iterations, loss=loss_value,
                         lr=float(run.scheduler.get_last_lr()[0]), train_iou=iou,
                         batch_size=run.batch_size, seconds=time.perf_counter() - start,
                         message=message, preview=preview, evaluation=evaluation,
                         painted=data.n_annotated)


def _record(run: _Run, config: FinetuneConfig, data: TrainingData, image, seconds: float, *,
            complete_slices: bool, data_source: str, parent=None):
    """The trained model in eval mode and its bundle, with the record of how it was made."""
    import torch

    from .model import ModelBundle, bin_of

    run.model.eval()
    run.model.to(memory_format=torch.contiguous_format)
    precision = run.precision
    training = {
        "iterations": run.done, "iterations_planned": config.iterations, "stopped_early": run.stopped,
        "loss": run.losses, "train_iou": run.ious, "seconds": round(seconds, 2),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(run.info),
        "amp": str(precision.dtype).replace("torch.", "") if precision.enabled else "off",
        "channels_last": run.channels_last, "batch_size": run.batch_size, "crop_size": run.crop,
        "bin": bin_of(run.model),
        "optimizer": dict(zip(("max_lr", "warmup"), config.schedule()), name="AdamW",
                          weight_decay=config.weight_decay, schedule="OneCycle"),
        "loss_fn": "BCE" if run.n_out == 1 else "cross-entropy",
        "class_weights": class_weights(data.fractions) if run.n_out > 1 else None,
        "class_fractions": [round(f, 5) for f in data.fractions],
        "data_source": data_source, "image_shape": list(np.shape(image)),
        "n_annotated_pixels": data.n_annotated,
        "label_values": {str(k): v for k, v in sorted(data.value_map.items())},
        "complete_slices": bool(complete_slices), "planes": [v[2] for v in data.views],
        "painted_slices": [int(z) for z in np.flatnonzero(data.slice_weights[0])],  # xy, z
        "augment": run.augment.as_dict(), "random_crop_fraction": config.random_crop_fraction,
        "structure_crop_fraction": config.structure_crop_fraction, "seed": config.seed,
        "lineage": _lineage(parent, data.classes),
    }
    return ModelBundle(model=run.model, classes=list(data.classes), norms=run.norms, crop_size=run.crop,
                       encoder=run.encoder_info, training=training)


def run_finetune(image, labels, config: FinetuneConfig | None = None,
                 callback: Callable[[TrainProgress], None] | None = None, **kwargs):
    """Drive ``finetune`` to the end; *callback(progress)* after every iteration."""
    gen = finetune(image, labels, config, **kwargs)
    while True:
        try:
            progress = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(progress)


def smooth(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average, for loss curves."""
    out, acc = [], None
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(acc if acc is not None else float("nan"))
            continue
        acc = v if acc is None else (1 - alpha) * acc + alpha * v
        out.append(acc)
    return out
