"""The one-file model bundle: round trip, contract, refusal of other files, atomic save."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cem.model import ModelBundle, build_unet, load_bundle, predict_slice, save_bundle


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    model = build_unet(3).eval()
    return ModelBundle(model=model, classes=["background", "mito", "membrane"], norms=(0.55, 0.12),
                       crop_size=256,
                       encoder={"name": "none", "layout": "none", "n_tensors_loaded": 0, "frozen": "none"},
                       training={"iterations": 3, "loss": [0.9, 0.7, 0.5], "data_source": "test",
                                 "date": "2026-01-01T00:00:00+00:00", "planes": ("xy",),
                                 "n": np.int64(4)})


def test_round_trip_gives_the_same_model(bundle, tmp_path):
    path = save_bundle(bundle, tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left
    loaded = load_bundle(path)
    assert loaded.classes == bundle.classes and loaded.n_outputs == 3
    assert loaded.norms == pytest.approx(bundle.norms) and loaded.crop_size == 256
    assert loaded.encoder["frozen"] == "none"
    assert loaded.training["loss"] == [0.9, 0.7, 0.5] and loaded.training["planes"] == ["xy"]
    assert loaded.training["n"] == 4
    assert not loaded.model.training
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), loaded.model(x))
    # loading needs nothing but torch: a plain weights_only load reads it
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "napari-cem-model" and raw["architecture"]["encoder"] == "resnet50"


def test_binary_bundle_has_one_output_and_predicts_labels(tmp_path):
    b = ModelBundle(model=build_unet(1).eval(), classes=["background", "mito"], norms=(0.5, 0.2))
    assert b.n_outputs == 1
    labels = predict_slice(b, np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8), "cpu")
    assert labels.shape == (50, 70) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    loaded = load_bundle(save_bundle(b, tmp_path / "bin.pt"))
    assert loaded.n_outputs == 1 and loaded.model.segmentation_head[0].out_channels == 1


def test_bad_bundles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least two classes"):
        ModelBundle(model=build_unet(1), classes=["background"], norms=(0.5, 0.1))
    with pytest.raises(ValueError, match="not found"):
        load_bundle(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage" * 50)
    with pytest.raises(ValueError, match="not a weights file napari-cem can load safely"):
        load_bundle(junk)
    encoder_ckpt = tmp_path / "encoder.pth.tar"
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 1, 7, 7)},
                "norms": [0.5, 0.1]}, encoder_ckpt)
    with pytest.raises(ValueError, match="not a napari-cem model file"):
        load_bundle(encoder_ckpt)


def test_wrong_weights_in_a_bundle_are_refused(bundle, tmp_path):
    path = save_bundle(bundle, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["classes"] = ["background", "mito"]  # 2 classes but 3 outputs
    raw["architecture"]["classes"] = 1
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_bundle(tmp_path / "bad.pt")


def test_failed_save_keeps_the_old_file(bundle, tmp_path, monkeypatch):
    path = save_bundle(bundle, tmp_path / "model.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_bundle(bundle, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("old", [["background", "mito"], ["background", "mito", "er"]])
def test_a_widened_head_keeps_the_known_classes(old):
    """The classes the model knew keep their outputs; one structure's sigmoid becomes the
    softmax pair (0, logit), so before any training mito's probability only gives up the
    share the new class takes: p_mito + p_new * p_mito_before = p_mito_before (sigmoid case)."""
    from napari_cem.model import widen_head

    torch.manual_seed(1)
    model = build_unet(1 if len(old) == 2 else len(old)).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        before = model(x)[0]
        widen_head(model, old, old + ["membrane"])
        after = model(x)[0]
    assert after.shape[0] == len(old) + 1
    if len(old) == 2:
        p_before = torch.sigmoid(before[0])
        p = torch.softmax(after, 0)
        torch.testing.assert_close(p[1] + p[2] * p_before, p_before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(after[0], torch.zeros_like(after[0]))
    else:  # softmax logits of the known classes are unchanged
        torch.testing.assert_close(after[: len(old)], before)
    assert after[-1].abs().sum() > 0  # the new class has its own, fresh output
