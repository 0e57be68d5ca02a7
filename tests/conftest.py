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
def readonly_dir(tmp_path):
    """An existing folder nobody can write into, root included (chattr +i; chmod for users)."""
    import os
    import subprocess

    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("cannot make a read-only folder here (chattr +i refused)")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 1 MiB tmpfs: writing more than that fails with ENOSPC (root only)."""
    import os
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
