"""The segmentation model: an smp U-Net with a ResNet encoder (50, as CEM500K; or the
CPU-sized 18 / 34, and a ResNet18 with a narrower decoder), and its one-file bundle.

A *model bundle* is one file (``torch.save`` of plain data: tensors, numbers, strings,
lists, dicts) holding the weights, the architecture, the class names, the normalisation,
the crop size, the encoder's origin and the training record. It loads with
``torch.load(weights_only=True)`` and nothing else.

A U-Net may work *binned* (:func:`set_bin`): it averages its full-resolution input over
bin x bin pixels, runs there, and upsamples its logits back, so callers always give and get
full resolution (bin^2 less work, for structures much larger than a pixel).

Output convention: ``classes[0]`` is the background, label value ``i`` means
``classes[i]``. With two classes the network has one output (a logit; sigmoid gives the
probability of ``classes[1]``), with more it has one output per class (softmax).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARCHS", "BINS", "BUNDLE_FORMAT", "ENCODERS", "ModelBundle", "arch_name", "bin_of", "build_unet",
           "bin_step", "bin_words", "encoder_name", "forward_logits", "load_bundle", "predict_slice", "save_bundle", "set_bin", "size_step"]

BUNDLE_FORMAT = "napari-cem-model"
BUNDLE_VERSION = 1
ARCHITECTURE = {"name": "Unet", "in_channels": 1, "library": "segmentation_models_pytorch"}
ENCODERS = ("resnet50", "resnet34", "resnet18")  # what encoder weights and pre-training take
DECODER = (256, 128, 64, 32, 16)  # smp's default decoder channels
SLIM_DECODER = (128, 64, 32, 16, 16)  # half as wide: 1.2x the ResNet18's training speed on a CPU (RESULTS.md)
#: the U-Nets napari-cem builds: name -> (encoder, decoder channels)
ARCHS = {"resnet50": ("resnet50", DECODER), "resnet34": ("resnet34", DECODER),
         "resnet18": ("resnet18", DECODER), "resnet18-slim": ("resnet18", SLIM_DECODER)}


def build_unet(n_outputs: int, arch: str = "resnet50"):
    """``smp.Unet(encoder, in_channels=1, encoder_weights=None, classes=n_outputs,
    decoder_channels=...)`` of the U-Net named *arch* (:data:`ARCHS`)."""
    import segmentation_models_pytorch as smp

    if int(n_outputs) < 1:
        raise ValueError(f"A U-Net needs at least one output, got {n_outputs}.")
    if arch not in ARCHS:
        raise ValueError(f"Unknown model {arch!r}; choose one of {', '.join(ARCHS)}.")
    encoder, decoder = ARCHS[arch]
    return smp.Unet(encoder, in_channels=1, encoder_weights=None, classes=int(n_outputs),
                    decoder_channels=decoder)


BINS = (1, 2, 4)  # the binnings a U-Net may work at (1: full resolution)


def _run_binned(factor: int, run, x):
    """``run(x)`` on *x* averaged over factor x factor pixels, its logits upsampled back
    (bilinear): the one rule of a binned U-Net's forward."""
    if factor == 1:
        return run(x)
    import torch.nn.functional as F

    logits = run(F.avg_pool2d(x, factor))
    return F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)


class _Binned:
    """Mixed into a U-Net's class by :func:`set_bin`: its forward runs binned."""

    def forward(self, x):
        return _run_binned(self.napari_cem_bin, super().forward, x)


_BINNED_CLASSES: dict = {}


def set_bin(model, factor: int):
    """Make *model* work binned *factor* x *factor* (1: full resolution); returns it. Its
    layers, attributes and state dict stay those of the plain U-Net."""
    factor = int(factor)
    if factor not in BINS:
        raise ValueError(f"The binning must be one of {', '.join(map(str, BINS))}, got {factor}.")
    base = type(model)._plain_class if isinstance(model, _Binned) else type(model)
    if factor == 1:
        model.__class__ = base
    else:
        if base not in _BINNED_CLASSES:
            _BINNED_CLASSES[base] = type(f"Binned{base.__name__}", (_Binned, base), {"_plain_class": base})
        model.__class__ = _BINNED_CLASSES[base]
        model.napari_cem_bin = factor
    return model


def bin_of(model) -> int:
    """The binning *model* works at (1: full resolution)."""
    return int(model.napari_cem_bin) if isinstance(model, _Binned) else 1


def bin_words(model) -> str:
    """"binned 2 x 2" for a binned U-Net, "" at full resolution (what messages say)."""
    factor = bin_of(model)
    return f"binned {factor} x {factor}" if factor > 1 else ""


def bin_step(factor: int) -> int:
    """Input sides of a U-Net binned *factor* x *factor* are multiples of this: 32 pixels
    where it runs (its encoder downsamples 32x)."""
    return 32 * int(factor)


def size_step(model) -> int:
    """The input sides *model* takes are multiples of this (:func:`bin_step`)."""
    return bin_step(bin_of(model))


