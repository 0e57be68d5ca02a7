"""``napari-cem filter``: the informative patches of an export, by a classifier on your labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._argtypes import float_in, workers
from .._outputs import check_writable_folder
from . import CLIError, command, progress_bar, progress_callback


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_dir", metavar="EXPORT_DIR",
                   help="a curation export folder (manifest.csv + patches/)")
    p.add_argument("--labels", metavar="CSV",
                   help="labels file (patch_id,label,who,when); default EXPORT_DIR/labels.csv")
    p.add_argument("--model", choices=["rf", "encoder"], default="rf",
                   help="rf: random forest on four texture features (the paper's light model, "
                        "default); encoder: ResNet50 pooled features + logistic regression")
    p.add_argument("--weights", metavar="PATH",
                   help="encoder weights for --model encoder: a checkpoint file or a released name "
                        "(cem500k-mocov2, cem1.5m-swav); default: a randomly initialised ResNet50")
    p.add_argument("--threshold", type=float_in(0, 1), default=0.5,
                   help="keep patches with P(informative) above this (default 0.5)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="folder for the informative patches (patches/, manifest.csv with p_informative)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu (encoder only)")
    p.add_argument("--workers", type=workers, default=1,
                   help="processes for the rf features (default 1; -1 for all cores)")


@command("filter", "train an informative/uninformative classifier on your labels and write the "
         "informative patches of an export", _filter_args)
def run_filter(args: argparse.Namespace) -> int:
    from ..quality import filter_export

    export = Path(args.export_dir)
    if not export.is_dir():
        raise CLIError(f"export folder not found: {export}")
    labels = Path(args.labels) if args.labels else export / "labels.csv"
    if not labels.exists():
        raise CLIError(f"labels file not found: {labels} (label patches in the Label patches "
                       "widget, or pass --labels)")
    if args.weights and args.model != "encoder":
        raise CLIError("--weights is for --model encoder")
    check_writable_folder(args.output)
    bar = progress_bar(total=0, desc="filter", unit="patch")

    progress = progress_callback(bar, "filter")

    try:
        summary = filter_export(export, labels, args.output, model=args.model, threshold=args.threshold,
                                encoder_weights=args.weights, device=args.device, n_jobs=args.workers,
                                progress=progress)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    for problem in summary.get("label_problems", []):
        print(f"warning: {labels.name}: {problem}", file=sys.stderr)
    auroc = summary.get("cv_auroc")
    auroc_text = "n/a (too few of one class)" if auroc is None else f"{auroc:.3f}"
    print(f"{summary['model']} trained on {summary['n_informative_labels']} informative + "
          f"{summary['n_uninformative_labels']} uninformative labels, cross-validated AUROC {auroc_text}")
    if summary.get("encoder"):
        print(f"encoder: {summary['encoder']}")
    print(f"kept {summary['n_kept']:,} of {summary['n_patches']:,} patches (P(informative) > "
          f"{summary['threshold']:g}), dropped {summary['n_dropped']:,}; written to {summary['out_dir']}")
    return 0
