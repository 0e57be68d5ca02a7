"""Curation core: hashing a volume, grouping known near-duplicates, export and resume."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cem._cancel import Cancelled
from napari_cem.curate import MANIFEST_COLUMNS, find_near_duplicates
from napari_cem.dedup import dhash, hamming
from napari_cem.export import export_curated, patch_filename, read_manifest
from napari_cem.patches import read_patch

PS = 64  # small patches keep the tests fast; the rules do not depend on the size


def _textures(n: int, size: int = PS, seed: int = 0) -> np.ndarray:
    """n smooth random textures whose dHashes are pairwise far apart (> 30 bits)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        t = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 4)
        t = np.clip(128 + 90 * t / t.std(), 0, 255).astype(np.uint8)
        if all(hamming(dhash(t), dhash(o)) > 30 for o in out):
            out.append(t)
    return np.stack(out)


@pytest.fixture(scope="module")
def known():
    """A (6, 3*PS, 2*PS) volume whose patches are noisy copies of 5 textures: known groups."""
    tex = _textures(5)
    rng = np.random.default_rng(1)
    nz, ny, nx = 6, 3, 2
    truth = rng.integers(0, 5, size=(nz, ny, nx))
    truth.flat[:5] = np.arange(5)  # every texture appears
    vol = np.zeros((nz, ny * PS, nx * PS), np.uint8)
    for z in range(nz):
        for r in range(ny):
            for c in range(nx):
                noise = rng.integers(-2, 3, size=(PS, PS))
                vol[z, r * PS:(r + 1) * PS, c * PS:(c + 1) * PS] = np.clip(
                    tex[truth[z, r, c]].astype(int) + noise, 0, 255)
    return vol, truth


