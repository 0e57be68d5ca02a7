"""MoCoV2 pre-training of a 1-channel ResNet encoder on a folder of EM patches (SPEC section 2).

The published recipe: ResNet50 with a 1-channel first convolution, a 2-layer MLP head
(2048-2048-128), a key encoder updated by momentum 0.999, a queue of 65,536 keys,
temperature 0.2, SGD (lr 0.015, momentum 0.9, weight decay 1e-4) with lr x0.1 at 60 % and
80 % of the epochs (120 and 160 of 200), batch 128, and per view: random resized crop 224
(scale 0.2-1), rotation up to 180 deg (p 0.5), flips, brightness/contrast jitter 0.4,
Gaussian blur sigma 0.1-2 (p 0.5), Gaussian noise variance 1e-5..1e-4 (p 0.5), normalised by
the data's mean/std.

Why it is fast on 2 CPU cores or one GPU: the files are decoded once to uint8 tensors; all
augmentations of both views run batched on the training device (one affine ``grid_sample``
does crop, rotation and flips together; blur is one grouped convolution). Mixed precision
(bf16; fp16 with loss scaling on GPUs without bf16) and channels_last on CUDA and on CPUs
with native bf16 (AVX512-BF16 / AMX); float32 elsewhere. The contrastive logits are always
float32.

Checkpoints are written atomically after every epoch in the released CEM500K layout
(``state_dict`` keys ``module.encoder_q.*``, ``module.encoder_k.*``, ``module.queue``,
``module.queue_ptr``; ``norms``; ``epoch``; ``arch``; ``optimizer``), so the weight loader
takes ours and theirs alike. Every epoch's randomness is seeded from (seed, epoch, rank), so
``resume`` continues bit for bit.

Run on many GPUs with ``torchrun --nproc_per_node=N -m napari_cem.cli pretrain PATCH_DIR -o OUT``
(DistributedDataParallel, shuffled BatchNorm for the key encoder, the queue filled from all
ranks).
"""

from __future__ import annotations

import csv
import errno
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._cancel import Cancelled, stoppable
from ._progress import Progress, report, staged
from .io._listing import IMAGE_SUFFIXES, is_hidden_or_system

__all__ = [
    "IMAGE_SUFFIXES",
    "PretrainConfig",
    "PatchFolder",
    "build_moco",
    "augment_views",
    "pretrain",
    "load_pretrain_checkpoint",
    "in_words",
]


CHECKPOINT_NAME = "checkpoint.pth.tar"
PREVIOUS_CHECKPOINT_NAME = "checkpoint_prev.pth.tar"
LOG_NAME = "log.csv"
PATCH_CACHE_NAME = "patches_{size}.npy"  # decoded patches, memory-mapped


@dataclass
class PretrainConfig:
    """Options of a run (SPEC defaults); stored in every checkpoint."""

    epochs: int = 200
    batch_size: int = 128  # total over all processes
    lr: float = 0.015
    momentum: float = 0.9
    weight_decay: float = 1e-4
    moco_momentum: float = 0.999
    queue_size: int = 65536
    temperature: float = 0.2
    dim: int = 128
    arch: str = "resnet50"
    crop: int = 224
    seed: int = 0
    lr_steps: tuple = (0.6, 0.8)  # fractions of the epochs: 120 and 160 of 200
    max_minutes: float | None = None  # stop (after a checkpoint) once this much time passed
    amp: str = "auto"  # mixed precision: auto (CUDA, bf16-native CPUs), on, off

    def milestones(self) -> list[int]:
        return sorted({max(1, round(f * self.epochs)) for f in self.lr_steps})


# ---------------------------------------------------------------------------- data


