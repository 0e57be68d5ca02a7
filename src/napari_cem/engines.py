"""CPU inference engines besides torch: OpenVINO.

``benchmarks/bench_engines.py`` measured, side by side on one 2-core Intel Xeon with AMX
(bf16): a ResNet50 U-Net on 1024 x 1024 slices took 0.17 s per slice with OpenVINO against
0.53 s with our torch bf16 path (3.0x) and 1.65 s in torch float32, with labels 99.994 %
as torch float32; ONNX Runtime took 1.17 s (slower than torch bf16: not kept). So ``auto``
picks OpenVINO where that was measured: on a CPU with native bf16, in automatic (or bf16)
precision, when OpenVINO is installed (``pip install 'napari-cem[cpu-engines]'``). CPUs
without native bf16 keep torch until OpenVINO is measured on one. Whatever the engine, the
predictor compares the first batch's labels with torch float32 and falls back to torch when
they disagree (and when ``auto`` cannot convert the model).

The network is converted once per model (from the torch module, dynamic batch and slice
size) and kept in the cache folder under its weights' fingerprint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["ENGINES", "OpenVinoNetwork", "resolve_engine"]

ENGINES = ("auto", "torch", "openvino")


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _native_bf16(device) -> bool:
    from .device import describe_device

    return bool(describe_device(device).bf16)


def resolve_engine(request: str, device, precision: str = "auto", info=None) -> str:
    """'torch' or 'openvino' for *request* on *device* (see the module docstring); *info*:
    the device's ``describe_device`` when the caller has it already."""
    request = (request or "auto").lower()
    if request not in ENGINES:
        raise ValueError(f"Unknown engine {request!r}; choose {', '.join(ENGINES)}.")
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if request == "auto":
        measured_faster = (on_cpu and (precision or "auto").lower() in ("auto", "bf16")
                           and (bool(info.bf16) if info is not None else _native_bf16(device)))
        return "openvino" if measured_faster and _openvino_installed() else "torch"
    if request == "openvino":
        if not on_cpu:
            raise ValueError("The OpenVINO engine runs on the CPU; choose the CPU device, or engine torch.")
        if not _openvino_installed():
            raise ValueError("The OpenVINO engine needs OpenVINO: pip install 'napari-cem[cpu-engines]'.")
        return "openvino"
    return "torch"


class OpenVinoNetwork:
    """A torch U-Net compiled by OpenVINO for this CPU: ``net(x)`` maps float32 (n, 1, h, w)
    arrays to logits (n, c, h, w). *precision* "float32" asks OpenVINO for float32 kernels;
    otherwise it picks its own (bf16 on CPUs with native bf16)."""

    def __init__(self, module, fingerprint: str, precision: str = "auto"):
        import openvino as ov

        from .cache import cache_dir

        folder = cache_dir(create=True) / "openvino"
        folder.mkdir(parents=True, exist_ok=True)
        xml = folder / f"unet-{fingerprint}.xml"
        core = ov.Core()
        if not xml.is_file():
            _convert(module, xml)
        config = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "float32" else {}
        self.compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        self.path = xml

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(np.ascontiguousarray(x, dtype=np.float32))[0])


def _convert(module, xml: Path) -> None:
    """The module as an OpenVINO IR at *xml*, written to a temporary name and renamed."""
    import copy
    import warnings

    import openvino as ov
    import torch

    model = copy.deepcopy(module).float().eval().to("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model, example_input=torch.zeros(1, 1, 256, 256),
                                     input=[ov.PartialShape([-1, 1, -1, -1])])
    tmp = xml.with_name(f".{xml.stem}.tmp.xml")
    ov.save_model(converted, str(tmp), compress_to_fp16=False)  # the weights as trained
    tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
    tmp.replace(xml)
