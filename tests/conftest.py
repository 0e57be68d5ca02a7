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
