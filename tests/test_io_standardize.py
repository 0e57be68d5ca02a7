"""Standardisation to uint8 and the inverted-contrast guess.

Why: every later step (hashing, the informative filter, the U-Net's normalisation)
assumes the published uint8 convention; an off-by-a-factor here silently shifts them all.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_cem.io import VolumeError, looks_inverted, standardize

VNC = Path(__file__).parents[1].parent / "shared" / "data" / "vnc"


def test_percentile_mapping_on_known_ramp():
    x = np.arange(1000, dtype=np.uint16).reshape(10, 100)
    out, info = standardize(x, percentiles=(10, 90))
    lo, hi = np.percentile(x, (10, 90))
    assert info["window"] == pytest.approx((lo, hi))
    expected = np.rint(np.clip((x - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.dtype == np.uint8
    assert (out[x <= lo] == 0).all() and (out[x >= hi] == 255).all()

    full, _ = standardize(x, percentiles=(0, 100))
    assert full.min() == 0 and full.max() == 255 and (np.diff(full.ravel().astype(int)) >= 0).all()


def test_uint8_untouched_and_invert():
    x = np.random.default_rng(0).integers(0, 256, (5, 20, 20), dtype=np.uint8)
    out, info = standardize(x)
    np.testing.assert_array_equal(out, x)
    inv, info = standardize(x, invert=True)
    np.testing.assert_array_equal(inv, 255 - x)
    assert info["inverted"]


@pytest.mark.parametrize("dtype, divisor", [("uint16", 65535), ("int16", 32767),
                                            ("uint32", 4294967295), ("float32", 1.0)])
def test_dtype_max_reproduces_original_code(dtype, divisor):
    rng = np.random.default_rng(1)
    if dtype == "float32":
        x = rng.random((4, 30, 30)).astype(np.float32)
    else:
        x = rng.integers(0, np.iinfo(dtype).max, (4, 30, 30), dtype=dtype, endpoint=True)
    out, info = standardize(x, mode="dtype-max")
    # cem-dataset: im = im.astype(np.float32) / max_value; im = (im * 255).astype(np.uint8)
    original = ((x.astype(np.float32) / divisor) * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, original)
    assert info["window"] == (0.0, float(divisor))


def test_dtype_max_clips_negative_and_out_of_range():
    x = np.array([[-1.0, 0.0, 0.5], [1.0, 2.0, 0.25]], dtype=np.float32)
    out, _ = standardize(x, mode="dtype-max")
    np.testing.assert_array_equal(out, [[0, 0, 127], [255, 255, 63]])
    neg = np.array([[-100, 0], [32767, 100]], dtype=np.int16)
    out, info = standardize(neg, mode="dtype-max")
    assert out[0, 0] == 0 and out[1, 0] == 255
    assert any("negative" in w for w in info["warnings"])


def test_none_keeps_values_and_can_invert():
    x = np.array([[1.5, 2.0], [3.0, 4.5]], dtype=np.float32)
    out, info = standardize(x, mode="none")
    assert out is x and info["window"] is None
    inv, _ = standardize(x, mode="none", invert=True)
    np.testing.assert_allclose(inv, 6.0 - x)
    assert inv.dtype == x.dtype


def test_rgb_and_rgba_to_luminance():
    grey = np.random.default_rng(2).integers(0, 256, (12, 14), dtype=np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    out, info = standardize(rgb)
    np.testing.assert_array_equal(out, grey)
    assert info["rgb"]
    rgba = np.concatenate([rgb, np.full(grey.shape + (1,), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(standardize(rgba)[0], grey)  # alpha dropped
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 200
    assert standardize(red, mode="none")[0].max() == round(200 * 0.2125)


def test_nan_and_inf_ignored_for_percentiles_and_set_to_zero():
    x = np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)
    y = x.copy()
    y[0, :5] = np.nan
    y[1, 0] = np.inf
    y[1, 1] = -np.inf
    out, info = standardize(y, percentiles=(0, 100))
    assert out[0, :5].tolist() == [0] * 5 and out[1, 0] == 0 and out[1, 1] == 0
    finite = np.isfinite(y)
    lo, hi = y[finite].min(), y[finite].max()
    assert info["window"] == pytest.approx((lo, hi))
    assert info["nonfinite"] == 7
    assert any("NaN" in w for w in info["warnings"])


def test_all_nonfinite_is_an_error():
    with pytest.raises(VolumeError, match="NaN"):
        standardize(np.full((8, 8), np.nan, np.float32))


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int16"])
def test_constant_image_is_black(dtype):
    out, info = standardize(np.full((6, 9, 9), 7, dtype))
    assert out.dtype == np.uint8 and not out.any()
    assert any("single grey value" in w for w in info["warnings"])


def test_spike_at_one_value_falls_back_to_range():
    """Padding can fill both percentiles; the data must still show."""
    x = np.zeros((100, 100), np.uint16)
    x[0, :10] = np.arange(1, 11) * 100
    out, info = standardize(x)
    assert info["window"] == (0.0, 1000.0)
    assert out[0, 9] == 255 and out[0, 0] > 0


def test_bad_mode_and_percentiles():
    with pytest.raises(VolumeError, match="percentile"):
        standardize(np.zeros((4, 4)), mode="minmax")
    with pytest.raises(VolumeError, match="0 <= low < high <= 100"):
        standardize(np.zeros((4, 4)), percentiles=(99, 1))


def test_empty_and_complex_refused():
    with pytest.raises(VolumeError, match="empty"):
        standardize(np.zeros((0, 5), np.uint16))
    with pytest.raises(VolumeError, match="complex"):
        standardize(np.zeros((4, 4), np.complex64))


def test_large_numpy_percentiles_from_bounded_sample():
    """A non-contiguous view (e.g. NIfTI transposed) is sampled without a full copy."""
    data = np.random.default_rng(6).integers(0, 50000, (30, 60, 70), dtype=np.uint16)
    view = data.transpose(2, 1, 0)
    out, info = standardize(view, max_sample_voxels=20000)
    assert info["sampled_voxels"] == 20000
    exact, _ = standardize(np.ascontiguousarray(view))
    assert out.shape == view.shape and np.abs(out.astype(int) - exact).mean() < 1.5


# --------------------------------------------------------------------------------------
# lazy (dask)


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int16"])
def test_dask_equals_numpy_on_small_array(dtype):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(8, 40, 40)) * 1000 + 2000).astype(dtype)
    ref, ref_info = standardize(x)
    lazy, info = standardize(da.from_array(x, chunks=(4, 20, 20)))  # 8 chunks: all sampled
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint8
    assert np.abs(lazy.compute().astype(int) - ref).max() <= 1
    assert info["value_range_exact"] is False and ref_info["value_range_exact"] is True
    for mode in ("dtype-max", "none"):
        a = standardize(x, mode=mode)[0]
        b = standardize(da.from_array(x, chunks=(4, 20, 20)), mode=mode)[0].compute()
        np.testing.assert_array_equal(a, b)


class _CountingArray:
    """Array-like that records which regions dask reads from it."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.reads = []

    def __getitem__(self, key):
        part = self.data[key]
        if part.size:
            self.reads.append(key)
        return part


