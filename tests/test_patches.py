"""Patch tiling: the CEM500K grid rule, provenance round trips, batching and laziness."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_cem import patches as P
from napari_cem._cancel import Cancelled


def _coded(shape) -> np.ndarray:
    """uint8 volume whose values depend on (z, y, x), so a wrong axis or offset shows."""
    z, y, x = np.indices(shape)
    return ((z * 61 + y * 17 + x * 5) % 256).astype(np.uint8)


def _in_plane(vol, plane, s, y, x, h, w):
    """The patch cut by hand from the (z, y, x) volume, independent of the module."""
    if plane == "xy":
        return vol[s, y : y + h, x : x + w]
    if plane == "xz":  # slice = y, rows = z, cols = x
        return vol[y : y + h, s, x : x + w]
    return vol[y : y + h, x : x + w, s]  # yz: slice = x, rows = z, cols = y


def _pil(patch, ps):
    return np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((ps, ps), Image.BILINEAR))


def _all(batches):
    batches = list(batches)
    if not batches:
        return np.empty((0, 0, 0), np.uint8), np.empty(0, P.PROVENANCE_DTYPE)
    pixels = np.concatenate([b.pixels for b in batches])
    return pixels, np.concatenate([b.provenance for b in batches])


# --------------------------------------------------------------------------- grid


def test_axis_starts_remainder_rule():
    assert P.axis_starts(224 * 2 + 111) == [(0, 224), (224, 224)]
    assert P.axis_starts(224 * 2 + 112) == [(0, 224), (224, 224), (448, 112)]
    assert P.axis_starts(224 * 2) == [(0, 224), (224, 224)]
    assert P.axis_starts(111) == []
    assert P.axis_starts(112) == [(0, 112)]
    assert P.axis_starts(200) == [(0, 200)]
    assert P.axis_starts(224) == [(0, 224)]
    assert P.axis_starts(0) == []
    assert P.axis_starts(40, patch_size=16, min_fraction=0.25) == [(0, 16), (16, 16), (32, 8)]
    assert P.axis_starts(35, patch_size=16, min_fraction=0.25) == [(0, 16), (16, 16)]
    with pytest.raises(ValueError):
        P.axis_starts(100, patch_size=0)


def test_patch_grid_row_major():
    grid = P.patch_grid(224 + 150, 224 * 2 + 112)
    assert grid == [
        (0, 0, 224, 224), (0, 224, 224, 224), (0, 448, 224, 112),
        (224, 0, 150, 224), (224, 224, 150, 224), (224, 448, 150, 112),
    ]  # fmt: skip
    assert P.patch_grid(100, 1000) == []


# ------------------------------------------------------------------------- planes


def test_isotropy_decision():
    assert P.is_isotropic((8, 8, 8))
    assert P.is_isotropic((9.5, 8, 8))  # 18.75 % off
    assert not P.is_isotropic((10, 8, 8))  # 25 %: the paper's 20 % says no
    assert P.is_isotropic((10, 8, 8), tolerance=0.25)  # the later code's 25 %, inclusive
    assert P.is_isotropic((6.5, 8, 8))
    assert not P.is_isotropic((40, 4, 4))
    assert P.is_isotropic((8, 7, 9))  # xy = mean of y and x
    assert not P.is_isotropic(None)
    assert not P.is_isotropic((8, 8))  # 2D
    assert not P.is_isotropic((0, 8, 8))
    assert not P.is_isotropic((float("nan"), 8, 8))
    assert not P.is_isotropic((None, 8, 8))


def test_planes_for_options_and_bad_names():
    shape = (50, 300, 300)
    assert P.planes_for(shape, (8, 8, 8)) == P.PLANES
    assert P.planes_for(shape, (40, 8, 8)) == ("xy",)
    assert P.planes_for(shape, None) == ("xy",)
    assert P.planes_for(shape, (10, 8, 8), tolerance=0.25) == P.PLANES
    assert P.planes_for(shape, (40, 8, 8), planes="all") == P.PLANES
    assert P.planes_for(shape, (8, 8, 8), planes="xy") == ("xy",)
    assert P.planes_for(shape, None, planes=["yz", "XY", "yz"]) == ("xy", "yz")
    assert P.planes_for((300, 300), (8, 8, 8), planes="all") == ("xy",)
    assert P.planes_for((300, 300), None) == ("xy",)
    for bad in ("everything", ["xy", "zx"], [], [3]):
        with pytest.raises(ValueError, match="plane"):
            P.planes_for(shape, None, planes=bad)
    with pytest.raises(ValueError):
        P.planes_for((2, 3, 4, 5), None)


def test_plane_shape_and_view():
    vol = _coded((5, 7, 9))
    assert P.plane_shape(vol.shape, "xy") == (5, 7, 9)
    assert P.plane_shape(vol.shape, "xz") == (7, 5, 9)
    assert P.plane_shape(vol.shape, "yz") == (9, 5, 7)
    assert P.plane_shape((7, 9), "xy") == (1, 7, 9)
    np.testing.assert_array_equal(P.plane_view(vol, "xz")[3], vol[:, 3, :])
    np.testing.assert_array_equal(P.plane_view(vol, "yz")[4], vol[:, :, 4])
    np.testing.assert_array_equal(P.plane_view(vol[0], "xy")[0], vol[0])
    da = pytest.importorskip("dask.array")
    lazy = P.plane_view(da.from_array(vol, chunks=2), "yz")
    assert type(lazy).__module__.startswith("dask")
    np.testing.assert_array_equal(lazy[4].compute(), vol[:, :, 4])
    with pytest.raises(ValueError, match="plane"):
        P.plane_view(vol, "zz")


# ---------------------------------------------------------------- patches/provenance


@pytest.mark.parametrize("plane", P.PLANES)
def test_provenance_round_trip(plane):
    ps = 16
    vol = _coded((26, 40, 45))  # every axis: full patches plus a partial (>= 8 px) one
    batches = list(P.iter_patch_batches(vol, planes=(plane,), patch_size=ps, keep_raw=True))
    pixels, prov = _all(batches)
    raw = [r for b in batches for r in b.raw]
    n, rows, cols = P.plane_shape(vol.shape, plane)
    expected = [(plane, s, *g) for s in range(n) for g in P.patch_grid(rows, cols, ps)]
    assert [tuple(r) for r in prov.tolist()] == expected
    assert any(h < ps for h in prov["height"]) and any(w < ps for w in prov["width"])
    for i, row in enumerate(prov):
        plane_, s, y, x, h, w = row.tolist()
        truth = _in_plane(vol, plane_, s, y, x, h, w)
        np.testing.assert_array_equal(P.read_patch(vol, *row), truth)
        np.testing.assert_array_equal(raw[i], truth)
        np.testing.assert_array_equal(pixels[i], _pil(truth, ps))
        z0, y0, x0 = P.provenance_to_volume_coords(plane_, s, y, x)
        assert vol[z0, y0, x0] == truth[0, 0] == (z0 * 61 + y0 * 17 + x0 * 5) % 256


def test_provenance_coords_mapping():
    assert P.provenance_to_volume_coords("xy", 3, 10, 20) == (3, 10, 20)
    assert P.provenance_to_volume_coords("xz", 3, 10, 20) == (10, 3, 20)
    assert P.provenance_to_volume_coords("yz", 3, 10, 20) == (10, 20, 3)
    with pytest.raises(ValueError):
        P.read_patch(_coded((2, 20, 20)), "xy", 0, 10, 10, 16, 16)  # runs off the edge


def test_partial_patches_match_pil_bilinear():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (224 + 150, 224 + 120), dtype=np.uint8)
    (batch,) = P.iter_patch_batches(img, keep_raw=True)
    assert batch.pixels.shape == (4, 224, 224) and batch.pixels.dtype == np.uint8
    sizes = batch.provenance[["height", "width"]].tolist()
    assert sizes == [(224, 224), (224, 120), (150, 224), (150, 120)]
    for i, (y, x, h, w) in enumerate(P.patch_grid(*img.shape)):
        patch = img[y : y + h, x : x + w]
        expected = np.asarray(Image.fromarray(patch).resize((224, 224), Image.BILINEAR))
        np.testing.assert_array_equal(batch.pixels[i], expected)
        np.testing.assert_array_equal(batch.raw[i], patch)
    assert not np.array_equal(batch.pixels[3][:150, :120], img[224:, 224:])  # really resized


def test_count_patches_equals_yielded():
    ps = 16
    for shape in [(20, 40, 37), (3, 7, 100), (30, 8, 8), (45, 33)]:
        vol = np.zeros(shape, np.uint8)
        for planes in [("xy",), P.PLANES, ("yz", "xz")]:
            _, prov = _all(P.iter_patch_batches(vol, planes=planes, patch_size=ps))
            assert len(prov) == P.count_patches(shape, planes, ps)
    assert P.count_patches((20, 40, 37), P.PLANES, 16) > 0
    assert P.count_patches((5, 100, 300), P.PLANES) == 0  # 100 px < half a patch; z too
    assert list(P.iter_patch_batches(np.zeros((5, 100, 300), np.uint8), planes=P.PLANES)) == []
    assert P.count_patches((350, 700), "all") == 2 * 3  # 2D: xz/yz views have one row


def test_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        next(P.iter_patch_batches(np.zeros((2, 64, 64), np.float32), patch_size=16))
    with pytest.raises(TypeError, match="standardi"):
        next(P.iter_patch_batches(np.zeros((64, 64), np.uint16), patch_size=16))


# ---------------------------------------------------------------------- batching


def test_batches_respect_max_batch_bytes():
    ps = 16
    vol = _coded((20, 40, 37))
    budget = 10 * ps * ps + 5  # room for 10 patches
    batches = list(
        P.iter_patch_batches(vol, planes=P.PLANES, patch_size=ps, max_batch_bytes=budget)
    )
    total = P.count_patches(vol.shape, P.PLANES, ps)
    assert len(batches) == -(-total // 10) > 3
    assert all(b.pixels.nbytes <= budget for b in batches)
    assert [len(b) for b in batches[:-1]] == [10] * (len(batches) - 1)
    ref_pix, ref_prov = _all(P.iter_patch_batches(vol, planes=P.PLANES, patch_size=ps))
    pix, prov = _all(batches)
    np.testing.assert_array_equal(pix, ref_pix)
    np.testing.assert_array_equal(prov, ref_prov)


def test_slice_bigger_than_budget_is_read_in_bands():
    ps = 16
    img = _coded((1, 100, 90))[0]
    reader = _Recorder(img)
    budget = 3 * ps * ps  # fewer patches than one row of the grid (5 + partial)
    pix, prov = _all(P.iter_patch_batches(reader, patch_size=ps, max_batch_bytes=budget))
    ref_pix, ref_prov = _all(P.iter_patch_batches(img, patch_size=ps))
    np.testing.assert_array_equal(pix, ref_pix)
    np.testing.assert_array_equal(prov, ref_prov)
    assert len(reader.boxes) > 1
    assert all(b[0][1] - b[0][0] <= ps for b in reader.boxes)  # one row of patches each


class _Recorder:
    """A Zarr-like lazy array that logs every box read (start, stop per axis)."""

    def __init__(self, data, chunks=None):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        if chunks is not None:
            self.chunks = chunks
        self.boxes = []

    def __getitem__(self, key):
        box = tuple(k.indices(n)[:2] for k, n in zip(key, self.shape, strict=True))
        self.boxes.append(box)
        return self.data[key].copy()


def test_xz_yz_read_in_slabs_not_whole_volume():
    ps = 16
    vol = _coded((20, 64, 48))  # z: one row of patches (the 4 px remainder is dropped)
    reader = _Recorder(vol)
    budget = 4 * ps * ps  # a yz slice has 1 x 4 patches: one slice per slab
    batches = P.iter_patch_batches(reader, planes=("yz",), patch_size=ps, max_batch_bytes=budget)
    first = next(batches)
    assert reader.boxes == [((0, 16), (0, 64), (0, 1))]  # z to last kept row; one x slice
    rest = list(batches)
    pix, prov = _all([first, *rest])
    ref_pix, ref_prov = _all(P.iter_patch_batches(vol, planes=("yz",), patch_size=ps))
    np.testing.assert_array_equal(pix, ref_pix)
    np.testing.assert_array_equal(prov, ref_prov)
    assert len(reader.boxes) == 48
    reader.boxes.clear()
    list(P.iter_patch_batches(reader, planes=("xz",), patch_size=ps, max_batch_bytes=4 * budget))
    # xz slices have 1 x 3 patches; 16 patches of budget -> slabs of 5 y slices
    assert [b[1] for b in reader.boxes] == [(y, min(y + 5, 64)) for y in range(0, 64, 5)]
    assert all(b[0] == (0, 16) and b[2] == (0, 48) for b in reader.boxes)


def test_slabs_follow_chunks():
    vol = _coded((24, 64, 48))
    reader = _Recorder(vol, chunks=(8, 64, 48))
    list(P.iter_patch_batches(reader, patch_size=16, max_batch_bytes=36 * 256))
    assert [b[0] for b in reader.boxes] == [(0, 8), (8, 16), (16, 24)]  # budget alone: 3 slices
    reader = _Recorder(vol, chunks=(2, 64, 48))
    list(P.iter_patch_batches(reader, patch_size=16, max_batch_bytes=36 * 256))
    assert [b[0] for b in reader.boxes] == [(s, s + 2) for s in range(0, 24, 2)]  # whole chunks


def test_numpy_dask_zarr_identical():
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    ps = 16
    vol = _coded((21, 40, 37))
    kwargs = dict(planes=P.PLANES, patch_size=ps, max_batch_bytes=25 * ps * ps)
    ref = list(P.iter_patch_batches(vol, **kwargs))
    z = zarr.create_array(store={}, shape=vol.shape, chunks=(5, 16, 16), dtype="u1")
    z[:] = vol
    for other in (da.from_array(vol, chunks=(4, 13, 11)), z):
        got = list(P.iter_patch_batches(other, **kwargs))
        assert len(got) == len(ref) > 3
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a.pixels, b.pixels)
            np.testing.assert_array_equal(a.provenance, b.provenance)
        row = ref[-1].provenance[-1]
        np.testing.assert_array_equal(P.read_patch(other, *row), P.read_patch(vol, *row))


def test_dask_volume_is_computed_slab_by_slab():
    da = pytest.importorskip("dask.array")
    ps = 16
    vol = _coded((32, 48, 40))
    computed = []

    def record(block, block_info=None):
        computed.append(tuple(tuple(r) for r in block_info[0]["array-location"]))
        return block

    lazy = da.from_array(vol, chunks=(4, 48, 8)).map_blocks(record, dtype=np.uint8)
    n_chunks = 8 * 5
    batches = P.iter_patch_batches(lazy, patch_size=ps, max_batch_bytes=9 * ps * ps)
    next(batches)
    assert len(computed) == 5 and all(loc[0] == (0, 4) for loc in computed)  # first slab only
    list(batches)
    assert len(computed) == len(set(computed)) == n_chunks  # every chunk computed once
    computed.clear()
    yz = P.iter_patch_batches(lazy, planes=("yz",), patch_size=ps, max_batch_bytes=6 * ps * ps)
    next(yz)
    assert len(computed) == 8 and all(loc[2] == (0, 8) for loc in computed)  # first x chunk


def test_should_stop_raises_cancelled():
    assert P.Cancelled is Cancelled
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    gen = P.iter_patch_batches(
        _coded((10, 32, 32)), patch_size=16, max_batch_bytes=4 * 256, should_stop=stop
    )
    got = []
    with pytest.raises(Cancelled):
        for batch in gen:
            got.append(batch)
    assert len(got) == 2 and len(calls) == 3
    assert list(P.iter_patch_batches(_coded((2, 32, 32)), patch_size=16, should_stop=lambda: False))


def test_crop_padded_fills_outside_the_image_with_zeros():
    from napari_cem.patches import crop_padded

    a = np.arange(16, dtype=np.uint8).reshape(4, 4) + 1
    assert crop_padded(a, 1, 1, 2, 2).tolist() == [[6, 7], [10, 11]]
    assert crop_padded(a, -1, 2, 3, 3).tolist() == [[0, 0, 0], [3, 4, 0], [7, 8, 0]]
    assert not crop_padded(a, 10, 10, 2, 2).any()
