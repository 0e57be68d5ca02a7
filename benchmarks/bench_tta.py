"""Test-time augmentation: IoU gain and time cost of ``segment(tta=...)`` on VNC stack1 mito.

A model trained by ``bench_loop.py --strategy scratch`` (it saves one per split and seed in
``benchmarks/_work``; or ``--model FILE``) segments the slices it did not see, once per
choice of ``--tta`` (none, flips, d4), on the CPU. Reports 3D IoU and seconds for each.

    PYTHONPATH=src python benchmarks/bench_tta.py --split reverse --rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, emit, row  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["forward", "reverse"], default="forward",
                        help="forward: the model saw slices 0-9, slices 10-19 are scored; reverse: the other way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="default: bench_loop's scratch model of the split and seed")
    parser.add_argument("--tta", default="none,flips,d4")
    parser.add_argument("--rows", action="store_true")
    args = parser.parse_args(argv)

    import tifffile

    from napari_cem.infer import segment
    from napari_cem.metrics import evaluate
    from napari_cem.model import load_bundle

    model = Path(args.model or WORK_DIR / f"loop_scratch_vnc_{args.split}_seed{args.seed}.pt")
    if not model.is_file() or not VNC_DIR.is_dir():
        print(f"skipped: needs {model} (bench_loop.py --strategy scratch) and the VNC data")
        return 0
    bundle = load_bundle(model)
    score = list(range(10, 20)) if args.split == "forward" else list(range(0, 10))
    image = tifffile.imread(VNC_DIR / "stack1_image.tif")[score]
    mito = (tifffile.imread(VNC_DIR / "stack1_mito.tif")[score] > 0).astype(np.uint8)
    out = {"model": str(model), "split": args.split, "seed": args.seed}
    for kind in args.tta.split(","):
        t0 = time.perf_counter()
        res = segment(image, bundle, device="cpu", tta=kind)
        seconds = time.perf_counter() - t0
        ev = evaluate(np.asarray(res.labels), mito, ["background", "mito"])
        out[kind] = {"iou_3d": float(ev.iou_3d[1]), "iou_2d": float(ev.iou_2d[1]), "seconds": seconds,
                     "precision": res.metadata["precision"]}
    emit(out)
    if args.rows:
        base = out["none"]
        figure = "; ".join(f"{k}: IoU 3D {v['iou_3d']:.3f} (2D {v['iou_2d']:.3f}) in {v['seconds']:.0f} s"
                           + ("" if k == "none" else f" ({v['iou_3d'] - base['iou_3d']:+.3f}, "
                                                     f"{v['seconds'] / base['seconds']:.1f}x the time)")
                           for k, v in out.items() if isinstance(v, dict))
        print(row(f"segment --tta on VNC stack1 mito slices {score[0]}-{score[-1]}, model: bench_loop scratch "
                  f"({bundle.training.get('iterations')} it on the other 10 slices, seed {args.seed}), "
                  f"cpu, {base['precision']}", figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