def _reserve_disk_space(path: Path) -> None:
    """Allocate the whole (sparse) file now: a full disk is then an OSError here, not a
    SIGBUS that kills the process when the memory map is written."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: write and hope
        return
    size = path.stat().st_size
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return  # this file system cannot reserve space
            raise OSError(exc.errno, f"{exc.strerror} (the decoded patch cache needs "
                                     f"{size / 1e9:.2f} GB)", str(path)) from None


def _list_images(folder: Path) -> list[Path]:
    """The images below *folder*, subfolders included, in path order (the order is part of
    the patch cache's key and of an exact resume, so it stays as it was)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(is_hidden_or_system(part) for part in p.relative_to(folder).parts))


def _read_gray(path: Path) -> np.ndarray:
    """A 2D uint8 image; other dtypes are standardised as napari-cem does, RGB to gray."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            img = np.asarray(im.convert("L"))
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].mean(-1)
    if img.ndim != 2:
        raise ValueError(f"not a 2D image: shape {img.shape}")
    if img.dtype != np.uint8:
        from .io import standardize

        img, _ = standardize(img)
        img = np.asarray(img)
    return img


class PatchFolder:
    """Every readable 2D image below a folder, decoded once to a uint8 square of ``size``.

    Mixed sizes are fine: a larger image contributes a centre crop, a smaller one is
    resized up (the random resized crop of the augmentations then works on equal squares).
    Unreadable files are skipped and counted in ``skipped`` (with the first few reasons).

    With *cache* (a ``.npy`` path) the decoded squares go to a memory-mapped file instead
    of RAM, so 500,000 patches of 224 x 224 (25 GB) train on a machine with far less
    memory; the file is reused while the folder's image list is unchanged (a resume does
    not decode again).
    """

    def __init__(self, folder, size: int = 224, progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, cache=None):
        import torch

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"'{folder}' is not a folder of patches.")
        files = _list_images(folder)
        if not files:
            raise ValueError(f"'{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                             "export curated patches there first (napari-cem curate).")
        self.size = int(size)
        self.files, self.skipped, self.reasons = [], 0, []
        cache = Path(cache) if cache is not None else None
        key = self._cache_key(folder, files)
        array = self._open_cache(cache, key) if cache is not None else None
        if array is None:
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(cache.name + ".part")
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                                shape=(len(files), self.size, self.size))
                try:
                    _reserve_disk_space(tmp)
                except OSError:
                    del out
                    tmp.unlink(missing_ok=True)
                    raise
            else:
                out = []
            n = 0
            for i, path in enumerate(files):
                if should_stop is not None and should_stop():
                    raise Cancelled("loading patches was cancelled")
                try:
                    square = _to_square(_read_gray(path), self.size)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, counted
                    self.skipped += 1
                    if len(self.reasons) < 5:
                        self.reasons.append(f"{path.name}: {exc}")
                else:
                    if cache is not None:
                        out[n] = square
                    else:
                        out.append(square)
                    self.files.append(path)
                    n += 1
                if progress is not None and (i % 256 == 0 or i + 1 == len(files)):
                    progress(i + 1, len(files))
            if not n:
                if cache is not None:
                    del out
                    tmp.unlink(missing_ok=True)
                raise ValueError(f"None of the {len(files)} images in '{folder}' could be read "
                                 f"(first: {self.reasons[0] if self.reasons else '?'}).")
            if cache is not None:
                out.flush()
                del out
                os.replace(tmp, cache)
                import json

                info = {"key": key, "n": n, "size": self.size, "skipped": self.skipped,
                        "reasons": self.reasons, "files": [str(f.relative_to(folder)) for f in self.files]}
                cache.with_suffix(".json").write_text(json.dumps(info))
                array = np.load(cache, mmap_mode="r+")[:n]
            else:
                array = np.stack(out)
        else:
            array, info = array
            self.files = [folder / f for f in info["files"]]
            self.skipped, self.reasons = int(info["skipped"]), list(info["reasons"])
        self.data = torch.from_numpy(array)  # (N, size, size) uint8, in RAM or memory-mapped

    def _cache_key(self, folder: Path, files: list[Path]) -> str:
        import hashlib

        h = hashlib.sha1(f"{self.size}".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()

    def _open_cache(self, cache: Path, key: str):
        import json

        try:
            info = json.loads(cache.with_suffix(".json").read_text())
            if info.get("key") != key or int(info["size"]) != self.size:
                return None
            array = np.load(cache, mmap_mode="r+")
            if array.shape[1:] != (self.size, self.size) or array.shape[0] < int(info["n"]):
                return None
            return array[: int(info["n"])], info
        except (OSError, ValueError, KeyError):
            return None

    def __len__(self) -> int:
        return self.data.shape[0]

    def norms(self, max_images: int = 4096) -> tuple[float, float]:
        """Mean and std of the pixels / 255 (SPEC: normalise by the dataset's statistics),
        from up to *max_images* images spread over the data set."""
        n = len(self)
        idx = np.linspace(0, n - 1, num=min(n, max_images)).astype(np.int64)
        x = self.data[idx].double().div_(255)
        return float(x.mean()), float(x.std().clamp_min(1e-3))


def _to_square(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape
    if min(h, w) >= size:
        y0, x0 = (h - size) // 2, (w - size) // 2
        return np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])
    from PIL import Image

    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------- augmentation


def augment_views(batch, mean: float, std: float, generator, out_size: int | None = None):
    """One SPEC-augmented view of every image of a uint8 batch (N, H, W), on its device.

    Random resized crop (scale 0.2-1, aspect 3/4-4/3), rotation up to 180 deg (p 0.5) and
    horizontal/vertical flips are one affine map per image, applied by a single
    ``grid_sample``; then brightness/contrast jitter 0.4, Gaussian blur sigma 0.1-2 (p 0.5,
    one grouped convolution), Gaussian noise with variance 1e-5..1e-4 (p 0.5), and
    normalisation. Returns float32 (N, 1, S, S).
    """
    import torch
    import torch.nn.functional as F

    dev = batch.device
    n = batch.shape[0]
    size = out_size or batch.shape[-1]

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=dev)

    x = batch.to(torch.float32).unsqueeze(1).div_(255)
    # crop: area fraction and aspect ratio as torchvision's RandomResizedCrop
    area = 0.2 + 0.8 * rand(n)
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(n)
    ratio = torch.exp(log_r)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # half-extent in normalised coordinates
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - sx) * (2 * rand(n) - 1)
    cy = (1 - sy) * (2 * rand(n) - 1)
    angle = torch.where(rand(n) < 0.5, (2 * rand(n) - 1) * math.pi, torch.zeros(n, device=dev))
    fx = torch.where(rand(n) < 0.5, -1.0, 1.0)
    fy = torch.where(rand(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([sx * fx * cos, -sy * fy * sin, cx], dim=1),
        torch.stack([sx * fx * sin, sy * fy * cos, cy], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # brightness and contrast jitter 0.4 (factors in [0.6, 1.4])
    b = 0.6 + 0.8 * rand(n, 1, 1, 1)
    c = 0.6 + 0.8 * rand(n, 1, 1, 1)
    x = x * b
    m = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - m) * c + m).clamp_(0, 1)
    # Gaussian blur, sigma 0.1-2, p 0.5: one depthwise convolution with a kernel per image
    radius = 4
    t = torch.arange(-radius, radius + 1, device=dev, dtype=torch.float32)
    sigma = 0.1 + 1.9 * rand(n)
    k1 = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    identity = torch.zeros_like(k1)
    identity[:, radius] = 1
    k1 = torch.where((rand(n) < 0.5)[:, None], k1, identity)
    xs = x.transpose(0, 1)  # (1, N, S, S): images as channels of one grouped convolution
    xs = F.conv2d(F.pad(xs, (radius, radius, 0, 0), mode="reflect"), k1[:, None, None, :], groups=n)
    xs = F.conv2d(F.pad(xs, (0, 0, radius, radius), mode="reflect"), k1[:, None, :, None], groups=n)
    x = xs.transpose(0, 1)
    # Gaussian noise, variance 1e-5..1e-4, p 0.5
    var = 1e-5 + 9e-5 * rand(n, 1, 1, 1)
    on = (rand(n, 1, 1, 1) < 0.5).float()
    noise = torch.randn(x.shape, generator=generator, device=dev)
    x = x + on * noise * var.sqrt()
    return (x - mean) / std


# ---------------------------------------------------------------------------- model


def _resnet(arch: str, dim: int):
    import torch.nn as nn
    import torchvision

    factory = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34,
               "resnet50": torchvision.models.resnet50}
    if arch not in factory:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(factory)}.")
    net = factory[arch](weights=None, num_classes=dim)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    width = net.fc.in_features
    # the MLP head of MoCoV2: fc.0 (width x width), ReLU, fc.2 (width -> dim)
    net.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))
    return net


def build_moco(config: PretrainConfig):
    """The MoCo module: ``encoder_q``, ``encoder_k`` (a momentum copy), ``queue`` (dim, K)
    of normalised keys and ``queue_ptr``, as in the released checkpoints."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class MoCo(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder_q = _resnet(config.arch, config.dim)
            self.encoder_k = _resnet(config.arch, config.dim)
            self.encoder_k.load_state_dict(self.encoder_q.state_dict())
            for p in self.encoder_k.parameters():
                p.requires_grad = False
            queue = F.normalize(torch.randn(config.dim, config.queue_size), dim=0)
            self.register_buffer("queue", queue)
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    return MoCo()


def _concat_all_gather(t):
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------- training


@dataclass
class EpochLog:
    epoch: int
    iteration: int
    loss: float
    accuracy: float
    lr: float
    images_per_s: float
    seconds: float
    extra: dict = field(default_factory=dict)


def load_pretrain_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint of ours or the released one (data only: ``weights_only=True``)."""
    from ._torchfile import load_torch_file

    ckpt = load_torch_file(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"'{path}' is not a MoCo checkpoint (no 'state_dict').")
    return ckpt


def pretrain(patch_dir, out_dir, config: PretrainConfig | None = None, *, device="auto",
             resume: bool = False, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> Iterator[EpochLog]:
    """Pre-train on the patches below *patch_dir*; yields an :class:`EpochLog` per epoch.

    Writes ``OUT/checkpoint.pth.tar`` (atomically, every epoch; the previous epoch's file is
    kept as ``checkpoint_prev.pth.tar``) and ``OUT/log.csv``. ``progress(done, total, stage)``
    counts the patches read, then every iteration of the run ("epoch 3 / 10, loss 3.210,
    accuracy 0.41"). ``should_stop()`` ends the run within the current iteration with the
    last finished epoch's checkpoint intact (raises Cancelled). Runs under torch.distributed
    when it is initialised (torchrun). Messages name the :class:`PretrainConfig` fields
    (``batch_size``, ``queue_size``) and ``resume``; the CLI and the widget say them in
    their own words.
    """
    config = config or PretrainConfig()
    rank, world = _world()
    _check(config, world)
    out_dir = Path(out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    data = _read_patches(patch_dir, out_dir, config, rank, world, progress, should_stop)
    run = _setup(config, _device(device, world), world)
    start_epoch, iteration, norms = _resume(run, out_dir, config, resume, data.norms())
    steps_per_epoch = len(data) // config.batch_size
    start_time = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        losses, accs, lr = [], [], _epoch_lr(run, config, epoch)
        for loss, acc in _epoch_steps(run, data, config, epoch, norms, rank, world, should_stop):
            iteration += 1
            losses.append(loss)
            accs.append(acc)
            if rank == 0:
                report(progress, epoch * steps_per_epoch + len(losses), config.epochs * steps_per_epoch,
                       f"epoch {epoch + 1} / {config.epochs}, loss {loss:.3f}, accuracy {acc:.2f}")
        seconds = time.perf_counter() - t0
        log = EpochLog(epoch + 1, iteration, float(np.mean(losses)), float(np.mean(accs)), lr,
                       steps_per_epoch * config.batch_size / seconds, seconds)
        if rank == 0:
            _save_checkpoint(run.moco, run.optimizer, config, epoch + 1, iteration, norms,
                             out_dir / CHECKPOINT_NAME, data)
            _append_log(out_dir / LOG_NAME, log)
        yield log
        if config.max_minutes is not None and \
                time.perf_counter() - start_time > 60 * config.max_minutes:
            break


def _check(config: PretrainConfig, world: int) -> None:
    if config.amp not in ("auto", "on", "off"):
        raise ValueError(f"Unknown amp setting {config.amp!r}; choose auto, on or off.")
    if config.batch_size % world:
        raise ValueError(f"The batch_size ({config.batch_size}) must be divisible by the number "
                         f"of processes ({world}).")
    if config.queue_size % config.batch_size:
        raise ValueError(f"The queue_size ({config.queue_size}) must be a multiple of the "
                         f"batch_size ({config.batch_size}).")


def _device(device, world: int):
    """This process's device: its own GPU under torchrun, else the one asked for."""
    import torch

    from .device import select_device

    if world > 1:
        return (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                if torch.cuda.is_available() else torch.device("cpu"))
    return select_device(device) if isinstance(device, str) else torch.device(device)


def _read_patches(patch_dir, out_dir: Path, config, rank, world, progress, should_stop):
    """Decode the patches once into a memory-mapped file beside the checkpoints (rank 0
    writes it, the others wait and read it)."""
    import torch

    cache = out_dir / PATCH_CACHE_NAME.format(size=max(config.crop, 8))
    if world > 1 and rank != 0:
        torch.distributed.barrier()
    data = PatchFolder(patch_dir, size=max(config.crop, 8), should_stop=should_stop, cache=cache,
                       progress=staged(progress if rank == 0 else None, "reading patches"))
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    if len(data) < config.batch_size:
        raise ValueError(f"The batch_size ({config.batch_size}) is larger than the data set "
                         f"({len(data)} readable images in '{patch_dir}'): use a smaller "
                         "batch_size or more patches.")
    return data


@dataclass
class _MoCoRun:
    """The networks, optimizer and precision of one pre-training run."""

    moco: Any
    query: Any  # the query encoder, DistributedDataParallel-wrapped under torchrun
    optimizer: Any
    scaler: Any
    device: Any
    precision: Any
    channels_last: bool


def _setup(config: PretrainConfig, dev, world: int) -> _MoCoRun:
    import torch

    from .device import autocast_policy, describe_device

    torch.manual_seed(config.seed)  # the same initial encoders and queue on every rank
    moco = build_moco(config).to(dev)
    precision = autocast_policy(dev, config.amp, "training", describe_device(dev))
    channels_last = dev.type == "cuda" or (dev.type == "cpu" and precision.enabled)
    if channels_last:
        moco = moco.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if world > 1:  # the key encoder uses shuffled BatchNorm (see _keys), as MoCo does
        query = torch.nn.parallel.DistributedDataParallel(
            moco.encoder_q, device_ids=[dev.index] if dev.type == "cuda" else None)
    else:
        query = moco.encoder_q
    optimizer = torch.optim.SGD(moco.encoder_q.parameters(), lr=config.lr,
                                momentum=config.momentum, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.enabled and precision.dtype == torch.float16)
    return _MoCoRun(moco, query, optimizer, scaler, dev, precision, channels_last)


def _resume(run: _MoCoRun, out_dir: Path, config, resume: bool, norms):
    """(first epoch, iterations done, norms): from the checkpoint when resuming, else 0, 0."""
    ckpt_path = out_dir / CHECKPOINT_NAME
    resume_from = next((c for c in (ckpt_path, out_dir / PREVIOUS_CHECKPOINT_NAME) if c.exists()), None)
    if not resume:
        return 0, 0, norms
    if resume_from is None:
        raise ValueError(f"resume: no checkpoint in '{out_dir}' to continue from.")
    ckpt = load_pretrain_checkpoint(resume_from, map_location=run.device)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    run.moco.load_state_dict(state)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("config", {}).get("queue_size", config.queue_size) != config.queue_size:
        raise ValueError("resume needs the same queue_size as the checkpoint.")
    return int(ckpt["epoch"]), int(ckpt.get("iteration", 0)), tuple(float(v) for v in ckpt["norms"])


def _epoch_lr(run: _MoCoRun, config: PretrainConfig, epoch: int) -> float:
    """Step schedule: x0.1 at each milestone epoch."""
    lr = config.lr * 0.1 ** sum(epoch >= m for m in config.milestones())
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _epoch_steps(run: _MoCoRun, data, config, epoch, norms, rank, world, should_stop):
    """Yield (loss, contrastive accuracy) per iteration of one epoch. Everything random in
    it comes from (seed, epoch), so a resumed run is exact."""
    import torch

    n = len(data)
    per_rank = config.batch_size // world
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    aug_gen = torch.Generator(device=run.device).manual_seed((config.seed * 100_003 + epoch) * 1009 + rank)
    run.moco.train()
    for step in range(n // config.batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled(f"pre-training stopped in epoch {epoch + 1}; the checkpoint of "
                            f"epoch {epoch} is kept")
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        idx = idx[rank * per_rank:(rank + 1) * per_rank]
        batch = data.data[idx].to(run.device, non_blocking=True)
        yield _moco_step(run, batch, config, norms, aug_gen, world, should_stop)


def _moco_step(run: _MoCoRun, batch, config, norms, aug_gen, world, should_stop):
    """One MoCoV2 iteration on a batch of uint8 patches: (loss, contrastive accuracy)."""
    import torch
    import torch.nn.functional as F

    mean, std = norms
    im_q = augment_views(batch, mean, std, aug_gen, config.crop)
    im_k = augment_views(batch, mean, std, aug_gen, config.crop)
    if run.channels_last:
        im_q = im_q.contiguous(memory_format=torch.channels_last)
        im_k = im_k.contiguous(memory_format=torch.channels_last)
    with run.precision.autocast(run.device.type):
        # Stop lands inside the query forward too (before anything is updated)
        with stoppable(run.moco.encoder_q, should_stop if world == 1 else None):
            q = run.query(im_q)
        with torch.no_grad():
            _momentum_update(run.moco, config.moco_momentum)
            k = _keys(run.moco.encoder_k, im_k, world, aug_gen)
    # the contrastive logits in float32: small differences matter at temperature 0.2
    q = F.normalize(q.float(), dim=1)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ run.moco.queue.clone().detach()
    logits = torch.cat([l_pos, l_neg], dim=1) / config.temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=run.device)
    loss = F.cross_entropy(logits, labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    with torch.no_grad():
        _enqueue(run.moco, _concat_all_gather(k))
    return float(loss.detach()), float((logits.argmax(1) == 0).float().mean())


def _momentum_update(moco, m: float) -> None:
    for pq, pk in zip(moco.encoder_q.parameters(), moco.encoder_k.parameters()):
        pk.mul_(m).add_(pq.detach(), alpha=1 - m)


def _keys(encoder_k, im_k, world: int, generator):
    """Key features; with several processes the batch is shuffled across them first so that
    BatchNorm statistics cannot leak which key belongs to which query (MoCo's shuffled BN)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    if world == 1:
        return F.normalize(encoder_k(im_k).float(), dim=1)
    n_local = im_k.shape[0]
    everything = _concat_all_gather(im_k)
    perm = torch.randperm(everything.shape[0], device=im_k.device, generator=generator)
    dist.broadcast(perm, src=0)
    unshuffle = torch.argsort(perm)
    rank = dist.get_rank()
    mine = perm.view(world, -1)[rank]
    k = F.normalize(encoder_k(everything[mine]).float(), dim=1)
    k_all = _concat_all_gather(k)
    return k_all[unshuffle.view(world, -1)[rank]][:n_local]


def _enqueue(moco, keys) -> None:
    k = moco.queue.shape[1]
    ptr = int(moco.queue_ptr)
    b = keys.shape[0]
    moco.queue[:, ptr:ptr + b] = keys.T.to(moco.queue.dtype)
    moco.queue_ptr[0] = (ptr + b) % k


def _save_checkpoint(moco, optimizer, config, epoch, iteration, norms, path: Path, data) -> None:
    from ._torchfile import save_torch_file

    state = {f"module.{k}": v.detach().cpu() for k, v in moco.state_dict().items()}
    ckpt = {"epoch": epoch, "arch": config.arch, "state_dict": state,
            "optimizer": optimizer.state_dict(), "norms": [float(norms[0]), float(norms[1])],
            "iteration": iteration, "config": asdict(config),
            "data": {"n_images": len(data), "skipped": data.skipped}}
    # the new file is complete before the old one moves aside: a crash leaves one of them
    tmp = path.with_name(path.name + ".new")
    save_torch_file(ckpt, tmp)
    if path.exists():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT_NAME))
    os.replace(tmp, path)


def _append_log(path: Path, log: EpochLog) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", "iteration", "loss", "accuracy", "lr", "images_per_s", "seconds"])
        w.writerow([log.epoch, log.iteration, f"{log.loss:.5f}", f"{log.accuracy:.4f}",
                    f"{log.lr:.6g}", f"{log.images_per_s:.1f}", f"{log.seconds:.2f}"])
    try:  # TensorBoard when it is installed
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - optional
        return
    with SummaryWriter(str(path.parent / "tensorboard")) as tb:
        for key in ("loss", "accuracy", "lr", "images_per_s"):
            tb.add_scalar(key, getattr(log, key), log.epoch)


# ------------------------------------------------------------------------------ CLI


def in_words(message: str, names: dict[str, str]) -> str:
    """*message* with the config fields it names (``batch_size``, ...) said as *names* does:
    the CLI's options, or the widget's field labels."""
    import re

    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], message)
