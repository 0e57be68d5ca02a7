"""`napari-cem curate` end to end: several inputs, resume, processes, a dask cluster, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cem.batch import source_names
from napari_cem.cli import main
from napari_cem.export import patch_filename, read_manifest


def _volume(seed: int, shape=(4, 160, 200)) -> np.ndarray:
    """Slowly changing sections: neighbours are near-duplicates, as in real serial sections."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    base = ndi.gaussian_filter(rng.normal(0, 1, shape[1:]), 3)
    out = []
    for z in range(shape[0]):
        drift = ndi.gaussian_filter(rng.normal(0, 1, shape[1:]), 3) * 0.05 * z
        img = base + drift
        out.append(np.clip(128 + 60 * img / base.std(), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture()
def inputs(tmp_path):
    a = tmp_path / "in" / "stackA.tif"
    b = tmp_path / "in" / "image_b.png"
    a.parent.mkdir()
    tifffile.imwrite(a, _volume(0), imagej=True, resolution=(1 / 0.005, 1 / 0.005),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    import imageio.v3 as iio

    iio.imwrite(b, _volume(1, (1, 180, 130))[0])
    return [a, b]


def _check_out(out, n_sources):
    rows = read_manifest(out)
    assert len({r["source"] for r in rows}) == n_sources
    for r in rows:
        if r["exemplar"]:
            assert (out / "patches" / patch_filename(r["source"], r["plane"], r["slice"], r["y"], r["x"],
                                                     r["height"], r["width"])).exists()
    return rows


def test_curate_two_inputs_then_resume(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    assert main(["curate", *map(str, inputs), "-o", str(out), "--patch-size", "64"]) == 0
    rows = _check_out(out, 2)
    assert {r["source"] for r in rows} == {"stackA", "image_b"}
    stack = [r for r in rows if r["source"] == "stackA"]
    # anisotropic TIFF (50 nm z, 5 nm xy): xy only. 160 rows = 2 x 64 + 32 (half: kept),
    # 200 cols = 3 x 64 + 8 (dropped): 3 x 3 patches per section
    assert len(stack) == 4 * 3 * 3
    assert {r["plane"] for r in stack} == {"xy"}
    # neighbouring sections are near-duplicates: fewer exemplars than patches
    assert sum(r["exemplar"] for r in stack) < len(stack)
    err = capsys.readouterr().err
    assert "stackA" in err and "groups" in err

    manifest = (out / "manifest.csv").read_text()
    assert main(["curate", *map(str, inputs), "-o", str(out), "--patch-size", "64"]) == 0
    assert "already exported, skipped" in capsys.readouterr().err
    assert (out / "manifest.csv").read_text() == manifest

    # another cutoff is a new request: curated again, manifest follows
    assert main(["curate", *map(str, inputs), "-o", str(out), "--patch-size", "64", "--cutoff", "0"]) == 0
    rows0 = _check_out(out, 2)
    assert sum(r["exemplar"] for r in rows0) >= sum(r["exemplar"] for r in rows)


@pytest.mark.slow
def test_curate_with_worker_processes_matches_serial(tmp_path, inputs):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["curate", *map(str, inputs), "-o", str(serial), "--patch-size", "64"]) == 0
    assert main(["curate", *map(str, inputs), "-o", str(parallel), "--patch-size", "64",
                 "--workers", "2"]) == 0
    assert (serial / "manifest.csv").read_text() == (parallel / "manifest.csv").read_text()


@pytest.mark.slow
def test_curate_on_a_local_dask_cluster(tmp_path, inputs):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "cluster"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["curate", *map(str, inputs), "-o", str(out), "--patch-size", "64",
                     "--scheduler", cluster.scheduler_address]) == 0
    serial = tmp_path / "serial"
    assert main(["curate", *map(str, inputs), "-o", str(serial), "--patch-size", "64"]) == 0
    assert (serial / "manifest.csv").read_text() == (out / "manifest.csv").read_text()


def test_curate_bad_inputs(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    assert main(["curate", str(tmp_path / "nope.tif"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "input not found" in err and "Traceback" not in err
    assert not out.exists()

    tiny = tmp_path / "in" / "tiny.tif"
    tifffile.imwrite(tiny, np.zeros((20, 20), np.uint8))
    broken = tmp_path / "in" / "broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    code = main(["curate", str(inputs[0]), str(tiny), str(broken), "-o", str(out), "--patch-size", "64"])
    assert code == 1
    err = capsys.readouterr().err
    assert "tiny: " in err and "smaller than half a patch" in err
    assert "broken: " in err and "Traceback" not in err
    _check_out(out, 1)  # the good input is curated anyway

    assert main(["curate", str(inputs[0]), "-o", str(out), "--cutoff", "-1"]) == 2
    assert main(["curate", str(inputs[0]), "-o", str(out), "--patch-size", "4"]) == 2


def test_source_names_are_unique_and_readable(tmp_path):
    names = source_names([tmp_path / "a" / "vol.tif", tmp_path / "b" / "vol.tif",
                          tmp_path / "x.ome.zarr", tmp_path / "y.nii.gz", tmp_path / "imgs"])
    assert names == ["a-vol", "b-vol", "x", "y", "imgs"]
    assert len(set(source_names([tmp_path / "a" / "v.tif", tmp_path / "a" / "v.tif"]))) == 2