def test_known_near_duplicates_give_known_groups(known):
    vol, truth = known
    res = find_near_duplicates(vol, source="known", voxel_size=(50, 5, 5), patch_size=PS)
    assert res.params["planes"] == ["xy"]  # anisotropic: xy only
    assert res.n_patches == truth.size
    p = res.provenance
    expected = truth[p["slice"], p["y"] // PS, p["x"] // PS]
    # same texture <=> same group
    assert res.n_groups == 5
    for t in range(5):
        assert len(np.unique(res.group[expected == t])) == 1
    assert len(np.unique(res.group)) == 5
    assert res.exemplar.sum() == 5
    for g in range(res.n_groups):
        assert res.exemplar[res.group == g].sum() == 1
    assert res.n_kept == 5 and res.fraction_removed == pytest.approx(1 - 5 / truth.size)


def test_components_agree_on_well_separated_groups(known):
    vol, _truth = known
    greedy = find_near_duplicates(vol, voxel_size=(50, 5, 5), patch_size=PS)
    comp = greedy.regroup(grouping="components")
    assert comp.n_groups == greedy.n_groups == 5
    # the same partition (ids may differ)
    pairs = set(zip(greedy.group.tolist(), comp.group.tolist()))
    assert len(pairs) == 5


def test_isotropic_volume_uses_three_planes_and_hashes_each_patch(known):
    vol, _ = known
    vol = np.concatenate([vol] * 22)[: 2 * PS]  # (128, 192, 128): tall enough for xz / yz patches
    res = find_near_duplicates(vol, voxel_size=(8, 8, 8), patch_size=PS)
    assert res.params["planes"] == ["xy", "xz", "yz"]
    assert set(np.unique(res.provenance["plane"])) == {"xy", "xz", "yz"}
    # every stored hash is the hash of the patch its provenance names
    for i in np.random.default_rng(0).choice(res.n_patches, 25, replace=False):
        p = res.provenance[i]
        patch = read_patch(vol, str(p["plane"]), p["slice"], p["y"], p["x"], p["height"], p["width"])
        assert patch.shape == (PS, PS)
        assert res.hashes[i] == dhash(patch)


def test_unknown_voxel_size_means_xy_only_and_planes_override(known):
    vol, _ = known
    assert find_near_duplicates(vol, patch_size=PS).params["planes"] == ["xy"]
    res = find_near_duplicates(vol, patch_size=PS, planes="all")
    assert res.params["planes"] == ["xy", "xz", "yz"] or res.params["planes"] == ["xy"]


def test_blank_volume_is_one_group():
    res = find_near_duplicates(np.full((4, 200, 200), 37, np.uint8), patch_size=PS, voxel_size=(40, 4, 4))
    assert res.n_patches == 4 * 9
    assert res.n_groups == 1 and res.exemplar.sum() == 1
    assert np.all(res.hashes == res.hashes[0])


def test_2d_image():
    img = _textures(1, size=150)[0]
    res = find_near_duplicates(img, source="image", patch_size=100)
    assert res.params["planes"] == ["xy"]
    # 150 = one patch of 100 + a remainder of 50, exactly half a patch: kept -> 2 x 2 patches
    assert res.n_patches == 4
    assert set(res.provenance["slice"].tolist()) == {0}


def test_2d_image_remainder_rule():
    img = np.random.default_rng(0).integers(0, 255, (150, 149), dtype=np.uint8)
    res = find_near_duplicates(img, patch_size=100)
    # rows: 100 + 50 (kept, >= 50); cols: 100 + 49 (dropped)
    assert res.n_patches == 2
    assert sorted(res.provenance["height"].tolist()) == [50, 100]
    assert set(res.provenance["width"].tolist()) == {100}


def test_smaller_than_half_a_patch_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than half a patch"):
        find_near_duplicates(np.zeros((3, 100, 100), np.uint8), patch_size=224, voxel_size=(40, 4, 4))


def test_wrong_dtype_and_shape_are_clear_errors():
    with pytest.raises(TypeError, match="8-bit"):
        find_near_duplicates(np.zeros((2, 300, 300), np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        find_near_duplicates(np.zeros((2, 2, 300, 300), np.uint8))


def test_cancel_midway_raises_cancelled(known):
    vol, _ = known
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        find_near_duplicates(np.concatenate([vol] * 30), patch_size=PS, should_stop=should_stop)


def test_progress_is_determinate(known):
    vol, _ = known
    seen = []
    find_near_duplicates(vol, patch_size=PS, progress=lambda d, t, s: seen.append((d, t, s)))
    hashing = [(d, t) for d, t, s in seen if s == "hashing"]
    assert hashing[-1][0] == hashing[-1][1] == 36
    assert any(s == "grouping" for _, _, s in seen)


def test_regroup_reuses_hashes(known):
    vol, _ = known
    res = find_near_duplicates(vol, patch_size=PS)
    strict = res.regroup(cutoff=0)
    assert strict.hashes is res.hashes
    assert strict.n_groups >= res.n_groups
    assert strict.params["cutoff"] == 0 and res.params["cutoff"] == 12
    groups = res.largest_groups(3)
    assert len(groups) == 3
    for rows in groups:
        assert res.exemplar[rows[0]] and not res.exemplar[rows[1:]].any()
        assert len(np.unique(res.group[rows])) == 1


# ------------------------------------------------------------------------------ export
def _check_export(out, vol, res):
    rows = read_manifest(out)
    assert list(rows[0].keys()) == list(MANIFEST_COLUMNS)
    with open(out / "manifest.csv") as f:
        assert f.readline().strip() == ",".join(MANIFEST_COLUMNS)
    mine = [r for r in rows if r["source"] == res.source]
    assert len(mine) == res.n_patches
    files = sorted((out / "patches").glob("*.tif"))
    named = set()
    import tifffile

    for r in mine:
        assert len(r["dhash"]) == 16
        if r["exemplar"]:
            name = patch_filename(r["source"], r["plane"], r["slice"], r["y"], r["x"], r["height"], r["width"])
            named.add(name)
            patch = tifffile.imread(out / "patches" / name)
            assert patch.dtype == np.uint8 and patch.shape == (r["height"], r["width"])
            np.testing.assert_array_equal(
                patch, read_patch(vol, r["plane"], r["slice"], r["y"], r["x"], r["height"], r["width"]))
    assert named <= {f.name for f in files}
    assert sum(r["exemplar"] for r in mine) == res.n_kept


def test_export_writes_exemplars_and_manifest(tmp_path, known):
    vol, _ = known
    res = find_near_duplicates(vol, source="vol A", patch_size=PS)
    summary = export_curated(res, vol, tmp_path)
    assert summary["written"] == res.n_kept == 5
    _check_export(tmp_path, vol, res)
    # the manifest's hash is imagehash's string for the patch
    import imagehash
    from PIL import Image

    r = read_manifest(tmp_path)[0]
    patch = read_patch(vol, r["plane"], r["slice"], r["y"], r["x"], r["height"], r["width"])
    assert r["dhash"] == str(imagehash.dhash(Image.fromarray(patch)))


def test_export_from_lazy_volume_equals_numpy(tmp_path, known):
    da = pytest.importorskip("dask.array")
    vol, _ = known
    res = find_near_duplicates(vol, source="v", patch_size=PS)
    export_curated(res, vol, tmp_path / "np")
    export_curated(res, da.from_array(vol, chunks=(2, 64, 64)), tmp_path / "lazy")
    a = sorted(p.name for p in (tmp_path / "np" / "patches").iterdir())
    b = sorted(p.name for p in (tmp_path / "lazy" / "patches").iterdir())
    assert a == b and len(a) == 5
    assert (tmp_path / "np" / "manifest.csv").read_text() == (tmp_path / "lazy" / "manifest.csv").read_text()


def test_interrupted_export_never_names_missing_files_and_resumes(tmp_path, known, monkeypatch):
    vol, _ = known
    first = find_near_duplicates(vol, source="first", patch_size=PS, cutoff=0)
    export_curated(first, vol, tmp_path)
    before = (tmp_path / "manifest.csv").read_text()

    second = find_near_duplicates(vol[::-1].copy(), source="second", patch_size=PS, cutoff=0)
    assert second.n_kept >= 3
    import tifffile

    real_imwrite = tifffile.imwrite
    written = []

    def crash_after_two(path, *args, **kwargs):  # the machine dies while writing file 3
        if len(written) == 2:
            raise OSError("disk unplugged")
        written.append(path)
        return real_imwrite(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", crash_after_two)
    with pytest.raises(OSError):
        export_curated(second, vol[::-1].copy(), tmp_path)
    monkeypatch.setattr(tifffile, "imwrite", real_imwrite)
    assert len(written) == 2
    # the manifest is exactly what it was: the unfinished source is not in it
    assert (tmp_path / "manifest.csv").read_text() == before
    for r in read_manifest(tmp_path):
        if r["exemplar"]:
            assert (tmp_path / "patches" / patch_filename(r["source"], r["plane"], r["slice"], r["y"],
                                                          r["x"], r["height"], r["width"])).exists()
    # running again finishes the second source and skips the first
    assert export_curated(first, vol, tmp_path)["skipped"] is True
    summary = export_curated(second, vol[::-1].copy(), tmp_path)
    assert summary["skipped"] is False and summary["written"] == second.n_kept
    sources = {r["source"] for r in read_manifest(tmp_path)}
    assert sources == {"first", "second"}
    _check_export(tmp_path, vol, first)


def test_reexport_with_other_parameters_replaces_old_files(tmp_path):
    # 4 noisy copies of 5 textures: noise flips a few hash bits, so cutoff 0 keeps more
    # exemplars than cutoff 12 (which finds the 5 textures)
    rng = np.random.default_rng(3)
    vol = np.clip(np.repeat(_textures(5), 4, axis=0).astype(int)
                  + rng.integers(-16, 17, (20, PS, PS)), 0, 255).astype(np.uint8)
    strict = find_near_duplicates(vol, source="s", patch_size=PS, cutoff=0)
    export_curated(strict, vol, tmp_path)
    n_strict = len(list((tmp_path / "patches").iterdir()))
    loose = strict.regroup(cutoff=12)
    export_curated(loose, vol, tmp_path)
    assert len(list((tmp_path / "patches").iterdir())) == loose.n_kept < n_strict
    _check_export(tmp_path, vol, loose)


def test_manifest_csv_is_plain_csv(tmp_path, known):
    vol, _ = known
    res = find_near_duplicates(vol, source="name, with comma", patch_size=PS)
    export_curated(res, vol, tmp_path)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(MANIFEST_COLUMNS)
    assert all(len(r) == len(MANIFEST_COLUMNS) for r in rows)
    assert rows[1][0] == "name, with comma"
