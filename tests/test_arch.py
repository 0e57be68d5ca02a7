"""CPU-sized U-Nets (ResNet18/34 encoders) and a frozen encoder's BatchNorm (keep / adapt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cem.device import DeviceInfo
from napari_cem.model import build_unet, encoder_name, load_bundle, save_bundle
from napari_cem.synthetic import make_em_volume
from napari_cem.train import CPU_FLOAT32_HINT, FinetuneConfig, pick_arch, run_finetune
from napari_cem.weights import arch_of_state, encoder_state, load_encoder_weights, read_encoder

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CPU_BF16 = DeviceInfo("cpu", "CPU", None, True)
CPU_FP32 = DeviceInfo("cpu", "CPU", None, False)
GPU = DeviceInfo("cuda", "GPU", 80.0, True)


@pytest.fixture(scope="module")
def sample():
    return make_em_volume((2, 96, 96), isotropic=False, seed=3)


def _checkpoint(tmp_path, arch: str, bn_shift: float = 0.0):
    """An smp-layout encoder checkpoint of *arch*, its BatchNorm means moved by *bn_shift*."""
    src = build_unet(1, arch)
    with torch.no_grad():
        for m in src.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(bn_shift)
    path = tmp_path / f"{arch}.pt"
    torch.save({"state_dict": src.state_dict(), "norms": [0.5, 0.2]}, path)
    return src, path


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_each_encoder_is_recognised_from_its_layers_and_its_tensors(arch):
    model = build_unet(2, arch)
    assert encoder_name(model) == arch
    state, _, layout = encoder_state({"state_dict": model.state_dict()})
    assert layout == "smp" and arch_of_state(state) == arch


def test_a_deeper_resnet_is_refused_not_loaded_in_part(tmp_path):
    import torchvision

    path = tmp_path / "resnet101.pth"
    torch.save(torchvision.models.resnet101().state_dict(), path)
    ckpt = read_encoder(str(path), download=False)
    assert ckpt.arch is None
    with pytest.raises(ValueError, match="more blocks than a ResNet50 .* a deeper ResNet"):
        load_encoder_weights(build_unet(1, "resnet50"), ckpt)


def test_a_small_bundle_round_trips(tmp_path):
    from napari_cem.model import ModelBundle

    bundle = ModelBundle(model=build_unet(1, "resnet18-slim").eval(), classes=["background", "mito"],
                         norms=(0.5, 0.2))
    loaded = load_bundle(save_bundle(bundle, tmp_path / "small.pt"))
    assert loaded.arch == "resnet18-slim" and encoder_name(loaded.model) == "resnet18"
    assert loaded.describe().startswith("U-Net ResNet18 (slim decoder)")
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_weights_load_only_into_the_same_encoder(tmp_path):
    src, path = _checkpoint(tmp_path, "resnet34")
    ckpt = read_encoder(str(path), download=False)
    assert ckpt.arch == "resnet34" and ckpt.layout == "smp"
    model = build_unet(1, "resnet34")
    info = load_encoder_weights(model, ckpt)
    assert info["arch"] == "resnet34" and info["n_tensors_loaded"] == info["n_encoder_tensors"]
    assert torch.equal(model.encoder.conv1.weight, src.encoder.conv1.weight)
    with pytest.raises(ValueError, match="is a ResNet34 encoder; the U-Net has a ResNet50"):
        load_encoder_weights(build_unet(1, "resnet50"), str(path))


@pytest.mark.parametrize("request_, info, kw, expected", [
    ("auto", GPU, {}, "resnet50"),
    ("auto", CPU_BF16, {}, "resnet50"),
    ("auto", CPU_FP32, {}, "resnet50"),  # the slim model did not reach its IoU (RESULTS.md)
    ("auto", CPU_FP32, {"checkpoint": "resnet50"}, "resnet50"),  # released CEM weights
    ("auto", GPU, {"checkpoint": "resnet18"}, "resnet18"),
    ("auto", GPU, {"parent": "resnet34"}, "resnet34"),
    ("resnet34", CPU_BF16, {}, "resnet34"),
    ("resnet18", GPU, {"checkpoint": "resnet18"}, "resnet18"),
    ("resnet18-slim", GPU, {"checkpoint": "resnet18"}, "resnet18-slim"),  # same encoder, slim decoder
])
def test_auto_picks_the_encoder_of_the_weights_else_by_device(request_, info, kw, expected):
    arch, why = pick_arch(request_, info, **kw)
    assert arch == expected and why
    assert (CPU_FLOAT32_HINT in why) == (info is CPU_FP32 and not kw and request_ == "auto")


def test_an_encoder_that_disagrees_with_the_weights_is_refused():
    with pytest.raises(ValueError, match="encoder weights are a ResNet50, not a ResNet18"):
        pick_arch("resnet18-slim", CPU_FP32, checkpoint="resnet50")
    with pytest.raises(ValueError, match="continued from is a U-Net ResNet18"):
        pick_arch("resnet50", GPU, parent="resnet18")
    with pytest.raises(ValueError, match="arch must be one of"):
        FinetuneConfig(arch="resnet101")
    with pytest.raises(ValueError, match="encoder_bn must be one of"):
        FinetuneConfig(encoder_bn="freeze")


def test_training_with_small_weights_builds_their_encoder_and_says_why(sample, tmp_path):
    _, path = _checkpoint(tmp_path, "resnet18")
    labels = (sample.labels == 2).astype(np.uint8)
    notes = []
    bundle = run_finetune(sample.image, labels, classes=["mito"], complete_slices=True, weights=str(path),
                          iterations=1, crop_size=64, batch_size=2, device="cpu",
                          callback=lambda s: notes.append(s.message))
    assert bundle.arch == "resnet18" and bundle.encoder["arch"] == "resnet18"
    assert "model U-Net ResNet18 (the encoder weights)" in notes[0]
    again = run_finetune(sample.image, labels, classes=["mito"], complete_slices=True, init=bundle,
                         iterations=1, crop_size=64, batch_size=2, device="cpu")
    assert again.arch == "resnet18"


def _bn_stats(model):
    return {k: v.clone() for k, v in model.encoder.state_dict().items() if "running_" in k}


def _params(model):
    return {k: v.clone() for k, v in model.encoder.named_parameters()}


@pytest.mark.parametrize("encoder_bn", ["keep", "adapt"])
def test_bn_adapt_changes_running_statistics_and_no_parameter(sample, tmp_path, encoder_bn):
    src, path = _checkpoint(tmp_path, "resnet18", bn_shift=0.3)
    labels = (sample.labels == 2).astype(np.uint8)
    bundle = run_finetune(sample.image, labels, classes=["mito"], complete_slices=True, weights=str(path),
                          encoder_bn=encoder_bn, iterations=2, crop_size=64, batch_size=2, device="cpu")
    assert bundle.encoder["frozen"] == "encoder" and bundle.encoder["batchnorm"] == encoder_bn
    before, after = _bn_stats(src), _bn_stats(bundle.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert (len(changed) == len(before)) if encoder_bn == "adapt" else not changed
    for k, v in _params(src).items():
        assert torch.equal(_params(bundle.model)[k], v), k  # frozen either way
    assert not bundle.model.training  # the bundle comes back in eval mode
