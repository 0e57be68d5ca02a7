"""Batched fine-tuning augmentations (napari_cem.augment): geometry, labels, intensity."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_cem.augment import IGNORE, Augment, augment_batch, window_side  # noqa: E402

STILL = dict(scale=(1.0, 1.0), aspect=(1.0, 1.0), flips=False, p_intensity=0.0)


def _windows(side, n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, side, side), dtype=np.uint8))
    targets = torch.from_numpy((rng.random((n, side, side)) < 0.3).astype(np.uint8))
    return images, targets


@pytest.mark.parametrize("crop", [64, 96, 224, 256])
@pytest.mark.parametrize("recipe", ["default", "cem500k", "no rotation"])
def test_an_untransformed_crop_is_an_exact_copy_of_the_window_centre(crop, recipe):
    # The window is cut larger than the crop (room for rotation and zoom). With no transform
    # drawn, the crop must be the window's centre pixel for pixel: sampling between pixels
    # would blur every training crop (a 2 x 2 box on pixel noise halves its std), which the
    # images to segment never are.
    aug = Augment(rotate=False) if recipe == "no rotation" else Augment.preset(recipe)
    side = window_side(crop, aug)
    images, targets = _windows(side)
    x, y = augment_batch(images, targets, crop, Augment(rotate=False, **STILL), (0.0, 1.0),
                         torch.Generator().manual_seed(0))
    o = (side - crop) // 2
    expected = images[:, o:o + crop, o:o + crop].float() / 255
    assert torch.allclose(x[:, 0], expected, atol=2e-4)  # float rounding only; 1/255 = 4e-3
    assert torch.equal(y, targets[:, o:o + crop, o:o + crop].long())


def test_rotations_and_zoom_keep_image_and_labels_aligned_and_inside_the_window():
    crop = 128
    aug = Augment.cem500k()  # any angle and zoom: the resampling path
    aug.p_intensity = 0.0
    side = window_side(crop, aug)
    # image bright exactly where the label is 1: any misalignment shows as disagreement
    yy, xx = np.mgrid[:side, :side]
    blobs = (((yy // 24) + (xx // 24)) % 2).astype(np.uint8)
    targets = torch.from_numpy(np.stack([blobs] * 8))
    images = targets * 255
    x, y = augment_batch(images, targets, crop, aug, (0.0, 1.0), torch.Generator().manual_seed(3))
    assert x.shape == (8, 1, crop, crop) and y.shape == (8, crop, crop)
    assert not (y == IGNORE).any()  # the default window holds every rotated, zoomed crop
    assert set(torch.unique(y).tolist()) <= {0, 1}
    agree = ((x[:, 0] > 0.5) == (y == 1)).float().mean().item()
    assert agree > 0.97  # only pixels on the blob edges may differ
    # the crops were really transformed (not all the same view of the pattern)
    assert not torch.equal(y[0], y[1])


def test_intensity_jitter_changes_images_not_labels():
    crop = 64
    side = window_side(crop, Augment())
    images, targets = _windows(side, n=16, seed=1)
    geometry = dict(scale=(1.0, 1.0), aspect=(1.0, 1.0), flips=False, rotate=False)
    plain, y0 = augment_batch(images, targets, crop, Augment(p_intensity=0.0, **geometry), (0.0, 1.0),
                              torch.Generator().manual_seed(5))
    jit, y1 = augment_batch(images, targets, crop, Augment(p_intensity=1.0, **geometry), (0.0, 1.0),
                            torch.Generator().manual_seed(5))
    assert torch.equal(y0, y1)
    assert not torch.allclose(plain, jit)
    assert float(jit.min()) >= 0.0 and float(jit.max()) <= 1.0  # clipped to the 8-bit range


def test_normalisation_uses_the_given_norms():
    crop = 64
    side = window_side(crop, Augment(rotate=False))
    images = torch.full((2, side, side), 128, dtype=torch.uint8)
    targets = torch.zeros((2, side, side), dtype=torch.uint8)
    x, _ = augment_batch(images, targets, crop, Augment(rotate=False, **STILL), (0.5, 0.25),
                         torch.Generator().manual_seed(0))
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-5)


def test_quarter_turns_are_exact():
    crop = 64
    aug = Augment(angles="right", **{k: v for k, v in STILL.items()})
    side = window_side(crop, aug)
    images, targets = _windows(side, n=32, seed=2)
    x, y = augment_batch(images, targets, crop, aug, (0.0, 1.0), torch.Generator().manual_seed(1))
    o = (side - crop) // 2
    centre = images[:, o:o + crop, o:o + crop].float() / 255
    seen = set()
    for i in range(len(x)):
        matches = [k for k in range(4) if torch.allclose(x[i, 0], torch.rot90(centre[i], k, (0, 1)), atol=2e-4)
                   or torch.allclose(x[i, 0], torch.rot90(centre[i], -k, (0, 1)), atol=2e-4)]
        assert matches, f"crop {i} is not a quarter turn of the window centre"
        seen.add(matches[0])
    assert len(seen) >= 3  # several turns were drawn
    with pytest.raises(ValueError, match="angles"):
        augment_batch(images, targets, crop, Augment(angles="oblique"), (0.0, 1.0), torch.Generator())


def test_presets():
    assert Augment.preset("default") == Augment()
    paper = Augment.preset("cem500k")
    assert paper.angles == "any" and paper.scale == (0.7, 1.4) and paper.brightness == 0.3
    # the paper's window leaves room for any angle and the largest zoom
    assert window_side(256, paper) > 256 * 1.4 * 1.4
    assert window_side(256, Augment()) == 258  # quarter turns need no margin
    with pytest.raises(ValueError, match="preset"):
        Augment.preset("strong")