def encoder_name(model) -> str:
    """Which ResNet a U-Net's encoder is, read from its layers (so a bundle's record cannot
    disagree with its weights)."""
    enc = model.encoder
    if enc.out_channels[-1] == 2048:
        return "resnet50"
    return "resnet34" if len(enc.layer3) == 6 else "resnet18"


def arch_name(model) -> str:
    """The :data:`ARCHS` name of a U-Net, read from its layers."""
    encoder = encoder_name(model)
    width = model.decoder.blocks[0].conv1[0].out_channels
    for name, (enc, decoder) in ARCHS.items():
        if enc == encoder and decoder[0] == width:
            return name
    raise ValueError(f"A U-Net with a {encoder} encoder and {width} decoder channels is not one napari-cem builds.")


def pretty_encoder(name: str) -> str:
    """"resnet18-slim" -> "ResNet18 (slim decoder)"."""
    return name.replace("resnet", "ResNet").replace("-slim", " (slim decoder)")


def n_outputs_for(n_classes: int) -> int:
    if n_classes < 2:
        raise ValueError("A segmentation model needs at least two classes (background and one structure).")
    return 1 if n_classes == 2 else n_classes


def widen_head(model, old_classes: Sequence[str], new_classes: Sequence[str]) -> None:
    """Give *model* (trained for *old_classes*) the outputs of *new_classes* (those and more),
    in place: each class it knew keeps its learned output, a new class starts from a fresh
    one. One structure (a sigmoid logit l) becomes the softmax pair (0, l), the same probability."""
    import torch

    old_conv = model.segmentation_head[0]
    new_conv = type(old_conv)(old_conv.in_channels, n_outputs_for(len(new_classes)),
                              kernel_size=old_conv.kernel_size, padding=old_conv.padding)
    weight, bias = old_conv.weight, old_conv.bias
    if len(old_classes) == 2:  # sigmoid: the background's logit is 0
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    with torch.no_grad():
        for i, c in enumerate(new_classes):  # more than two: softmax outputs, one per class
            if c in old_classes:
                j = list(old_classes).index(c)
                new_conv.weight[i], new_conv.bias[i] = weight[j], bias[j]
    model.segmentation_head[0] = new_conv.to(old_conv.weight.device, old_conv.weight.dtype)


@dataclass
class ModelBundle:
    """A trained model with everything needed to use it (see the module docstring)."""

    model: Any  # torch.nn.Module returning logits
    classes: list[str]
    norms: tuple[float, float]
    crop_size: int = 512
    encoder: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) < 2:
            raise ValueError("A model bundle needs at least two classes (classes[0] is the background).")
        self.norms = (float(self.norms[0]), float(self.norms[1]))
        if not self.norms[1] > 0:
            raise ValueError(f"The normalisation std must be positive, got {self.norms[1]}.")
        self.crop_size = int(self.crop_size)

    @property
    def n_outputs(self) -> int:
        return n_outputs_for(len(self.classes))

    @property
    def arch(self) -> str:
        return arch_name(self.model)

    @property
    def bin(self) -> int:
        return bin_of(self.model)

    def describe(self) -> str:
        it = self.training.get("iterations")
        enc = self.encoder.get("name", "none")
        binned = f", {bin_words(self.model)}" if self.bin > 1 else ""
        return (f"U-Net {pretty_encoder(self.arch)}{binned}, classes {', '.join(self.classes)}; encoder {enc}"
                + (f"; {it} iterations" if it is not None else ""))


