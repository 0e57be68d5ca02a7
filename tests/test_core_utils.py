"""Device choice, cache folder and atomic writes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_cem._atomic import atomic_path, write_text_atomic
from napari_cem.cache import cache_dir
from napari_cem.device import describe_device, select_device


def test_auto_device_is_cpu_without_gpu():
    import torch

    device = select_device("auto")
    expected = "cuda" if torch.cuda.is_available() else device.type
    assert device.type == expected
    assert str(describe_device(device)).startswith(device.type)


def test_unavailable_device_is_refused_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no.*available|none is available"):
        select_device("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        select_device("tpu")


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path / "c"))
    assert cache_dir(create=True) == tmp_path / "c"
    assert (tmp_path / "c").is_dir()
    monkeypatch.delenv("NAPARI_CEM_CACHE")
    assert "napari-cem" in str(cache_dir())


def test_atomic_write_replaces_or_leaves_intact(tmp_path):
    target = tmp_path / "labels.csv"
    write_text_atomic(target, "first\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umask_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "manifest.csv", "x\n")
        with atomic_path(tmp_path / "seg.tif", suffix=".tif") as tmp:
            tmp.write_bytes(b"II*\x00")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "manifest.csv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "seg.tif").stat().st_mode) == mode
    assert stat.S_IMODE(plain.stat().st_mode) == mode  # what a plain open gives


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".model.pt.k2j3abcd.tmp").write_bytes(b"x" * 1000)  # killed while saving model.pt
    (tmp_path / ".seg.tif.a1b2c3d4.tif").write_bytes(b"x")  # killed while saving seg.tif, long ago
    old = time.time() - 3600
    os.utime(tmp_path / ".seg.tif.a1b2c3d4.tif", (old, old))
    (tmp_path / ".other.csv.zzzz1111.tmp").write_bytes(b"x")  # a live writer of another file
    (tmp_path / ".hidden.backup.txt").write_text("a user's own file")
    write_text_atomic(tmp_path / "model.pt", "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".hidden.backup.txt", ".other.csv.zzzz1111.tmp", "model.pt"]


def test_a_killed_save_of_the_real_cli_leaves_a_temporary_file_the_rerun_removes(tmp_path):
    """kill -9 during the atomic write: the target is untouched, the leftover goes next time."""
    script = (
        "import os, sys\n"
        "from napari_cem._atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a bundle')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    target = tmp_path / "model.pt"
    target.write_bytes(b"the old model")
    subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".model.pt.")]
    assert len(leftovers) == 1 and target.read_bytes() == b"the old model"
    write_text_atomic(target, "the new model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("kind, native, request_, purpose, expected", [
    # inference: fp16 on CUDA (measured closer to float32 than bf16), bf16 on bf16-native CPUs
    ("cuda", True, "auto", "inference", "fp16"),
    ("cuda", False, "auto", "inference", "fp16"),
    ("cpu", True, "auto", "inference", "bf16"),
    ("cpu", False, "auto", "inference", "float32"),
    ("mps", False, "auto", "inference", "float32"),
    # training: bf16 where the GPU has it (no loss scaling), fp16 otherwise
    ("cuda", True, "auto", "training", "bf16"),
    ("cuda", False, "auto", "training", "fp16"),
    ("cpu", False, "on", "training", "bf16"),
    ("cpu", True, "off", "training", "float32"),
    ("cuda", True, False, "training", "float32"),
    ("cuda", True, True, "inference", "fp16"),
    ("cpu", False, "bf16", "inference", "bf16"),  # an explicit choice is kept
    ("mps", False, "fp16", "inference", "float32"),
])
def test_one_mixed_precision_rule(kind, native, request_, purpose, expected):
    import torch

    from napari_cem.device import DeviceInfo, autocast_policy

    info = DeviceInfo(kind, "test", None, native)
    assert autocast_policy(torch.device(kind), request_, purpose, info).name == expected


def test_the_preview_asks_the_rule_for_inference(monkeypatch):
    """model.predict_slice used bf16 autocast on every CUDA GPU, also those without bf16
    (where the rule gives fp16): it now asks the one rule, as an inference job."""
    from napari_cem import device as D
    from napari_cem.model import ModelBundle, build_unet, predict_slice

    asked = []

    def spy(device, request="auto", purpose="inference", info=None):
        asked.append((str(device), request, purpose))
        return D.Precision("float32")

    monkeypatch.setattr(D, "autocast_policy", spy)
    bundle = ModelBundle(model=build_unet(1).eval(), classes=["background", "mito"], norms=(0.5, 0.2))
    predict_slice(bundle, np.zeros((64, 64), np.uint8), "cpu")
    assert asked == [("cpu", "auto", "inference")]


# -- progress protocol and Stop inside a forward pass -----------------------------------------
def test_throttled_progress_keeps_the_first_the_stage_changes_and_the_end(monkeypatch):
    from napari_cem import _progress

    clock = {"t": 0.0}
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: clock["t"])
    seen = []
    progress = _progress.Throttled(lambda d, t, s: seen.append((d, t, s)), interval=0.1)
    for i in range(1, 11):  # ten calls within 0.1 s: only the first and the last pass
        clock["t"] += 0.005
        progress(i, 10, "hashing")
    progress(0, 5, "grouping")  # a new stage always passes
    progress(1, 5, "grouping, 20 %")  # details after a comma are the same stage
    clock["t"] += 0.2
    progress(2, 5, "grouping, 40 %")  # the interval passed
    assert seen == [(1, 10, "hashing"), (10, 10, "hashing"), (0, 5, "grouping"),
                    (2, 5, "grouping, 40 %")]


def test_staged_and_report_adapt_the_callbacks():
    from napari_cem._progress import report, staged

    seen = []
    staged(lambda d, t, s: seen.append((d, t, s)), "features")(3, 9)
    report(lambda d, t, s: seen.append((d, t, s)), 1, 2, "writing")
    report(None, 1, 2, "nobody listens")
    assert staged(None, "x") is None and seen == [(3, 9, "features"), (1, 2, "writing")]


def test_stop_lands_inside_a_forward_pass_and_the_hooks_go_away():
    import torch

    from napari_cem._cancel import Cancelled, stoppable

    calls = []

    class Block(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return x + 1

    model = torch.nn.Sequential(Block(), Block(), torch.nn.Sequential(Block(), Block()))
    with pytest.raises(Cancelled), stoppable(model, lambda: len(calls) >= 2):
        model(torch.zeros(1))
    assert len(calls) == 2  # the third block never ran
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert float(model(torch.zeros(1))) == 4.0  # no hooks left: a later forward is untouched
    with stoppable(model, None):
        assert float(model(torch.zeros(1))) == 4.0


def test_atomic_folder_replaces_a_store_only_once_the_new_one_is_complete(tmp_path):
    from napari_cem._atomic import atomic_folder

    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "new").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "old").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["store.zarr"]
    with atomic_folder(target) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["store.zarr"]
