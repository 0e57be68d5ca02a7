"""Issue 17's levers on VNC stack1 mito: each alone and together, over several seeds.

For every seed: fine-tune (``napari_cem.train.run_finetune``, CPU, batch 8, crop 256,
``--iterations``) on slices 0-9 painted as ``--few`` says (dense, 3 slices, 5 ROIs; the
same paint as ``bench_finetune.py --case quality``), with the training levers given
(``--arch``, ``--weights``, ``--freeze``, ``--encoder-bn``); then segment slices 10-19 with
``napari_cem.infer.segment`` (2D stack) once per segmentation lever: none, ``--tta
flips``, ``z_smooth``, both, and clean-up (pieces under N voxels per slice removed, holes
filled) of the plain labels and, with ``--combo-clean`` voxels, of the smoothed ones. Scores: 3D and mean 2D IoU (``metrics.evaluate``), training and
segmentation seconds. One JSON file per run in ``benchmarks/_work`` (the model bundle
beside it: ``--reuse`` scores it again without training), then a row per run and a row of
mean +- SD over the seeds. ``--split reverse`` trains on slices 10-19 (painted the same
way) and scores 0-9. ``--crop`` / ``--batch`` / ``--amp off`` change the recipe (``--amp off``:
float32, the path of CPUs without native bf16). ``--bin 2``: the U-Net works binned 2 x 2
(``finetune --bin 2``; the crop stays in image pixels).

    PYTHONPATH=src python benchmarks/bench_levers.py --few none --arch resnet18 --seeds 0,1,2 --rows
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, bench_parser, row, vnc_missing  # noqa: E402
from bench_finetune import _few_labels, _load_vnc  # noqa: E402

FEW = {"none": "dense slices 0-9", "3slices": "3 painted slices (0, 4, 8)", "5rois": "5 painted 256 px ROIs"}


def _name(args, seed: int) -> str:
    weights = Path(args.weights).stem.split(".")[0] if args.weights != "none" else "none"
    recipe = (("" if args.crop == 256 else f"_c{args.crop}") + ("" if args.batch == 8 else f"_b{args.batch}")
              + ("" if args.amp == "auto" else f"_amp{args.amp}") + ("" if args.bin == 1 else f"_bin{args.bin}"))
    return (f"levers_{args.few}_{args.arch}_{weights}_{args.freeze}_{args.encoder_bn}"
            f"_it{args.iterations}{recipe}{'_reverse' if args.split == 'reverse' else ''}_seed{seed}")


def train(args, seed: int, image, mito):
    """(bundle, training seconds) of one seed, or the saved one with --reuse."""
    from napari_cem.model import load_bundle, save_bundle
    from napari_cem.train import run_finetune

    path = WORK_DIR / (_name(args, seed) + ".pt")
    weights = args.weights
    if weights == "synthetic":  # a released-layout stand-in, BatchNorm statistics from other EM data
        from _synthetic_checkpoint import synthetic_released_checkpoint

        weights = str(synthetic_released_checkpoint(WORK_DIR / "synthetic_released_r50.pth.tar"))
    if args.reuse and path.is_file():
        bundle = load_bundle(path)
        return bundle, float(bundle.training["seconds"])
    labels, rois = _few_labels(mito, args.few)
    bundle = run_finetune(image[:10], labels, classes=["mito"], complete_slices=True, rois=rois,
                          planes="xy", device="cpu", iterations=args.iterations, crop_size=args.crop,
                          batch_size=args.batch, amp=args.amp, bin=args.bin, seed=seed, arch=args.arch, weights=weights,
                          freeze=args.freeze, encoder_bn=args.encoder_bn,
                          data_source=f"VNC stack1 slices {_train_slices(args)}, {FEW[args.few]}")
    WORK_DIR.mkdir(exist_ok=True)
    save_bundle(bundle, path)
    return bundle, float(bundle.training["seconds"])


def score(labels, truth) -> dict:
    from napari_cem.metrics import evaluate

    ev = evaluate(np.asarray(labels), truth, ["background", "mito"])
    return {"iou_3d": float(ev.iou_3d[1]), "iou_2d": float(ev.iou_2d[1])}


SEG_LEVERS = {"none": {}, "flips": {"tta": "flips"}, "z_smooth": {"z_smooth": True},
              "flips+z_smooth": {"tta": "flips", "z_smooth": True}}


def segment_levers(bundle, image, truth, clean_sizes, combo_clean: int, levers=tuple(SEG_LEVERS),
                   engine: str = "torch") -> dict:
    """{lever: {iou_3d, iou_2d, seconds}} for slices 10-19: each segmentation lever alone, and
    together (clean-up of *combo_clean* voxels on the smoothed labels). *engine* "torch" keeps
    the rows comparable with those measured before OpenVINO became ``auto``."""
    from napari_cem.infer import segment

    out, results = {}, {}
    for name in levers:
        options = SEG_LEVERS[name]
        t0 = time.perf_counter()
        results[name] = segment(image, bundle, device="cpu", engine=engine, **options)
        out[name] = {**score(results[name].labels, truth), "seconds": time.perf_counter() - t0}
    for base, size in [("none", s) for s in clean_sizes] + [("z_smooth", combo_clean),
                                                            ("flips+z_smooth", combo_clean)]:
        if base not in results:
            continue
        key = f"clean{size}" if base == "none" else f"{base}+clean{size}"
        out[key] = _cleaned(results[base], size, truth, out[base]["seconds"])
    return out


def _cleaned(result, size: int, truth, seconds: float) -> dict:
    from napari_cem.cleanup import clean_segmentation

    res = type(result)(result.labels.copy(), None, result.classes, dict(result.metadata), None, None)
    t0 = time.perf_counter()
    clean_segmentation(res, min_size=size, holes=True)
    return {**score(res.labels, truth), "seconds": seconds + time.perf_counter() - t0}


def _train_slices(args) -> str:
    return "10-19" if args.split == "reverse" else "0-9"


def _mean_sd(values) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def main(argv=None) -> int:
    p = bench_parser(__doc__)
    p.add_argument("--few", choices=list(FEW), default="none")
    p.add_argument("--arch", default="resnet50", choices=["auto", "resnet50", "resnet34", "resnet18", "resnet18-slim"])
    p.add_argument("--weights", default="none",
                   help="none, a checkpoint file, or 'synthetic' (benchmarks/_synthetic_checkpoint.py)")
    p.add_argument("--freeze", default="auto", choices=["auto", "encoder", "layer4", "none"])
    p.add_argument("--encoder-bn", default="keep", choices=["keep", "adapt"])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--crop", type=int, default=256, help="training crop side (px)")
    p.add_argument("--batch", type=int, default=8, help="training batch")
    p.add_argument("--amp", default="auto", choices=["auto", "off"], help="off: float32 training")
    p.add_argument("--bin", type=int, default=1, choices=[1, 2, 4], help="the U-Net works binned N x N")
    p.add_argument("--split", choices=["forward", "reverse"], default="forward",
                   help="forward: train on slices 0-9, score 10-19; reverse: train on 10-19, score 0-9")
    p.add_argument("--clean-sizes", default="200,1000,3000", help="clean-up: smallest piece kept, voxels per slice")
    p.add_argument("--combo-clean", type=int, default=1000, help="the clean-up size used with the other levers")
    p.add_argument("--reuse", action="store_true", help="score the saved model of a run again")
    p.add_argument("--engine", default="torch", choices=["torch", "auto", "openvino"],
                   help="inference engine of the scoring (default torch, as the earlier rows)")
    p.add_argument("--seg", default=",".join(SEG_LEVERS),
                   help="segmentation levers to score, of " + ", ".join(SEG_LEVERS))
    args = p.parse_args(argv)
    if vnc_missing():
        return 0
    image, mito = _load_vnc(VNC_DIR)
    if args.split == "reverse":  # the halves swapped: "0-9" below are slices 10-19
        image, mito = np.concatenate([image[10:], image[:10]]), np.concatenate([mito[10:], mito[:10]])
    truth = (mito[10:] > 0).astype(np.uint8)
    clean_sizes = [int(v) for v in args.clean_sizes.split(",") if v]
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        bundle, train_s = train(args, seed, image, mito)
        result = {"seed": seed, "arch": bundle.arch, "train_s": train_s,
                  "levers": segment_levers(bundle, image[10:], truth, clean_sizes, args.combo_clean,
                                           [s for s in args.seg.split(",") if s], args.engine)}
        (WORK_DIR / (_name(args, seed) + ".json")).write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)
        runs.append(result)
    if args.rows:
        what = (f"{FEW[args.few]} of slices {_train_slices(args)} (scored: the other 10), U-Net {runs[0]['arch']}, weights {args.weights}, freeze {args.freeze}, "
                f"encoder BN {args.encoder_bn}, {args.iterations} it, batch {args.batch}, crop {args.crop}, cpu"
                + (", float32" if args.amp == "off" else "")
                + (f", binned {args.bin} x {args.bin}" if args.bin != 1 else ""))
        for r in runs:
            lv = r["levers"]
            print(row(f"levers VNC mito {args.few} {r['arch']} {args.split} seed {r['seed']}",
                      f"training {r['train_s']:.0f} s; " + "; ".join(
                          f"{k}: IoU 3D {v['iou_3d']:.3f} / 2D {v['iou_2d']:.3f}, seg {v['seconds']:.1f} s"
                          for k, v in lv.items()) + f" ({what}{'; ' + args.note if args.note else ''})"))
        levers = runs[0]["levers"].keys()
        summary = "; ".join(
            f"{k}: IoU 3D {_mean_sd([r['levers'][k]['iou_3d'] for r in runs])}, 2D "
            f"{_mean_sd([r['levers'][k]['iou_2d'] for r in runs])}, seg "
            f"{statistics.mean(r['levers'][k]['seconds'] for r in runs):.1f} s" for k in levers)
        print(row(f"levers VNC mito {args.few} {runs[0]['arch']} {args.split}: mean +- SD over seeds "
                  f"{args.seeds}", f"training {statistics.mean(r['train_s'] for r in runs):.0f} s; {summary} "
                  f"({what}{'; ' + args.note if args.note else ''})"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
