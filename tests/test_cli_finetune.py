"""``napari-cem finetune``: trains from files and writes a loadable bundle; user errors exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cem.cli import main
from napari_cem.model import load_bundle
from napari_cem.synthetic import make_em_volume


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft")
    vol = make_em_volume((3, 96, 96), isotropic=False, seed=3)
    tifffile.imwrite(folder / "image.tif", vol.image, photometric="minisblack")
    mito = np.zeros_like(vol.labels)
    mito[1] = (vol.labels[1] == 2).astype(np.uint8) + 1  # slice 1 painted: 1 background, 2 mito
    tifffile.imwrite(folder / "labels.tif", mito, photometric="minisblack")
    tifffile.imwrite(folder / "small.tif", mito[:, :50], photometric="minisblack")
    return folder


def test_finetune_writes_a_bundle(files, tmp_path, capsys):
    out = tmp_path / "model.pt"
    rc = main(["finetune", str(files / "image.tif"), str(files / "labels.tif"), "-o", str(out),
               "--iterations", "2", "--crop", "64", "--batch", "2", "--device", "cpu",
               "--classes", "background,mito"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "trained 2 iterations" in printed.out and str(out) in printed.out
    bundle = load_bundle(out)
    assert bundle.classes == ["background", "mito"] and bundle.training["iterations"] == 2
    assert "labels.tif" in bundle.training["data_source"]
    assert bundle.training["augment"]["angles"] == "right"  # the default preset


def test_finetune_takes_the_model_and_the_encoder_batchnorm(files, tmp_path, capsys):
    import torch

    from napari_cem.model import build_unet

    weights = tmp_path / "r18.pt"
    torch.save({"state_dict": build_unet(1, "resnet18").state_dict()}, weights)
    out = tmp_path / "small.pt"
    rc = main(["finetune", str(files / "image.tif"), str(files / "labels.tif"), "-o", str(out),
               "--iterations", "1", "--crop", "64", "--batch", "2", "--device", "cpu",
               "--weights", str(weights), "--encoder-bn", "adapt"])
    assert rc == 0 and "model U-Net ResNet18 (the encoder weights)" in capsys.readouterr().err
    bundle = load_bundle(out)
    assert bundle.arch == "resnet18" and bundle.encoder["batchnorm"] == "adapt"
    rc = main(["finetune", str(files / "image.tif"), str(files / "labels.tif"), "-o", str(out),
               "--iterations", "1", "--crop", "64", "--batch", "2", "--device", "cpu",
               "--weights", str(weights), "--arch", "resnet50"])
    assert rc == 2 and "encoder weights are a ResNet18, not a ResNet50" in capsys.readouterr().err


def test_finetune_takes_the_paper_augmentations(files, tmp_path):
    out = tmp_path / "paper.pt"
    rc = main(["finetune", str(files / "image.tif"), str(files / "labels.tif"), "-o", str(out),
               "--iterations", "1", "--crop", "64", "--batch", "2", "--device", "cpu",
               "--augment", "cem500k"])
    assert rc == 0
    aug = load_bundle(out).training["augment"]
    assert aug["angles"] == "any" and tuple(aug["scale"]) == (0.7, 1.4) and aug["brightness"] == 0.3


@pytest.mark.parametrize("argv, message", [
    (["missing.tif", "labels.tif"], "image not found"),
    (["image.tif", "small.tif"], "same shape"),
    (["image.tif", "labels.tif", "--classes", "mito"], "Label value 2 is painted but there are only 1"),
    (["image.tif", "labels.tif", "--crop", "100"], "--crop must be a multiple of 32"),
    (["image.tif", "labels.tif", "--weights", "corrupt.pth"], "not a weights file napari-cem can load safely"),
    (["image.tif", "labels.tif", "--weights", "nowhere.pth"], "Weights file not found"),
])
def test_user_errors_are_one_line(files, tmp_path, capsys, monkeypatch, argv, message):
    (files / "corrupt.pth").write_bytes(b"\x00\x01 not torch" * 10)
    monkeypatch.chdir(files)
    rc = main(["finetune", *argv, "-o", str(tmp_path / "m.pt"), "--iterations", "1", "--crop", argv[-1]
               if argv[-2:-1] == ["--crop"] else "64", "--batch", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_finetune_continues_from_a_model_with_init(files, tmp_path, capsys):
    common = [str(files / "image.tif"), str(files / "labels.tif"), "--iterations", "2", "--crop", "64",
              "--batch", "2", "--device", "cpu", "--classes", "background,mito"]
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    assert main(["finetune", *common, "-o", str(first)]) == 0
    assert main(["finetune", *common, "-o", str(second), "--init", str(first)]) == 0
    assert load_bundle(second).training["lineage"] == {"parent": str(first), "rounds": [2]}
    # a third class painted: refused with a hint, accepted with --add-classes
    three = tifffile.imread(files / "labels.tif")
    three[1, :8, :8] = 3
    tifffile.imwrite(tmp_path / "three.tif", three, photometric="minisblack")
    grown = [str(files / "image.tif"), str(tmp_path / "three.tif"), *common[2:-1], "background,mito,er"]
    capsys.readouterr()
    assert main(["finetune", *grown, "-o", str(tmp_path / "g.pt"), "--init", str(second)]) == 2
    assert "new class 'er'" in capsys.readouterr().err and not (tmp_path / "g.pt").exists()
    assert main(["finetune", *grown, "-o", str(tmp_path / "g.pt"), "--init", str(second), "--add-classes"]) == 0
    assert load_bundle(tmp_path / "g.pt").classes == ["background", "mito", "er"]
    capsys.readouterr()
    assert main(["finetune", *common, "-o", str(tmp_path / "x.pt"), "--init", str(tmp_path / "gone.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
