"""Pre-trained ResNet encoder weights for the U-Net: find, download, recognise, load.

The released CEM weights are ResNet50s; a checkpoint of ``napari-cem pretrain --arch
resnet18|resnet34`` (or a torchvision / smp ResNet18/34) loads into the U-Net of that encoder
(:func:`read_encoder` tells which it is).

Layouts recognised (``detect_layout``):

* ``mocov2`` -- the released CEM500K MoCoV2 checkpoint and our own MoCoV2 checkpoints:
  ``{'state_dict': {'module.encoder_q.<resnet key>', 'module.encoder_q.fc.{0,2}.*',
  'module.encoder_k.*', 'module.queue', 'module.queue_ptr'}, 'norms': [mean, std], ...}``
  with a 1-channel ``conv1`` ([64, 1, 7, 7]). ``encoder_q`` minus ``fc`` is kept.
* ``swav`` -- the CEM1.5M SwAV checkpoint: ``module.<resnet key>``,
  ``module.projection_head.*``, ``module.prototypes.weight``.
* ``torchvision`` -- a plain torchvision ResNet50 state dict (``conv1.weight``,
  ``layer1.0...``, ``fc.*``); a 3-channel ``conv1`` is summed to 1 channel.
* ``smp`` -- an smp U-Net or encoder state dict (``encoder.<resnet key>``).

Every layout is mapped to smp's ``encoder.<resnet key>`` names and loaded only when *all*
encoder tensors match by name and shape: a load that matched nothing or only part of the
encoder (the classic ``strict=False`` bug) raises ``ValueError`` instead.

Files are read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
torch and pooch are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cancel import Cancelled
from ._progress import report

__all__ = [
    "KNOWN_WEIGHTS", "WEIGHT_CHOICES", "EncoderCheckpoint", "WeightsSource", "arch_of_state",
    "detect_layout", "encoder_state", "read_encoder",
    "fetch_weights", "load_encoder_weights", "pin_variable", "pinned_sha256", "read_checkpoint",
    "recorded_sha256", "resolve_weights", "verify_cached", "weights_report",
]


@dataclass(frozen=True)
class WeightsSource:
    """A released checkpoint that can be downloaded by name."""

    name: str
    url: str
    fname: str
    layout: str
    description: str
    known_hash: str | None = None  # "sha256:..." when known; None: size/format check only
    min_bytes: int = 50_000_000  # a ResNet50 checkpoint is ~100-300 MB; smaller is a broken file


ZENODO = "https://zenodo.org/records/{record}/files/{fname}?download=1"

#: The released weights (Conrad & Narayan 2021). Their SHA-256 could not be read offline
#: when this was written, so ``known_hash`` is None: a download is checked for size and
#: format (it must load as a ResNet50 checkpoint of the expected layout), its SHA-256 is
#: recorded beside it and checked on every later use; a user can pin one (``pin_variable``).
KNOWN_WEIGHTS: dict[str, WeightsSource] = {
    "cem500k-mocov2": WeightsSource(
        "cem500k-mocov2",
        ZENODO.format(record=6453140, fname="cem500k_mocov2_resnet50_200ep.pth.tar"),
        "cem500k_mocov2_resnet50_200ep.pth.tar", "mocov2",
        "CEM500K MoCoV2 ResNet50, 200 epochs (Zenodo record 6453140)"),
    "cem1.5m-swav": WeightsSource(
        "cem1.5m-swav",
        ZENODO.format(record=6453160, fname="cem1.5m_swav_resnet50_200ep_balanced.pth.tar"),
        "cem1.5m_swav_resnet50_200ep_balanced.pth.tar", "swav",
        "CEM1.5M SwAV ResNet50, 200 epochs, balanced (Zenodo record 6453160)"),
}

WEIGHT_CHOICES = ("none", *KNOWN_WEIGHTS)

#: Grey-level equivalent of the ImageNet normalisation, for torchvision weights.
IMAGENET_GREY_NORMS = (0.449, 0.226)


# -- download ---------------------------------------------------------------------------------
def cached_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the released weights *name* live (or will live) in the cache folder."""
    from .cache import cache_dir

    source = _source(name)
    folder = Path(cache) if cache is not None else cache_dir() / "weights"
    return folder / source.fname


