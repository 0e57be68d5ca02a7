"""Shared test fixtures: the real VNC data when present, GPU skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VNC_DIR = REPO_ROOT.parent / "shared" / "data" / "vnc"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def vnc_dir() -> Path:
    """../shared/data/vnc (real ssTEM data); the test is skipped cleanly when it is absent."""
    if not (VNC_DIR / "stack1_image.tif").exists():
        pytest.skip("real EM data ../shared/data/vnc is not present")
    return VNC_DIR


@pytest.fixture
def torch_one_thread():
    """One intra-op torch thread: much faster than two on a shared 2-core machine; restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- hostile and unlucky conditions -------------------------------------------------------------
def run_napari_cem(*args, cwd=None, env=None, timeout=600):
    """The real ``napari-cem`` entry point in a subprocess: (returncode, stdout, stderr)."""
    import os
    import shutil
    import subprocess
    import sys

    exe = shutil.which("napari-cem")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_cem.cli"]
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                            env=full_env, timeout=timeout, check=False)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def napari_cem():
    return run_napari_cem


@pytest.fixture
def readonly():
    """``readonly(folder)``: make an existing folder unwritable for everyone, root included
    (chattr +i as root, chmod otherwise); restored after the test."""
    import os
    import subprocess

    done = []

    def make(folder):
        if os.geteuid() == 0:
            result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
            if result.returncode != 0:
                pytest.skip("cannot make a read-only folder here (chattr +i refused)")
        else:
            os.chmod(folder, 0o555)
        done.append(folder)
        return folder

    yield make
    for folder in done:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        else:
            os.chmod(folder, 0o755)


@pytest.fixture
def readonly_dir(tmp_path, readonly):
    """An existing folder nobody can write into."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    return readonly(folder)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a folder on a tmpfs of *size* ("64k", "1m"): writing more than
    that fails with ENOSPC, as a full disk does (needs root; skipped otherwise)."""
    import os
    import subprocess

    mounted = []

    def make(size: str = "1m"):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def unet_file(tmp_path_factory):
    """A small random-init model bundle (U-Net ResNet18, one structure "mito") saved once."""
    import torch

    from napari_cem.model import ModelBundle, build_unet, save_bundle

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("unet") / "mito.pt"
    save_bundle(ModelBundle(model=build_unet(1, "resnet18"), classes=["background", "mito"], norms=(0.55, 0.2),
                            crop_size=64, training={"iterations": 3}), path)
    return path