def test_dask_percentiles_read_a_bounded_sample_of_chunks():
    rng = np.random.default_rng(4)
    data = rng.integers(0, 60000, (40, 40, 40), dtype=np.uint16)
    counting = _CountingArray(data)
    lazy = da.from_array(counting, chunks=(4, 4, 4), asarray=False)  # 1000 chunks
    assert lazy.npartitions == 1000
    out, info = standardize(lazy, max_sample_chunks=20)
    assert isinstance(out, da.Array)
    assert info["sampled_chunks"] == 20 and info["total_chunks"] == 1000
    assert 0 < len(counting.reads) <= 20  # nothing else was read to standardise
    assert info["sampled_voxels"] <= 20 * 64
    # estimated percentiles of a uniform distribution are close to the true ones
    ref = standardize(data)[0]
    got = out[:8].compute()
    assert np.abs(got.astype(int) - ref[:8]).mean() < 2


def test_dask_sample_is_bounded_in_voxels_for_big_chunks():
    data = np.random.default_rng(5).random((16, 64, 64)).astype(np.float32)
    lazy = da.from_array(data, chunks=(16, 64, 64))  # one big chunk
    out, info = standardize(lazy, max_sample_voxels=5000)
    assert info["sampled_voxels"] <= 5000
    assert out.compute().max() == 255


def test_dask_nan_handled_chunkwise():
    x = np.linspace(0, 1, 4000, dtype=np.float32).reshape(10, 20, 20)
    x[0] = np.nan
    out, info = standardize(da.from_array(x, chunks=(5, 20, 20)), percentiles=(0, 100))
    res = out.compute()
    assert (res[0] == 0).all() and res[1:].max() == 255
    assert info["warnings"]


# --------------------------------------------------------------------------------------
# inverted contrast


def _synthetic_em(seed=0, size=256):
    """Light cytoplasm, dark thin membranes and small dark organelles, plus noise."""
    from skimage.draw import disk, line

    rng = np.random.default_rng(seed)
    img = np.full((size, size), 170.0)
    for _ in range(40):
        r0, c0, r1, c1 = rng.integers(0, size, 4)
        rr, cc = line(r0, c0, r1, c1)
        for d in (0, 1):
            img[np.clip(rr + d, 0, size - 1), cc] = 60
    for _ in range(15):
        rr, cc = disk(tuple(rng.integers(10, size - 10, 2)), rng.integers(3, 8), shape=img.shape)
        img[rr, cc] = 90
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_looks_inverted_on_synthetic_and_its_inverse():
    for seed in range(3):
        img = _synthetic_em(seed)
        assert not looks_inverted(img)
        assert looks_inverted(255 - img)
    vol = np.stack([_synthetic_em(s) for s in range(4)])
    assert not looks_inverted(vol) and looks_inverted(255 - vol)
    assert looks_inverted(da.from_array(255 - vol, chunks=(1, 128, 128)))


def test_looks_inverted_flat_and_tiny_are_not_flagged():
    assert not looks_inverted(np.full((64, 64), 128, np.uint8))
    assert not looks_inverted(np.zeros((4, 4), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (128, 128)).astype(np.uint8)
    assert not looks_inverted(noise)


@pytest.mark.skipif(not (VNC / "stack1_image.tif").exists(), reason="shared VNC data absent")
def test_looks_inverted_real_em():
    import tifffile

    for name in ("stack1_image.tif", "stack2_image.tif"):
        if not (VNC / name).exists():
            continue
        vol = tifffile.imread(VNC / name)
        for z in (0, 9, 19):
            assert not looks_inverted(vol[z]), f"{name} slice {z} flagged"
            assert looks_inverted(255 - vol[z]), f"{name} inverted slice {z} not flagged"
