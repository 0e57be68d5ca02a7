"""Threshold from paint on VNC stack1 mito: the estimated threshold against 0.5.

For each model saved by ``bench_levers.py`` (trained on slices 0-9): slice 10 plays the
slice a user paints after the round (its ground truth, a complete slice, held out from
training); ``napari_cem.threshold.threshold_from_paint`` estimates the threshold there,
and slices 11-19 are segmented (2D stack, CPU) and scored (3D IoU) at 0.5 and at the
estimate. One row per model and a mean row.

    PYTHONPATH=src python benchmarks/bench_threshold.py --models 'levers_none_*_it300_seed*.pt' --rows
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, row  # noqa: E402
from bench_finetune import _load_vnc  # noqa: E402


def one_model(path: Path, image, mito) -> dict:
    from napari_cem.infer import segment
    from napari_cem.metrics import evaluate
    from napari_cem.model import load_bundle
    from napari_cem.threshold import threshold_from_paint

    bundle = load_bundle(path)
    bundle.training.setdefault("painted_slices", list(range(10)))  # (models saved before it was recorded)
    paint = np.zeros(mito.shape, np.uint8)
    paint[10] = mito[10] > 0  # painted after the round: value 1 = mito, the rest background
    estimate = threshold_from_paint(image, paint, bundle, device="cpu")
    truth = (mito[11:] > 0).astype(np.uint8)
    res = segment(image[11:], bundle, device="cpu", keep_probabilities=True)
    out = {"model": path.name, "arch": bundle.arch, "estimate": estimate.threshold, "note": estimate.describe()}
    for name, threshold in (("0.5", 0.5), ("estimated", estimate.threshold)):
        labels = (res.probabilities > threshold * 255).astype(np.uint8)
        out[name] = float(evaluate(labels, truth, ["background", "mito"]).iou_3d[1])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="levers_none_*_it300_seed*.pt", help="glob in benchmarks/_work")
    p.add_argument("--rows", action="store_true")
    args = p.parse_args(argv)
    models = sorted(WORK_DIR.glob(args.models))
    if not models or not (VNC_DIR / "stack1_image.tif").is_file():
        print(f"skipped: needs models {args.models} in {WORK_DIR} (bench_levers.py) and the VNC data")
        return 0
    image, mito = _load_vnc(VNC_DIR)
    runs = []
    for path in models:
        runs.append(one_model(path, image, mito))
        r = runs[-1]
        print(f"{r['model']}: threshold {r['estimate']:.2f}, IoU 3D slices 11-19 {r['0.5']:.3f} at 0.5, "
              f"{r['estimated']:.3f} at the estimate ({r['note']})", flush=True)
    if args.rows:
        gains = [r["estimated"] - r["0.5"] for r in runs]
        each = "; ".join(f"{r['model'].removeprefix('levers_').removesuffix('.pt')}: {r['estimate']:.2f}, "
                         f"{r['0.5']:.3f} -> {r['estimated']:.3f}" for r in runs)
        print(row(f"threshold from paint (slice 10 painted after training on 0-9), VNC mito, {len(runs)} models",
                  f"IoU 3D on slices 11-19 at the estimate minus at 0.5: mean {statistics.mean(gains):+.3f}, "
                  f"min {min(gains):+.3f}, max {max(gains):+.3f}; per model (threshold, IoU at 0.5 -> at it): "
                  f"{each}; cpu"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