def is_cached(name: str, cache: str | os.PathLike | None = None) -> bool:
    return cached_path(name, cache).is_file()


def _source(name: str) -> WeightsSource:
    try:
        return KNOWN_WEIGHTS[name]
    except KeyError:
        raise ValueError(f"Unknown weights {name!r}; known names: {', '.join(KNOWN_WEIGHTS)}.") from None


PIN_ENV = "NAPARI_CEM_WEIGHTS_SHA256_{key}"


def pin_variable(name: str) -> str:
    """The environment variable that pins the SHA-256 of the released weights *name*."""
    _source(name)
    return PIN_ENV.format(key=re.sub(r"[^A-Z0-9]+", "_", name.upper()))


def pinned_sha256(name: str) -> str | None:
    """The SHA-256 the user pinned for *name* (64 hex digits), or None."""
    variable = pin_variable(name)
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return None
    value = value.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{variable} must be a SHA-256 of 64 hex digits, got {value!r}.")
    return value


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def recorded_sha256(name: str, cache: str | os.PathLike | None = None) -> str | None:
    """The SHA-256 written beside the cached file at its first good download, or None."""
    record = _record_path(cached_path(name, cache))
    try:
        value = record.read_text(encoding="ascii").split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def _write_record(path: Path, sha: str) -> None:
    from ._atomic import write_text_atomic

    write_text_atomic(_record_path(path), f"{sha}  {path.name}\n")


