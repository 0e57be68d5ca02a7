"""The four SPEC features (LBP std, geometric-mean median, entropy std, Canny mean)."""

from __future__ import annotations

import numpy as np
import pytest
from _quality_helpers import textured_patch, uniform_patch

from napari_cem._cancel import Cancelled
from napari_cem.quality import FEATURE_NAMES, quality_features
from napari_cem.quality.features import geometric_mean_batch


def test_feature_names_follow_spec_order():
    assert FEATURE_NAMES == ("lbp_std", "geometric_mean_median", "entropy_std", "canny_mean")


def test_constant_image_has_no_texture_and_its_value_as_geometric_mean():
    f, g = quality_features([np.full((48, 48), 100, np.uint8), np.full((48, 48), 30, np.uint8)])
    # LBP codes differ only within R=8 px of the border (neighbours outside count as 0): the
    # same for any grey value, and far below a textured patch's
    assert f[0] == g[0]
    assert f[0] < quality_features([textured_patch(np.random.default_rng(0), (48, 48))])[0, 0]
    assert f[1] == 100.0
    assert f[2] == 0.0  # entropy 0 everywhere
    assert f[3] == 0.0  # no edge


def test_step_edge_gives_one_line_of_canny_pixels():
    img = np.zeros((64, 64), np.uint8)
    img[:, 32:] = 200
    lbp, gm, ent_std, canny_mean = quality_features([img])[0]
    assert canny_mean == pytest.approx(64 / 64**2, rel=0.1)  # one edge pixel per row
    assert gm == pytest.approx(100, abs=100)  # half 0, half 200: the median sits on one side
    assert ent_std > 0 and lbp > 0


def test_geometric_mean_matches_scikit_image_exactly():
    from skimage.filters import rank

    rng = np.random.default_rng(1)
    batch = np.stack([textured_patch(rng, (40, 52)), uniform_patch(rng, (40, 52)),
                      rng.integers(0, 256, (40, 52)).astype(np.uint8)])
    batch[2, :5] = 0  # zeros: log1p must handle them
    ours = geometric_mean_batch(batch)
    ref = np.stack([rank.geometric_mean(b, np.ones((11, 11), bool)) for b in batch])
    np.testing.assert_array_equal(ours, ref)


def test_features_match_the_scikit_image_recipe_and_mixed_sizes_work():
    from skimage.feature import canny, local_binary_pattern
    from skimage.filters import rank

    rng = np.random.default_rng(2)
    patches = [textured_patch(rng, (64, 64)), uniform_patch(rng, (64, 40)), textured_patch(rng, (48, 64))]
    f = quality_features(patches)
    for p, row in zip(patches, f):
        expected = [local_binary_pattern(p, P=8, R=8).std(),
                    np.median(rank.geometric_mean(p, np.ones((11, 11), bool))),
                    rank.entropy(p, np.ones((7, 7), bool)).std(), canny(p, sigma=1).mean()]
        np.testing.assert_allclose(row, expected, rtol=1e-12)
    # textured beats uniform on every texture feature
    assert f[0, 0] > f[1, 0] and f[0, 2] > f[1, 2] and f[0, 3] > f[1, 3]


def test_parallel_equals_serial_and_progress_reaches_total():
    rng = np.random.default_rng(3)
    patches = np.stack([textured_patch(rng, (32, 32)) for _ in range(70)])
    seen = []
    serial = quality_features(patches, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (70, 70)
    np.testing.assert_array_equal(quality_features(patches, n_jobs=2), serial)


def test_bad_patches_get_plain_messages():
    with pytest.raises(ValueError, match="8-bit"):
        quality_features([np.zeros((32, 32), np.float32)])
    with pytest.raises(ValueError, match="2D"):
        quality_features([np.zeros((3, 32, 32), np.uint8)])
    with pytest.raises(ValueError, match="too small"):
        quality_features([np.zeros((8, 32), np.uint8)])
    assert quality_features([]).shape == (0, 4)


def test_stop_request_cancels():
    rng = np.random.default_rng(4)
    patches = [textured_patch(rng, (32, 32)) for _ in range(40)]
    with pytest.raises(Cancelled):
        quality_features(patches, should_stop=lambda: True)
