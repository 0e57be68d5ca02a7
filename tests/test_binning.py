"""Binned U-Nets (``--bin``): the network runs on the image averaged over bin x bin pixels,
callers give and get full resolution; the binning travels with the bundle, the training,
the predictor, OpenVINO and the bioimage.io package."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_cem.model import (ModelBundle, bin_of, build_unet, forward_logits, load_bundle, predict_slice,
                              save_bundle, set_bin)
from napari_cem.synthetic import make_em_volume
from napari_cem.train import FinetuneConfig, run_finetune

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def binned_bundle():
    torch.manual_seed(0)
    model = set_bin(build_unet(1, "resnet18-slim"), 2).eval()
    return ModelBundle(model=model, classes=["background", "mito"], norms=(0.5, 0.2))


def test_a_binned_unet_is_the_plain_one_on_the_pooled_image_upsampled():
    torch.manual_seed(0)
    model = build_unet(1, "resnet18-slim").eval()
    plain = copy.deepcopy(model)
    set_bin(model, 2)
    x = torch.randn(2, 1, 128, 192)
    with torch.no_grad():
        expected = F.interpolate(plain(F.avg_pool2d(x, 2)), scale_factor=2, mode="bilinear", align_corners=False)
        assert model(x).shape == x.shape
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(forward_logits(model, x, encoder_grad=False), expected)  # training's forward
    assert model.state_dict().keys() == plain.state_dict().keys() and model.encoder is not None
    assert bin_of(copy.deepcopy(model)) == 2
    assert bin_of(set_bin(model, 1)) == 1 and type(model) is type(plain)
    with pytest.raises(ValueError, match="one of 1, 2, 4"):
        set_bin(model, 3)


def test_the_binning_travels_with_the_bundle(binned_bundle, tmp_path):
    loaded = load_bundle(save_bundle(binned_bundle, tmp_path / "m.pt"))
    assert loaded.bin == 2 and "binned 2 x 2" in loaded.describe()
    image = np.random.default_rng(0).integers(0, 255, (100, 130), dtype=np.uint8)  # not a multiple of 64
    np.testing.assert_array_equal(predict_slice(loaded, image), predict_slice(binned_bundle, image))


def test_segment_pads_to_the_binned_step_and_gives_full_resolution(binned_bundle):
    from napari_cem.infer import _model_fingerprint, segment

    volume = np.random.default_rng(1).integers(0, 255, (2, 150, 170), dtype=np.uint8)
    whole = segment(volume, binned_bundle, device="cpu", engine="torch", precision="float32",
                    keep_probabilities=True)
    assert whole.labels.shape == volume.shape
    tiled = segment(volume, binned_bundle, device="cpu", engine="torch", precision="float32", tile=100,
                    keep_probabilities=True)  # 100 px tiles become 64: the binned step
    assert tiled.labels.shape == volume.shape
    plain = copy.deepcopy(binned_bundle.model)
    assert _model_fingerprint(set_bin(plain, 1)) != _model_fingerprint(binned_bundle.model)


def test_openvino_runs_a_binned_unet_as_torch_does(binned_bundle):
    pytest.importorskip("openvino")
    from napari_cem.infer import segment

    volume = np.random.default_rng(2).integers(0, 255, (2, 128, 160), dtype=np.uint8)
    ours = [segment(volume, binned_bundle, device="cpu", engine=e, precision="float32", keep_probabilities=True)
            for e in ("torch", "openvino")]
    assert ours[1].metadata["engine"] == "openvino"
    assert np.abs(ours[0].probabilities.astype(int) - ours[1].probabilities).max() <= 2


def test_training_binned_records_it_and_continuing_keeps_it():
    vol = make_em_volume((2, 128, 128), isotropic=False, seed=3)
    labels = (vol.labels == 2).astype(np.uint8) + 1
    settings = dict(iterations=2, crop_size=128, batch_size=2, device="cpu", arch="resnet18-slim",
                    complete_slices=False)
    bundle = run_finetune(vol.image, labels, bin=2, **settings)
    assert bundle.bin == 2 and bundle.training["bin"] == 2
    again = run_finetune(vol.image, labels, init=bundle, **settings)
    assert again.bin == 2
    with pytest.raises(ValueError, match="keeps its own binning"):
        run_finetune(vol.image, labels, init=bundle, **{**settings, "bin": 4, "crop_size": 256})


def test_the_crop_must_fit_the_binning():
    with pytest.raises(ValueError, match="multiple of 64 and at least 128 when binned 2 x 2"):
        FinetuneConfig(bin=2, crop_size=96)
    with pytest.raises(ValueError, match="bin must be one of"):
        FinetuneConfig(bin=3)
    assert FinetuneConfig(bin=4, crop_size=256).bin == 4


def test_cli_bin_reaches_the_model_and_refuses_a_crop_that_does_not_fit(tmp_path, napari_cem):
    import tifffile

    vol = make_em_volume((2, 128, 128), isotropic=False, seed=3)
    tifffile.imwrite(tmp_path / "x.tif", vol.image)
    tifffile.imwrite(tmp_path / "l.tif", ((vol.labels == 2).astype(np.uint8) + 1))
    code, out, err = napari_cem("finetune", "x.tif", "l.tif", "-o", "m.pt", "--bin", "2", "--crop", "96",
                                cwd=tmp_path)
    assert code == 2 and "--crop must be a multiple of 64 and at least 128 with --bin 2" in err
    assert not (tmp_path / "m.pt").exists()
    code, out, err = napari_cem("finetune", "x.tif", "l.tif", "-o", "m.pt", "--bin", "2", "--crop", "128",
                                "--batch", "2", "--iterations", "2", "--arch", "resnet18-slim", "--device", "cpu",
                                cwd=tmp_path)
    assert code == 0, err
    assert load_bundle(tmp_path / "m.pt").bin == 2 and "binned 2 x 2" in err


@pytest.mark.slow
def test_a_binned_unet_exports_as_torchscript_and_reads_back(binned_bundle, tmp_path):
    pytest.importorskip("bioimageio.core")
    import zipfile

    from bioimageio.spec import load_description

    from napari_cem.bioimage_io import export_bioimageio
    from napari_cem.infer import segment

    out = export_bioimageio(save_bundle(binned_bundle, tmp_path / "m.pt"), tmp_path / "m.zip")
    descr = load_description(out, perform_io_checks=True)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert descr.weights.pytorch_state_dict is None and descr.weights.torchscript is not None
    assert "weights.pt" in zipfile.ZipFile(out).namelist()
    back = load_bundle(out)
    assert back.bin == 2
    volume = np.random.default_rng(3).integers(0, 255, (1, 128, 128), dtype=np.uint8)
    a, b = (segment(volume, x, device="cpu", engine="torch", precision="float32", keep_probabilities=True)
            for x in (binned_bundle, back))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
