"""Device choice, cache folder and atomic writes."""

from __future__ import annotations

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
