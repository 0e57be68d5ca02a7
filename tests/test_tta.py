"""Test-time augmentation: the transforms map back exactly, an equivariant model is left as
it is, the average is invariant under the group, tiles agree with whole slices, and the
option reaches segment() from the CLI."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _tiny_models import Pointwise

from napari_cem.infer import segment
from napari_cem.synthetic import make_em_volume
from napari_cem.tta import TTA_PASSES, averaged


class Skewed(torch.nn.Module):
    """A 5x5 convolution with no symmetry: flips and turns change its output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(1, 1, 5, padding=2, padding_mode="reflect")

    def forward(self, x):
        return 3 * self.conv(x)


def _bundle(model):
    return SimpleNamespace(model=model, classes=["background", "mito"], norms=(0.5, 0.25))


@pytest.mark.parametrize("kind", ["flips", "d4"])
def test_an_equivariant_model_is_unchanged(kind):
    x = torch.rand(2, 1, 32, 64)
    model = Pointwise()
    calls = []

    def forward(t):
        calls.append(tuple(t.shape))
        return model(t)

    torch.testing.assert_close(averaged(forward, x, kind), model(x))
    assert len(calls) == TTA_PASSES[kind]
    if kind == "d4":  # quarter turns of a non-square batch swap its sides
        assert (2, 1, 64, 32) in calls


def test_the_d4_average_is_invariant_under_its_group():
    x = torch.rand(1, 1, 48, 48)
    model = Skewed()
    with torch.no_grad():
        plain, avg = model(x), averaged(model, x, "d4")
        turned = averaged(model, torch.rot90(x, 1, dims=(-2, -1)), "d4")
        flipped = averaged(model, torch.flip(x, dims=(-2,)), "flips")
    assert not torch.allclose(plain, avg, atol=1e-3)  # the model is not symmetric
    torch.testing.assert_close(turned, torch.rot90(avg, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flipped, torch.flip(averaged(model, x, "flips"), dims=(-2,)), atol=1e-5, rtol=1e-5)


def test_tta_on_tiles_equals_tta_on_the_whole_slice():
    image = make_em_volume((2, 160, 160), isotropic=False, seed=4).image
    kwargs = dict(device="cpu", precision="float32", keep_probabilities=True, tta="d4")
    whole = segment(image, _bundle(Skewed()), tile=1024, **kwargs)
    tiled = segment(image, _bundle(Skewed()), tile=64, overlap=32, **kwargs)
    assert whole.metadata["tta"] == "d4"
    diff = np.abs(whole.probabilities.astype(int) - tiled.probabilities.astype(int))
    assert diff.max() <= 2  # the blended tiles differ only near tile borders' reflect padding
    plain = segment(image, _bundle(Skewed()), device="cpu", precision="float32", keep_probabilities=True)
    assert np.abs(plain.probabilities.astype(int) - whole.probabilities.astype(int)).max() > 5


def test_an_unknown_tta_is_refused():
    with pytest.raises(ValueError, match="test-time augmentation"):
        segment(np.zeros((32, 32), np.uint8), _bundle(Pointwise()), device="cpu", tta="rot45")


def test_the_cli_passes_tta_to_segment(tmp_path, monkeypatch):
    import tifffile

    import napari_cem.infer
    import napari_cem.model
    from napari_cem.cli import main

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return segment(*args, **kwargs)

    monkeypatch.setattr(napari_cem.infer, "segment", spy)  # the command imports it when it runs
    monkeypatch.setattr(napari_cem.model, "load_bundle", lambda _path: _bundle(Pointwise()))
    tifffile.imwrite(tmp_path / "em.tif", make_em_volume((2, 64, 64), isotropic=False, seed=1).image)
    (tmp_path / "m.pt").write_bytes(b"")
    rc = main(["segment", str(tmp_path / "m.pt"), str(tmp_path / "em.tif"), "-o", str(tmp_path / "out.tif"),
               "--tta", "flips", "--device", "cpu"])
    assert rc == 0 and seen["tta"] == "flips"
    assert (tmp_path / "out.tif").is_file()
