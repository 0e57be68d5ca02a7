"""CPU engines: which one 'auto' picks, refusals that say why, and OpenVINO's labels against
torch float32 (skipped where OpenVINO is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cem import engines
from napari_cem.engines import resolve_engine
from napari_cem.infer import segment
from napari_cem.model import load_bundle


def test_auto_is_openvino_only_where_it_was_measured_faster(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(engines, "_openvino_installed", lambda: True)
    monkeypatch.setattr(engines, "_native_bf16", lambda device: True)
    assert resolve_engine("auto", cpu) == "openvino" and resolve_engine("auto", cpu, "bf16") == "openvino"
    assert resolve_engine("auto", cpu, "float32") == "torch"  # an explicit float32 stays with torch
    assert resolve_engine("auto", cuda) == "torch"
    monkeypatch.setattr(engines, "_native_bf16", lambda device: False)  # AVX2-only: not measured
    assert resolve_engine("auto", cpu) == "torch"
    assert resolve_engine("openvino", cpu) == "openvino"
    assert resolve_engine("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_engine("openvino", cuda)
    monkeypatch.setattr(engines, "_openvino_installed", lambda: False)
    monkeypatch.setattr(engines, "_native_bf16", lambda device: True)
    assert resolve_engine("auto", cpu) == "torch"
    with pytest.raises(ValueError, match=r"napari-cem\[cpu-engines\]"):
        resolve_engine("openvino", cpu)
    with pytest.raises(ValueError, match="Unknown engine"):
        resolve_engine("tensorrt", cpu)


def test_openvino_labels_match_torch_float32(unet_file, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from napari_cem.synthetic import make_em_volume

    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path / "cache"))
    volume = make_em_volume((3, 96, 128), isotropic=True, seed=2).image
    bundle = load_bundle(unet_file)
    ref = segment(volume, bundle, device="cpu", precision="float32", engine="torch", keep_probabilities=True)
    ov = segment(volume, bundle, device="cpu", engine="openvino", keep_probabilities=True)
    bf16 = segment(volume, bundle, device="cpu", precision="bf16", engine="torch")
    assert ov.metadata["engine"] == "openvino"
    # a random-init model sits near 0.5 on many pixels, where any reduced precision flips some
    # labels: OpenVINO must agree with float32 as well as torch's own bf16 does, and be close
    same = np.mean(np.asarray(ov.labels) == np.asarray(ref.labels))
    assert same >= np.mean(np.asarray(bf16.labels) == np.asarray(ref.labels)) - 0.002 and same > 0.99
    assert np.mean(np.abs(ov.probabilities.astype(int) - ref.probabilities.astype(int))) < 2
    assert list((tmp_path / "cache" / "openvino").glob("unet-*.xml"))  # converted once, kept


def test_auto_falls_back_to_torch_when_openvino_cannot_convert(unet_file, monkeypatch):
    from napari_cem.synthetic import make_em_volume

    def fails(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    from napari_cem.device import DeviceInfo

    monkeypatch.setattr(engines, "_openvino_installed", lambda: True)
    monkeypatch.setattr("napari_cem.device.describe_device",
                        lambda device=None: DeviceInfo("cpu", "test CPU", None, True))  # bf16 CPU
    monkeypatch.setattr(engines, "OpenVinoNetwork", fails)
    volume = make_em_volume((2, 64, 64), isotropic=True, seed=1).image
    with pytest.warns(RuntimeWarning, match="could not convert"):
        res = segment(volume, load_bundle(unet_file), device="cpu")
    assert res.metadata["engine"] == "torch"
    with pytest.raises(RuntimeError, match="unsupported operation"):  # asked for: the reason, no fallback
        segment(volume, load_bundle(unet_file), device="cpu", engine="openvino")


def test_openvino_in_float32_when_asked(unet_file, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from napari_cem.synthetic import make_em_volume

    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path / "cache"))
    volume = make_em_volume((2, 64, 96), isotropic=True, seed=3).image
    bundle = load_bundle(unet_file)
    ref = segment(volume, bundle, device="cpu", precision="float32", engine="torch", keep_probabilities=True)
    f32 = segment(volume, bundle, device="cpu", precision="float32", engine="openvino", keep_probabilities=True)
    assert f32.metadata["precision"] == "openvino-float32"
    assert np.mean(np.asarray(f32.labels) == np.asarray(ref.labels)) > 0.999
