"""Issue 19's CPU-engine question: is ONNX Runtime or OpenVINO at least 1.5x faster than our
torch path on this CPU, with labels identical on >= 99.9 % of the pixels?

One run, side by side, on 4 VNC stack1 slices (1024 x 1024) with a random-init U-Net (the
speed does not depend on the weights): our torch predictor in float32 and in its automatic
precision (bf16 autocast on CPUs with native bf16); the same network exported to ONNX
(opset 17, dynamic height / width) run by ONNX Runtime on all cores; and our OpenVINO engine
(``napari_cem.engines``, as ``segment --engine openvino`` runs it) in its own precision and in
float32, with the seconds of its first use (conversion into an empty cache, compilation).
Needs ``pip install onnx onnxruntime openvino``; not dependencies.

    PYTHONPATH=src python benchmarks/bench_engines.py --rows
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, bench_parser, noted, publish, row, vnc_missing  # noqa: E402

SLICES = (10, 14)


def _seconds_per_slice(fn, slices, rounds: int = 2) -> tuple[float, np.ndarray]:
    """Median seconds per slice over *rounds* passes (after one warm-up slice), and the
    probabilities of the last pass."""
    fn(slices[:1])
    times, out = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = np.concatenate([fn(slices[i:i + 1]) for i in range(len(slices))])
        times.append((time.perf_counter() - t0) / len(slices))
    return float(np.median(times)), out


def main(argv=None) -> int:
    import tifffile
    import torch

    from napari_cem.infer import _Predictor
    from napari_cem.model import ModelBundle, build_unet

    p = bench_parser(__doc__)
    p.add_argument("--arch", default="resnet50")
    args = p.parse_args(argv)
    if vnc_missing():
        return 0
    slices = np.ascontiguousarray(tifffile.imread(VNC_DIR / "stack1_image.tif")[slice(*SLICES)])
    torch.manual_seed(0)
    bundle = ModelBundle(model=build_unet(1, args.arch).eval(), classes=["background", "mito"], norms=(0.58, 0.10))
    results = {}
    for precision in ("float32", "auto"):
        pr = _Predictor(bundle, device="cpu", precision=precision, engine="torch")
        seconds, probs = _seconds_per_slice(lambda x, pr=pr: pr.predict(x).cpu().numpy(), slices)
        results[f"torch {pr.precision}"] = (seconds, probs)
    reference = results["torch float32"][1]
    mean, std = bundle.norms

    def normalise(x):
        return (((x.astype(np.float32) / 255.0) - mean) / std)[:, None]

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "unet.onnx"
        torch.onnx.export(bundle.model, torch.zeros(1, 1, 1024, 1024), str(onnx_path), opset_version=17,
                          input_names=["x"], output_names=["logits"], dynamo=False,
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}})
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 1
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            results[f"onnxruntime {ort.__version__} float32"] = _seconds_per_slice(
                lambda x: 1 / (1 + np.exp(-session.run(None, {"x": normalise(x)})[0])), slices)
        except ImportError:
            print("onnxruntime not installed: skipped")
    try:
        import openvino as ov

        with tempfile.TemporaryDirectory() as cache:
            os.environ["NAPARI_CEM_CACHE"] = cache  # the first use converts the model
            for precision in ("auto", "float32"):
                t0 = time.perf_counter()
                pr = _Predictor(bundle, device="cpu", precision=precision, engine="openvino")
                first = time.perf_counter() - t0
                seconds, probs = _seconds_per_slice(lambda x, pr=pr: pr.predict(x).cpu().numpy(), slices)
                results[f"our openvino {ov.__version__.split('-')[0]} engine, {pr.precision} (set-up "
                        f"{first:.1f} s{', converting into an empty cache' if precision == 'auto' else ''})"] = (seconds, probs)
    except ImportError:
        print("openvino not installed: skipped")
    best_torch = min(v[0] for k, v in results.items() if k.startswith("torch"))
    torch_f32 = results["torch float32"][0]
    parts = []
    for name, (seconds, probs) in results.items():
        same = float(np.mean((probs > 0.5) == (reference > 0.5)))
        parts.append(f"{name}: {seconds:.2f} s/slice ({best_torch / seconds:.2f}x our best torch, "
                     f"{torch_f32 / seconds:.2f}x torch float32; labels {100 * same:.3f} % as torch float32)")
    rows = [row(f"CPU engines: U-Net {args.arch}, random init, 4 VNC slices 1024 x 1024, batch 1, one after the "
                "other in one run (keep an engine at >= 1.5x and >= 99.9 % identical labels)",
                noted("; ".join(parts), args.note))]
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
