"""A Zarr declared far larger than any disk (100000^3, ~10^9 chunks, no data) is described
in seconds with little memory, and segmenting it is refused up front with a plain message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_cem.io import read_volume
from napari_cem.io._source import SourceView


@pytest.fixture(scope="module")
def huge_zarr(tmp_path_factory):
    import zarr

    path = tmp_path_factory.mktemp("huge") / "declared.zarr"
    zarr.create_array(str(path), shape=(100_000,) * 3, chunks=(1, 1024, 1024), dtype="uint16",
                      fill_value=7)
    return path


def test_source_view_indexes_like_numpy_and_reads_only_its_box():
    a = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    v = SourceView(a)
    for key in [(1,), (slice(1, 3), 2), (slice(None), slice(1, 4), slice(2, 6)), (-1, -2)]:
        np.testing.assert_array_equal(np.asarray(v[key]), a[key])
    t = v[1:3].transpose([2, 0, 1])
    np.testing.assert_array_equal(np.asarray(t), a[1:3].transpose(2, 0, 1))
    np.testing.assert_array_equal(np.asarray(t[1:4, 0]), a[1:3].transpose(2, 0, 1)[1:4, 0])
    with pytest.raises(IndexError):
        v[::2]


def test_a_huge_declared_zarr_is_read_lazily_from_a_sample(huge_zarr):
    volume, meta = read_volume(huge_zarr)
    assert volume.shape == (100_000,) * 3 and meta.lazy
    assert meta.value_range == (7.0, 7.0) and meta.original_dtype == "uint16"


def test_inspect_of_a_huge_declared_zarr_returns_with_little_memory(huge_zarr):
    """The real command in a child process; its peak memory is read from the parent's rusage."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "print(r.stdout + r.stderr)\n")
    import shutil

    exe = shutil.which("napari-cem")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_cem.cli"]
    done = subprocess.run([sys.executable, "-c", probe, *cmd, "inspect", str(huge_zarr)],
                          capture_output=True, text=True, timeout=180, check=False)
    first, _, output = done.stdout.partition("\n")
    code, peak_kib = (int(v) for v in first.split())
    assert code == 0, output
    assert "100000 x 100000 x 100000" in output
    assert peak_kib < 500 * 1024, f"peak {peak_kib / 1024:.0f} MiB"


def test_segmenting_a_huge_declared_zarr_is_refused_before_any_work(huge_zarr, tmp_path, napari_cem):
    from napari_cem.device import available_memory
    from napari_cem.model import ModelBundle, build_unet, save_bundle

    if (available_memory() or 0) > 200 * (1 << 30):
        pytest.skip("this machine could hold one 100000^2 slice")
    model = save_bundle(ModelBundle(model=build_unet(1).eval(), classes=["background", "mito"],
                                    norms=(0.5, 0.2)), tmp_path / "m.pt")
    code, out, err = napari_cem("segment", model, huge_zarr, "-o", tmp_path / "seg.zarr", "--zarr",
                                timeout=180)
    assert code == 2 and "Traceback" not in err
    assert "One slice of this 100000 x 100000 x 100000 volume needs about" in err
    assert not (tmp_path / "seg.zarr").exists()


def test_in_memory_output_too_large_is_refused_with_the_zarr_advice(monkeypatch):
    from napari_cem import device, infer

    monkeypatch.setattr(device, "available_memory", lambda: 1 << 30)
    with pytest.raises(ValueError, match="zarr store instead"):
        infer._check_memory((2000, 1024, 1024), 1, np.uint8, "stack", False, True, {"xy": 16})
    infer._check_memory((2000, 1024, 1024), 1, np.uint8, "stack", False, False, {"xy": 16})  # to zarr: fine
    with pytest.raises(ValueError, match="One slice"):
        infer._check_memory((2, 20000, 20000), 1, np.uint8, "stack", False, False, {"xy": 1})