def _plain(value):
    """Turn tuples, numpy scalars and Paths into types weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__module__.startswith("torch"):
        return value
    return str(value)


def save_bundle(bundle: ModelBundle, path: str | os.PathLike) -> Path:
    """Write *bundle* to one file, atomically (the old file stays intact on failure)."""
    from ._torchfile import save_torch_file

    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in bundle.model.state_dict().items()}
    payload = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "architecture": {**ARCHITECTURE, "arch": bundle.arch, "encoder": ARCHS[bundle.arch][0],
                         "decoder_channels": list(ARCHS[bundle.arch][1]), "classes": bundle.n_outputs,
                         "bin": bundle.bin},
        "state_dict": state,
        "classes": list(bundle.classes),
        "norms": [float(bundle.norms[0]), float(bundle.norms[1])],
        "crop_size": int(bundle.crop_size),
        "encoder": _plain(bundle.encoder),
        "training": _plain(bundle.training),
    }
    return save_torch_file(payload, path)


def load_bundle(path: str | os.PathLike, device="cpu") -> ModelBundle:
    """Read a bundle written by ``save_bundle`` (or exported as a bioimage.io package by
    napari-cem); the model is in eval mode on *device*."""
    from ._torchfile import load_torch_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Model file not found: {path}")
    if path.suffix.lower() == ".zip":  # a bioimage.io package (of ours)
        return _bundle_from_package(path, device)
    payload = load_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path.name} is not a napari-cem model file (a fine-tuned model bundle "
                         "is expected; encoder checkpoints go in the Weights option).")
    if int(payload.get("version", 0)) > BUNDLE_VERSION:
        raise ValueError(f"{path.name} was written by a newer napari-cem (bundle version "
                         f"{payload['version']}); update napari-cem to read it.")
    arch = payload.get("architecture", {})
    name = arch.get("arch", arch.get("encoder"))  # version-1 files before "arch": a ResNet50
    if arch.get("name") != "Unet" or name not in ARCHS or arch.get("in_channels") != 1:
        raise ValueError(f"{path.name} holds an architecture napari-cem cannot build: {arch}.")
    classes = list(payload["classes"])
    n_out = n_outputs_for(len(classes))
    if int(arch.get("classes", n_out)) != n_out:
        raise ValueError(f"{path.name} is inconsistent: {len(classes)} classes but {arch.get('classes')} outputs.")
    if arch.get("bin", 1) not in BINS:
        raise ValueError(f"{path.name} works binned {arch.get('bin')} x {arch.get('bin')}; napari-cem "
                         f"knows {', '.join(map(str, BINS))}.")
    model = set_bin(build_unet(n_out, name), arch.get("bin", 1))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: the weights do not fit the U-Net ({str(exc).splitlines()[0]}).") from None
    model.eval().to(device)
    return ModelBundle(model=model, classes=classes, norms=tuple(payload["norms"]),
                       crop_size=int(payload.get("crop_size", 512)),
                       encoder=dict(payload.get("encoder", {})), training=dict(payload.get("training", {})))


def _bundle_from_package(path, device="cpu") -> ModelBundle:
    """The model bundle inside a bioimage.io package written by napari-cem (``export-model``:
    the bundle's record is its ``config.napari_cem``, the state dict its ``weights.pt``); a
    package from another tool is refused with the reason."""
    import io
    import zipfile

    import torch
    import yaml

    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path.name} is not a zip file (a bioimage.io package is one).") from None
    with archive:
        names = set(archive.namelist())
        rdf = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in names), None)
        if rdf is None:
            raise ValueError(f"{path.name} is not a bioimage.io package (no rdf.yaml inside).")
        description = yaml.safe_load(archive.read(rdf)) or {}
        ours = (description.get("config") or {}).get("napari_cem")
        if not isinstance(ours, dict) or ours.get("arch") not in ARCHS:
            what = description.get("name", path.name)
            raise ValueError(f"{path.name} ('{what}') is a bioimage.io package that napari-cem did not write: "
                             "napari-cem runs its own U-Nets only; run this one with bioimageio.core, "
                             "deepImageJ or ilastik.")
        weights = ours.get("weights", "weights.pt")
        if weights not in names:
            raise ValueError(f"{path.name} lacks its weights file {weights}; the package is damaged.")
        state = torch.load(io.BytesIO(archive.read(weights)), map_location="cpu", weights_only=True)
    classes = list(ours["classes"])
    model = set_bin(build_unet(n_outputs_for(len(classes)), ours["arch"]), ours.get("bin", 1))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: the weights do not fit the U-Net ({str(exc).splitlines()[0]}).") from None
    model.eval().to(device)
    return ModelBundle(model=model, classes=classes, norms=tuple(ours["norms"]),
                       crop_size=int(ours.get("crop_size", 512)), encoder=dict(ours.get("encoder") or {}),
                       training=dict(ours.get("training") or {}))


# -- forward helpers ---------------------------------------------------------------------------
def _decoder_takes_list(decoder) -> bool:
    params = inspect.signature(decoder.forward).parameters.values()
    return not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def forward_logits(model, x, *, encoder_grad: bool = True):
    """The U-Net's forward, with the encoder optionally run without autograd (frozen encoder);
    a binned U-Net pools and upsamples as its own forward does."""
    import torch

    def run(x):
        if encoder_grad:
            features = model.encoder(x)
        else:
            with torch.no_grad():
                features = model.encoder(x)
        decoded = model.decoder(features) if _decoder_takes_list(model.decoder) else model.decoder(*features)
        return model.segmentation_head(decoded)

    return _run_binned(bin_of(model), run, x)


def predict_slice(bundle, image2d: np.ndarray, device=None, *, amp: bool | None = None) -> np.ndarray:
    """Labels (uint8, 0 = background) of one 2D uint8 image, whole-slice (padded to the
    model's :func:`size_step`).

    A small helper for previews and benchmarks; the Segment tools do whole volumes.
    """
    import torch
    import torch.nn.functional as F

    from .device import autocast_policy

    model = bundle.model
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    img = np.asarray(image2d)
    if img.ndim != 2:
        raise ValueError(f"predict_slice needs a 2D image, got shape {img.shape}.")
    h, w = img.shape
    step = size_step(model)
    ph, pw = (-h) % step, (-w) % step
    x = torch.from_numpy(np.ascontiguousarray(img)).to(device=device, dtype=torch.float32)[None, None]
    x = (x / 255.0 - bundle.norms[0]) / bundle.norms[1]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    precision = autocast_policy(device, "auto" if amp is None else bool(amp), "inference")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), precision.autocast(device.type):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()[..., :h, :w]
    finally:
        model.train(was_training)
    if logits.shape[1] == 1:
        out = (logits[0, 0] > 0).to(torch.uint8)
    else:
        out = logits[0].argmax(0).to(torch.uint8)
    return out.cpu().numpy()