def verify_cached(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The cached file of *name*, checked against its pin and its recorded SHA-256.

    A file that changed since its first good download (or that differs from the pin) is
    refused. A file without a record (downloaded by an older napari-cem) gets the size and
    layout check of a fresh download, then its SHA-256 is recorded.
    """
    source = _source(name)
    path = cached_path(name, cache)
    sha = file_sha256(path)
    pin, record = pinned_sha256(name), recorded_sha256(name, cache)
    if pin is not None and sha != pin:
        raise ValueError(f"The cached {name} weights ({path}) have SHA-256 {sha}, not the {pin} "
                         f"pinned in {pin_variable(name)}: refused. Delete the file to download it again.")
    if record is not None and sha != record:
        raise ValueError(f"The cached {name} weights ({path}) changed since they were downloaded "
                         f"(SHA-256 {sha}, recorded {record}): refused. Delete the file (and its "
                         ".sha256) to download it again.")
    if record is None:
        problem = _check_download(path, source, source.min_bytes)
        if problem:
            raise ValueError(f"The cached {name} weights ({path}) are not a usable checkpoint "
                             f"({problem}); delete the file to download it again.")
        _write_record(path, sha)
    return path


def weights_report(cache: str | os.PathLike | None = None) -> list[dict]:
    """For ``napari-cem info``: each released file, where it is cached, its recorded and pinned hash."""
    rows = []
    for name in KNOWN_WEIGHTS:
        try:
            pin = pinned_sha256(name)
        except ValueError as exc:
            pin = f"invalid ({exc})"
        rows.append({"name": name, "path": str(cached_path(name, cache)), "cached": is_cached(name, cache),
                     "sha256": recorded_sha256(name, cache), "pin": pin, "pin_variable": pin_variable(name)})
    return rows


def _check_download(path: Path, source: WeightsSource, min_bytes: int) -> str | None:
    """Why *path* is not a checkpoint of the expected layout, or None when it is."""
    if path.stat().st_size < min_bytes:
        return f"only {path.stat().st_size:,} bytes (expected at least {min_bytes:,})"
    try:
        layout = detect_layout(read_checkpoint(path))
    except ValueError as exc:
        return str(exc)
    if layout != source.layout:
        return f"it holds a {layout} checkpoint, expected {source.layout}"
    return None


def fetch_weights(name: str, *, cache: str | os.PathLike | None = None, url: str | None = None,
                  known_hash: str | None | type(...) = ..., min_bytes: int | None = None,
                  progress=None, should_stop=None, timeout: float = 60.0) -> Path:
    """Download the released weights *name* into the cache (once) and return the file path.

    The download is resumable: bytes already fetched are kept in ``<file>.part`` and an
    interrupted download continues with an HTTP Range request. *known_hash*
    (``"sha256:<hex>"``; default: the pin in ``NAPARI_CEM_WEIGHTS_SHA256_<NAME>``, else the
    registry's, None for the released files) is checked by pooch. Every download must be at
    least *min_bytes* long and load as a checkpoint of the expected layout; its SHA-256 is
    then recorded beside it (``<file>.sha256``) and checked on every later use
    (``verify_cached``). *url* overrides the registry (tests, mirrors).
    *progress(done_bytes, total_bytes, "downloading")* is called while downloading (total 0
    when the server does not say); *should_stop()* true raises Cancelled, keeping the bytes
    fetched so far for the next try.
    """
    import pooch

    source = _source(name)
    target = cached_path(name, cache)
    if target.is_file():
        path = verify_cached(name, cache)
        if isinstance(known_hash, str) and known_hash.removeprefix("sha256:").lower() != recorded_sha256(name, cache):
            raise ValueError(f"The cached {name} weights ({path}) do not have the SHA-256 {known_hash}: "
                             "refused. Delete the file to download it again.")
        return path
    target.parent.mkdir(parents=True, exist_ok=True)
    if known_hash is ...:
        pin = pinned_sha256(name)
        known_hash = f"sha256:{pin}" if pin else source.known_hash
    min_bytes = source.min_bytes if min_bytes is None else int(min_bytes)
    downloader = _ResumableDownloader(target.with_name(target.name + ".part"), progress, timeout,
                                      should_stop)
    try:
        path = Path(pooch.retrieve(url or source.url, known_hash=known_hash, fname=target.name,
                                   path=target.parent, downloader=downloader, progressbar=False))
    except ValueError as exc:  # pooch: hash mismatch
        raise ValueError(f"The download of {name} is corrupt (checksum mismatch): {exc}") from None
    except OSError as exc:
        raise OSError(f"Could not download {name} from {url or source.url}: {exc}. Without "
                      f"network, download the file elsewhere and pick it as a local file.") from exc
    problem = _check_download(path, source, min_bytes)
    if problem:
        path.unlink(missing_ok=True)
        raise ValueError(f"The download of {name} is not a usable checkpoint ({problem}); "
                         "it was removed, try again.")
    _write_record(path, file_sha256(path))
    return path


class _ResumableDownloader:
    """A pooch downloader that keeps partial bytes and resumes with HTTP Range requests."""

    def __init__(self, part: Path, progress=None, timeout: float = 60.0, should_stop=None):
        self.part = part
        self.progress = progress
        self.timeout = timeout
        self.should_stop = should_stop

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        import shutil

        import requests

        if check_only:
            try:
                return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
            except requests.RequestException:
                return False
        done = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout,
                          allow_redirects=True) as response:
            if response.status_code == 416:  # range beyond the end: the part file is complete
                pass
            else:
                response.raise_for_status()
                if done and response.status_code != 206:  # server ignored the range: restart
                    done = 0
                length = response.headers.get("Content-Length")
                total = done + int(length) if length is not None else None
                with open(self.part, "ab" if done else "wb") as f:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        f.write(chunk)
                        done += len(chunk)
                        report(self.progress, done, total or 0, "downloading")
                        if self.should_stop is not None and self.should_stop():
                            raise Cancelled("the download was cancelled; its bytes are kept")
        if isinstance(output_file, (str, os.PathLike)):
            shutil.move(str(self.part), str(output_file))
        else:  # a file object
            with open(self.part, "rb") as f:
                shutil.copyfileobj(f, output_file)
            self.part.unlink()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec: str | os.PathLike | None, *, download: bool = True,
                    cache: str | os.PathLike | None = None, progress=None) -> Path | None:
    """``None``/"none" -> None; a released name -> its cached file (downloaded if allowed);
    anything else -> an existing local file."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None
    spec_str = str(spec).strip()
    if spec_str in KNOWN_WEIGHTS:
        if is_cached(spec_str, cache):
            return verify_cached(spec_str, cache)
        if not download:
            raise ValueError(f"The weights {spec_str} are not downloaded yet; download them "
                             "first (needs network) or pick a local file.")
        return fetch_weights(spec_str, cache=cache, progress=progress)
    path = Path(spec_str).expanduser()
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path} (give a file, 'none', or one of "
                         f"{', '.join(KNOWN_WEIGHTS)}).")
    return path


# -- reading and recognising ------------------------------------------------------------------
def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)``, with a plain message for a bad file."""
    from ._torchfile import load_torch_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path}")
    obj = load_torch_file(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name} does not hold a state dict (found {type(obj).__name__}).")
    return obj


def _state_dict_of(checkpoint: dict) -> dict:
    for key in ("state_dict", "model", "model_state_dict"):
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and any(_is_tensor(v) for v in inner.values()):
            return inner
    return checkpoint


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def detect_layout(checkpoint: dict) -> str:
    """``mocov2`` | ``swav`` | ``torchvision`` | ``smp`` for a checkpoint dict, else ValueError."""
    keys = [k for k, v in _state_dict_of(checkpoint).items() if _is_tensor(v)]
    if not keys:
        raise ValueError("The file holds no weight tensors.")
    stripped = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if any(k.startswith("encoder_q.") for k in stripped):
        return "mocov2"
    if any(k.startswith(("projection_head.", "prototypes.")) for k in stripped):
        return "swav"
    if any(k.startswith("encoder.layer1.") for k in stripped):
        return "smp"
    if any(k.startswith("layer1.") for k in stripped) and "conv1.weight" in stripped:
        return "torchvision" if not any(k.startswith("module.") for k in keys) else "swav"
    raise ValueError("This file is not a ResNet checkpoint napari-cem recognises (expected the "
                     "CEM500K MoCoV2, CEM1.5M SwAV, a torchvision ResNet or an smp U-Net layout).")


def encoder_state(checkpoint: dict) -> tuple[dict, tuple[float, float] | None, str]:
    """(``{resnet key: tensor}`` of the encoder, norms or None, layout) of a checkpoint."""
    layout = detect_layout(checkpoint)
    state = {k: v for k, v in _state_dict_of(checkpoint).items() if _is_tensor(v)}
    if layout == "mocov2":
        prefixes = ("module.encoder_q.", "encoder_q.")
    elif layout == "swav":
        prefixes = ("module.",)
    elif layout == "smp":
        prefixes = ("module.encoder.", "encoder.")
    else:
        prefixes = ("",)
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                name = key[len(prefix):]
                if not name.startswith(("fc.", "projection_head.", "prototypes.")):
                    out[name] = value
                break
    conv1 = out.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3:
        out["conv1.weight"] = conv1.sum(dim=1, keepdim=True)  # RGB -> grey, same response
    norms = checkpoint.get("norms")
    if norms is not None:
        try:
            norms = (float(norms[0]), float(norms[1]))
        except (TypeError, ValueError, IndexError):
            raise ValueError("The checkpoint's 'norms' entry is not [mean, std].") from None
        if not norms[1] > 0:
            raise ValueError(f"The checkpoint's normalisation std must be positive, got {norms[1]}.")
    elif layout == "torchvision":
        norms = IMAGENET_GREY_NORMS
    return out, norms, layout


@dataclass(frozen=True)
class EncoderCheckpoint:
    """An encoder checkpoint read once: its ResNet tensors, normalisation and which ResNet."""

    name: str  # the released name, or the file's name
    path: Path
    state: dict  # {resnet key: tensor}
    norms: tuple[float, float] | None
    layout: str
    arch: str | None  # "resnet50" | "resnet34" | "resnet18"; None: none of those


def arch_of_state(state: dict) -> str | None:
    """Which ResNet (18, 34, 50) a ``{resnet key: tensor}`` encoder state is; None when its
    blocks are none of those (a partial file or a deeper ResNet: the load says which)."""
    blocks = {}
    for key in state:
        parts = key.split(".")
        if len(parts) > 2 and parts[0].startswith("layer") and parts[1].isdigit():
            blocks[parts[0]] = max(blocks.get(parts[0], 0), int(parts[1]) + 1)
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    counts = tuple(blocks.get(f"layer{i}", 0) for i in range(1, 5))
    known = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
             ((3, 4, 6, 3), True): "resnet50"}
    return known.get((counts, bottleneck))


def read_encoder(spec, *, download: bool = True, cache=None, progress=None) -> EncoderCheckpoint | None:
    """The encoder checkpoint *spec* (a released name or a path) read and recognised; None for
    no weights (random init)."""
    path = resolve_weights(spec, download=download, cache=cache, progress=progress)
    if path is None:
        return None
    state, norms, layout = encoder_state(read_checkpoint(path))
    name = spec if str(spec) in KNOWN_WEIGHTS else Path(path).name
    return EncoderCheckpoint(str(name), Path(path), state, norms, layout, arch_of_state(state))


def load_encoder_weights(model, spec, *, download: bool = True, cache=None, progress=None) -> dict:
    """Load the encoder weights *spec* (name, path, an :class:`EncoderCheckpoint` or None)
    into the smp U-Net *model*.

    Returns the encoder's origin: ``{"name", "path", "layout", "arch", "n_tensors_loaded",
    "n_encoder_tensors", "norms"}`` (``norms`` None when the checkpoint has none). Raises
    ValueError when the file is not a checkpoint, or matches none or only part of the
    encoder (wrong architecture).
    """
    import torch

    from .model import encoder_name, pretty_encoder

    ckpt = spec if isinstance(spec, EncoderCheckpoint) else read_encoder(
        spec, download=download, cache=cache, progress=progress)
    target_arch = encoder_name(model)
    if ckpt is None:
        return {"name": "none", "path": None, "layout": "none", "arch": target_arch, "n_tensors_loaded": 0,
                "n_encoder_tensors": _n_encoder_tensors(model), "norms": None}
    if ckpt.arch is not None and ckpt.arch != target_arch:
        raise ValueError(f"{ckpt.path.name} is a {pretty_encoder(ckpt.arch)} encoder; the U-Net has a "
                         f"{pretty_encoder(target_arch)} (choose model {ckpt.arch}, or auto).")
    target = {k: v for k, v in model.encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    matched, wrong_shape = {}, []
    for key, ref in target.items():
        value = ckpt.state.get(key)
        if value is None:
            continue
        if tuple(value.shape) != tuple(ref.shape):
            wrong_shape.append(f"{key} {tuple(value.shape)} vs {tuple(ref.shape)}")
            continue
        matched[key] = value.to(ref.dtype)
    what = pretty_encoder(target_arch)
    if wrong_shape:
        raise ValueError(f"{ckpt.path.name} is not a {what} with a 1-channel input: "
                         f"{len(wrong_shape)} tensors have other shapes (first: {wrong_shape[0]}).")
    if not matched:
        raise ValueError(f"{ckpt.path.name}: none of the {len(target)} {what} encoder tensors "
                         f"were found ({ckpt.layout} layout); refusing to train from a silent non-load.")
    if len(matched) < len(target):
        missing = sorted(set(target) - set(matched))
        raise ValueError(f"{ckpt.path.name} holds only {len(matched)} of the {len(target)} {what} "
                         f"encoder tensors (missing e.g. {missing[0]}); refusing a partial load.")
    extra = sorted(k for k in ckpt.state if k.startswith("layer") and k not in target
                   and not k.endswith("num_batches_tracked"))
    if extra:
        raise ValueError(f"{ckpt.path.name} holds more blocks than a {what} (e.g. {extra[0]}): a deeper "
                         "ResNet; napari-cem takes a ResNet18, ResNet34 or ResNet50.")
    with torch.no_grad():
        # nn.Module's own method: smp's encoder overrides load_state_dict and returns None
        result = torch.nn.Module.load_state_dict(model.encoder, matched, strict=False)
    unexpected_missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    assert not unexpected_missing and not result.unexpected_keys  # guaranteed by the checks above
    return {"name": ckpt.name, "path": str(ckpt.path), "layout": ckpt.layout, "arch": ckpt.arch,
            "n_tensors_loaded": len(matched), "n_encoder_tensors": len(target),
            "norms": list(ckpt.norms) if ckpt.norms is not None else None}


def _n_encoder_tensors(model) -> int:
    return sum(1 for k in model.encoder.state_dict() if not k.endswith("num_batches_tracked"))
