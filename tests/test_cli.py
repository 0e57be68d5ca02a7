"""The napari-cem command: info, inspect, demo, and clear errors without tracebacks."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_cem.cli import main


def test_info_prints_versions_device_and_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "napari-cem" in out and "torch" in out
    assert "device (auto)" in out and ("cpu" in out or "cuda" in out or "mps" in out)
    assert str(tmp_path) in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_inspect_describes_a_volume(tmp_path, capsys):
    import tifffile

    path = tmp_path / "cells.tif"
    data = (np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32) * 7)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.005, 1 / 0.005),
                     metadata={"spacing": 0.03, "unit": "um", "axes": "ZYX"})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 x 32 x 32" in out
    assert "30 x 5 x 5 nm" in out
    assert "uint16" in out


@pytest.mark.parametrize("name, content, expected", [
    ("missing.tif", None, "nothing found|not found|does not exist"),
    ("notes.docx", b"hello", "not supported|Unsupported|unsupported"),
    ("broken.tif", b"II*\x00garbage-bytes", "read|corrupt|truncated|damaged|without any image"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, name, content, expected):
    import re

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    exe = shutil.which("napari-cem")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_cem.cli"]
    result = subprocess.run(cmd + ["inspect", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(expected, result.stderr, re.IGNORECASE), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if content is not None else [])


@pytest.mark.slow
def test_demo_opens_viewer_with_data_and_widgets(tmp_path):
    """The README's main command: napari opens with the sample, its labels and our docks."""
    png = tmp_path / "demo.png"
    exe = shutil.which("napari-cem")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_cem.cli"]
    result = subprocess.run(cmd + ["demo", "--screenshot", str(png)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    import imageio.v3 as iio

    image = iio.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 10  # not a blank window
