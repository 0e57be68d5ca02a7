"""Informative / uninformative classifiers on the real VNC labels: held-out AUROC and speed.

Data: ``benchmarks/data/vnc_informative_labels.csv`` (448 patches of ../shared/data/vnc
stack1 + stack2 labelled by eye; see benchmarks/data/README.md). Stratified split, 70 %
train / 30 % held-out test (seed 0). For each classifier: the AUROC on the held-out patches
(the paper's ResNet34 reached 0.962 on *its* 2,000 test patches of CEM data: context, not
the same test), feature throughput (patches/s; the random forest with 1 process and with
all cores, the encoder in batches on ``--device``) and prediction throughput of the fitted
estimator.

Runs headless with only core dependencies (numpy, torch, smp, tifffile, scikit-image,
scikit-learn); no napari import. Skips (prints a line, no row) when the VNC data are absent.

Examples::

    PYTHONPATH=src python benchmarks/bench_quality.py --case rf
    PYTHONPATH=src python benchmarks/bench_quality.py --case encoder --device cuda --batch 128
    PYTHONPATH=src python benchmarks/bench_quality.py --case encoder --weights cem500k_mocov2_resnet50_200ep.pth.tar
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
from _harness import VNC_DIR, row  # noqa: E402

LABELS = Path(__file__).resolve().parent / "data" / "vnc_informative_labels.csv"
PAPER = "paper ResNet34: 0.962 on its own test set"


def crop(stacks: dict, r: dict) -> np.ndarray:
    """The patch of one labels row; outside the image is zero padding (see data/README.md)."""
    from napari_cem.patches import crop_padded

    return crop_padded(stacks[r["stack"]][int(r["slice"])],
                       *(int(r[k]) for k in ("y", "x", "height", "width")))


def load(vnc: Path):
    import tifffile

    with open(LABELS, newline="") as f:
        rows = list(csv.DictReader(f))
    stacks = {n: tifffile.imread(vnc / n) for n in sorted({r["stack"] for r in rows})}
    patches = [crop(stacks, r) for r in rows]
    y = np.array([r["label"] == "informative" for r in rows], int)
    return patches, y


def split(y: np.ndarray, seed: int = 0, test: float = 0.3) -> np.ndarray:
    """Boolean mask of the held-out test patches, stratified."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for k in (0, 1):
        idx = np.flatnonzero(y == k)
        mask[rng.choice(idx, round(test * len(idx)), replace=False)] = True
    return mask


def evaluate(model: str, X: np.ndarray, y: np.ndarray, test: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    from napari_cem.quality import fit_classifier

    clf = fit_classifier(model, X[~test], y[~test], cv=False)
    t0 = time.perf_counter()
    for _ in range(5):
        p = clf.predict_proba(X[test])
    pred_rate = 5 * int(test.sum()) / (time.perf_counter() - t0)
    return {"auroc": float(roc_auc_score(y[test], p)), "predict_per_s": pred_rate,
            "n_test": int(test.sum()), "n_test_uninf": int((y[test] == 0).sum()),
            "n_train": int((~test).sum())}


def case_rf(args) -> list[str]:
    from napari_cem.quality import quality_features

    patches, y = load(Path(args.vnc))
    test = split(y)
    t0 = time.perf_counter()
    load_avg = os.getloadavg()[0]
    X = quality_features(patches, n_jobs=1)
    one = len(patches) / (time.perf_counter() - t0)
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    X2 = quality_features(patches, n_jobs=-1)
    many = len(patches) / (time.perf_counter() - t0)
    assert np.array_equal(X, X2)
    r = evaluate("rf", X, y, test)
    return [
        row(f"quality: random forest (4 features) held-out AUROC, VNC labels ({PAPER})",
            f"{r['auroc']:.3f} (test {r['n_test']} patches, {r['n_test_uninf']} uninformative; "
            f"train {r['n_train']})"),
        row("quality: random-forest features, 224 x 224 patches",
            f"{one:.1f} patches/s (1 process), {many:.1f} patches/s ({cores} processes); "
            f"prediction {r['predict_per_s']:,.0f} patches/s; machine load average {load_avg:.1f} at start"),
    ]


def case_encoder(args) -> list[str]:
    from napari_cem.quality import encoder_features
    from napari_cem.quality.classifiers import build_encoder

    patches, y = load(Path(args.vnc))
    test = split(y)
    weights = None if args.weights in (None, "", "none") else args.weights
    enc = build_encoder(weights)
    encoder_features(patches[:4], encoder=enc, device=args.device, batch_size=4)  # warm-up
    load_avg = os.getloadavg()[0]
    t0 = time.perf_counter()
    X, info = encoder_features(patches, encoder=enc, device=args.device, batch_size=args.batch)
    if info["device"].startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    rate = len(patches) / (time.perf_counter() - t0)
    r = evaluate("encoder", X, y, test)
    name = "random-init ResNet50" if weights is None else f"ResNet50 {info['name']}"
    return [
        row(f"quality: encoder ({name}) + logistic regression held-out AUROC, VNC labels ({PAPER})",
            f"{r['auroc']:.3f} (test {r['n_test']} patches, {r['n_test_uninf']} uninformative; "
            f"train {r['n_train']})"),
        row(f"quality: encoder features ({name}), 224 x 224 patches",
            f"{rate:.1f} patches/s on {info['device']}, {info['amp']}, batch {args.batch}; "
            f"prediction {r['predict_per_s']:,.0f} patches/s; machine load average {load_avg:.1f} at start"),
    ]


def run_suite() -> list[str]:
    """CPU rows for ``python benchmarks/run.py quality`` (GPU: run this file with --device cuda)."""
    from _harness import run_isolated

    if not (VNC_DIR / "stack1_image.tif").exists():
        print(f"VNC data absent ({VNC_DIR}): no quality rows", file=sys.stderr)
        return []
    rows = []
    for case in ("rf", "encoder"):
        rows += run_isolated("bench_quality", case, "--device", "cpu", "--json")["rows"]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["rf", "encoder"], default="rf")
    p.add_argument("--device", default="auto", help="encoder: auto | cuda | mps | cpu")
    p.add_argument("--batch", type=int, default=32, help="encoder batch size (default 32)")
    p.add_argument("--weights", default="none", help="encoder weights (checkpoint file or released name)")
    p.add_argument("--vnc", default=str(VNC_DIR), help="folder of the VNC data")
    p.add_argument("--json", action="store_true", help="print one JSON line (for run.py)")
    args = p.parse_args(argv)
    if not (Path(args.vnc) / "stack1_image.tif").exists():
        print(f"VNC data absent ({args.vnc}): nothing to measure", file=sys.stderr)
        return 0
    rows = case_rf(args) if args.case == "rf" else case_encoder(args)
    print(json.dumps({"rows": rows}) if args.json else "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
