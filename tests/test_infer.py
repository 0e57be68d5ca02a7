"""Whole-volume segmentation core: stack and orthoplane, tiling, zarr output that resumes, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_cem._cancel import Cancelled
from napari_cem.infer import (
    _window_1d,
    labels_dtype,
    open_segmentation,
    plan_tiles,
    segment,
)
from napari_cem.synthetic import make_em_volume


class Pointwise(torch.nn.Module):
    """Logit = a * (x - b): a function of each pixel alone (the same in every plane)."""

    def __init__(self, n_out=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, n_out, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(4.0, -4.0, n_out).view(n_out, 1, 1, 1))
            self.conv.bias.copy_(torch.linspace(-1.0, 1.0, n_out))

    def forward(self, x):
        return self.conv(x)


SEEN: dict[int, list] = {}


class Recorder(torch.nn.Module):
    """A 3x3 conv net that records the input shapes it sees (segment() runs a copy of the
    model, so the record lives outside it)."""

    def __init__(self, n_out=1, in_ch=1):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(in_ch, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, n_out, 3, padding=1)
        self.tag = len(SEEN)
        SEEN[self.tag] = []

    @property
    def shapes(self):
        return SEEN[self.tag]

    def forward(self, x):
        SEEN[self.tag].append(tuple(x.shape))
        return self.c2(torch.relu(self.c1(x)))


def bundle(model, classes=("background", "mito"), norms=(0.5, 0.25)):
    return SimpleNamespace(model=model, classes=list(classes), norms=norms)


@pytest.fixture(scope="module")
def iso():
    return make_em_volume((24, 48, 56), isotropic=True, seed=3).image


def test_stack_labels_match_a_direct_forward(iso):
    b = bundle(Pointwise())
    # float32 asked for: "auto" takes bf16 on CPUs that have it (tested below)
    res = segment(iso, b, keep_probabilities=True, precision="float32")
    assert res.labels.shape == iso.shape and res.labels.dtype == np.uint8
    with torch.no_grad():
        x = (torch.from_numpy(iso).float()[:, None] / 255 - 0.5) / 0.25
        p = torch.sigmoid(b.model(x))[:, 0].numpy()
    np.testing.assert_array_equal(res.labels, (p > 0.5).astype(np.uint8))
    assert np.abs(res.probabilities.astype(float) / 255 - p).max() <= 0.5 / 255 + 1e-6
    assert 0.05 < res.labels.mean() < 0.95
    assert res.classes == ["background", "mito"]
    assert res.layer_metadata["napari_cem"]["classes"] == ["background", "mito"]
    assert res.metadata["mode"] == "stack" and res.metadata["precision"] == "float32"


def test_orthoplane_equals_stack_for_a_pointwise_model_and_sees_all_planes(iso):
    stack = segment(iso, bundle(Pointwise()), keep_probabilities=True, precision="float32")
    ortho = segment(iso, bundle(Pointwise()), mode="orthoplane", voxel_size=(8, 8, 8),
                    keep_probabilities=True, precision="float32")
    # each plane gives the same per-voxel confidence: the average equals it (up to rounding)
    assert np.abs(ortho.probabilities.astype(int) - stack.probabilities.astype(int)).max() <= 1
    near = np.abs(stack.probabilities.astype(int) - 127.5) < 2
    assert np.array_equal(ortho.labels[~near], stack.labels[~near])
    rec = Recorder()
    # float32: with bf16 the first batch is also run in float32 (two more slices seen)
    segment(iso, bundle(rec), mode="orthoplane", voxel_size=(8, 8, 8), batch_size=4, precision="float32")
    hw = {s[2:] for s in rec.shapes}
    # xy slices (48 x 56 -> 64 x 64), xz (24 x 56 -> 32 x 64), yz (24 x 48 -> 32 x 64)
    assert hw == {(64, 64), (32, 64)}
    assert sum(s[0] for s in rec.shapes) == 24 + 48 + 56


def test_orthoplane_differs_from_stack_for_a_spatial_model_and_warns_when_anisotropic(iso):
    stack = segment(iso, bundle(Recorder()))
    with pytest.warns(UserWarning, match="not near-isotropic"):
        ortho = segment(iso, bundle(Recorder()), mode="orthoplane", voxel_size=(40, 8, 8))
    assert "not near-isotropic" in ortho.metadata["warnings"][0]
    agree = (stack.labels == ortho.labels).mean()
    assert 0.5 < agree < 1.0


def test_tiles_blend_to_the_whole_slice_prediction():
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), in_channels=1,
                   encoder_weights=None, classes=1).eval()
    img = make_em_volume((2, 150, 170), isotropic=False, seed=1).image
    whole = segment(img, bundle(net), tile=1024, keep_probabilities=True)
    tiled = segment(img, bundle(net), tile=96, overlap=32, batch_size=8, keep_probabilities=True)
    d = np.abs(whole.probabilities.astype(int) - tiled.probabilities.astype(int))
    assert d.mean() < 2.0  # uint8 confidences: < 1 % on average
    assert (whole.labels == tiled.labels).mean() > 0.98


def test_blending_windows_sum_to_one():
    for length, tile, overlap in [(150, 64, 16), (1000, 256, 32), (64, 64, 8), (97, 32, 8)]:
        starts = plan_tiles(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == max(length, min(tile, length))
        total = np.zeros(max(length, tile), np.float64)
        for k, s in enumerate(starts):
            total[s:s + tile] += _window_1d(starts, k, tile)
        np.testing.assert_allclose(total[:length], 1.0, atol=1e-6)
        if len(starts) > 1:
            assert min(b - a for a, b in zip(starts[:-1], starts[1:])) <= tile - overlap


def test_multiclass_argmax_dtype_and_2d_image(iso):
    b = bundle(Pointwise(3), classes=("bg", "a", "b"))
    res = segment(iso[5], b, keep_probabilities=True)
    assert res.labels.shape == iso.shape[1:] and res.probabilities.shape == (3, *iso.shape[1:])
    with torch.no_grad():
        x = (torch.from_numpy(iso[5]).float()[None, None] / 255 - 0.5) / 0.25
        expect = torch.softmax(b.model(x), 1)[0].argmax(0).numpy()
    np.testing.assert_array_equal(res.labels, expect)
    assert set(np.unique(res.labels)) <= {0, 1, 2}
    assert labels_dtype(2) == np.uint8 and labels_dtype(256) == np.uint8
    assert labels_dtype(257) == np.uint16 and labels_dtype(70_000) == np.uint32


def test_lazy_dask_input_gives_the_same_labels(iso):
    import dask.array as da

    ref = segment(iso, bundle(Recorder()))
    lazy = segment(da.from_array(iso, chunks=(5, 48, 56)), bundle(Recorder()))
    np.testing.assert_array_equal(lazy.labels, ref.labels)


def test_zarr_output_resumes_after_an_interruption(iso, tmp_path):
    out = tmp_path / "seg.zarr"
    ref = segment(iso, bundle(Recorder()), keep_probabilities=True)
    done = {"n": 0}  # Stop once two slabs of 4 slices are finished

    with pytest.raises(Cancelled):
        segment(iso, bundle(Recorder()), out=out, slab=4, keep_probabilities=True,
                progress=lambda d, t, s: done.update(n=d), should_stop=lambda: done["n"] >= 8)
    partial = open_segmentation(out)
    assert not partial.metadata["complete"]
    rec = Recorder()
    progress = []
    res = segment(iso, bundle(rec), out=out, slab=4, keep_probabilities=True,
                  progress=lambda d, t, s: progress.append((d, t)))
    seen = sum(s[0] for s in rec.shapes)
    assert 0 < seen < iso.shape[0]  # only the unfinished slabs were predicted again
    assert progress[-1] == (iso.shape[0], iso.shape[0])
    np.testing.assert_array_equal(np.asarray(res.labels), ref.labels)
    np.testing.assert_array_equal(np.asarray(res.probabilities), ref.probabilities)
    done = open_segmentation(out)
    assert done.metadata["complete"] and done.classes == ["background", "mito"]
    # the same store with other settings is refused, not silently mixed
    with pytest.raises(ValueError, match="another model, volume or settings"):
        segment(iso, bundle(Recorder()), out=out, slab=4, threshold=0.3, keep_probabilities=True)


def test_orthoplane_to_zarr_matches_memory(iso, tmp_path):
    ref = segment(iso, bundle(Recorder()), mode="orthoplane", voxel_size=(8, 8, 8))
    res = segment(iso, bundle(Recorder()), mode="orthoplane", voxel_size=(8, 8, 8),
                  out=tmp_path / "o.zarr", slab=16)
    np.testing.assert_array_equal(np.asarray(res.labels), ref.labels)
    import zarr

    assert not any(k.startswith("planes_") for k in zarr.open_group(str(tmp_path / "o.zarr")))


def test_progress_and_cancel(iso):
    seen = []
    segment(iso, bundle(Pointwise()), mode="orthoplane", voxel_size=(8, 8, 8), batch_size=8,
            progress=lambda d, t, s: seen.append((d, t, s)))
    total = 24 + 48 + 56 + 24
    assert seen[-1][:2] == (total, total)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert {s for _, _, s in seen} >= {"xy planes", "xz planes", "yz planes", "averaging planes"}
    with pytest.raises(Cancelled):
        segment(iso, bundle(Pointwise()), should_stop=lambda: True)


def test_reduced_precision_is_checked_against_float32(iso, monkeypatch):
    res = segment(iso[:2], bundle(Recorder()), precision="bf16", engine="torch")
    assert res.metadata["precision"] in ("bf16", "float32")
    assert 0.9 <= res.metadata["float32_agreement"] <= 1.0
    assert res.metadata["float32_agreement_confident"] >= res.metadata["float32_agreement"] - 1e-9
    # a reduced precision that gets confident pixels wrong is dropped for float32
    from napari_cem import infer

    real = infer._Predictor._forward

    def broken(self, x, precision):
        p = real(self, x, "float32")
        return 1 - p if precision == "bf16" else p

    monkeypatch.setattr(infer._Predictor, "_forward", broken)
    from napari_cem.device import DeviceInfo

    monkeypatch.setattr("napari_cem.device.describe_device",
                        lambda device=None: DeviceInfo("cpu", "test CPU", None, True))  # bf16 CPU
    with pytest.warns(RuntimeWarning, match="kept as requested"):
        kept = segment(iso[:2], bundle(Pointwise()), precision="bf16", engine="torch")
    assert kept.metadata["precision"] == "bf16"
    with pytest.warns(RuntimeWarning, match="continuing in float32"):
        res = segment(iso[:2], bundle(Pointwise()), engine="torch")  # auto picks bf16, then drops it
    assert res.metadata["precision"] == "float32"
    ref = segment(iso[:2], bundle(Pointwise()), precision="float32")
    np.testing.assert_array_equal(res.labels, ref.labels)


# -- bad input ---------------------------------------------------------------------------
def test_model_with_wrong_input_channels_is_refused(iso):
    with pytest.raises(ValueError, match="expects 3 input channels"):
        segment(iso, bundle(Recorder(in_ch=3)))


def test_model_whose_outputs_do_not_fit_the_classes_is_refused(iso):
    with pytest.raises(ValueError, match="gives 2 outputs but its 2 classes need 1"):
        segment(iso, bundle(Recorder(n_out=2)))
    with pytest.raises(ValueError, match="gives 1 outputs but its 3 classes need 3"):
        segment(iso, bundle(Recorder(n_out=1), classes=("bg", "a", "b")))


def test_orthoplane_on_a_2d_image_is_refused(iso):
    with pytest.raises(ValueError, match="Orthoplane segmentation needs a 3D volume"):
        segment(iso[0], bundle(Pointwise()), mode="orthoplane")


def test_volume_smaller_than_a_tile_is_padded(iso):
    small = iso[:3, :10, :21]
    res = segment(small, bundle(Recorder()), tile=64, mode="orthoplane", voxel_size=(8, 8, 8))
    assert res.labels.shape == (3, 10, 21)
    tiny = segment(iso[0, :1, :1], bundle(Pointwise()))
    assert tiny.labels.shape == (1, 1)


def test_other_bad_input(iso):
    with pytest.raises(ValueError, match="not a segmentation model"):
        segment(iso, SimpleNamespace(weights=1))
    with pytest.raises(ValueError, match="8-bit"):
        segment(iso.astype(np.float32), bundle(Pointwise()))
    with pytest.raises(ValueError, match="2D image or a 3D"):
        segment(iso[None], bundle(Pointwise()))
    with pytest.raises(ValueError, match="Unknown mode"):
        segment(iso, bundle(Pointwise()), mode="3d")
    with pytest.raises(ValueError, match="threshold"):
        segment(iso, bundle(Pointwise()), threshold=2)
    with pytest.raises(ValueError, match="at least two classes"):
        segment(iso, bundle(Pointwise(), classes=("only",)))


def test_not_a_zarr_segmentation_store_is_refused(iso, tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("x", shape=(2,), dtype="u1")
    with pytest.raises(ValueError, match="not a napari-cem segmentation store"):
        segment(iso, bundle(Pointwise()), out=tmp_path / "other.zarr")
