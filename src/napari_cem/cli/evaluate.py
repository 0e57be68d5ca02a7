"""``napari-cem evaluate``: IoU per class of predicted labels against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, command
from ._common import _axis_options, _read


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", metavar="PRED", help="predicted labels: TIFF (or any label image) or the "
                   "zarr store written by 'napari-cem segment --zarr'")
    p.add_argument("gt", metavar="GT", help="ground-truth labels, same shape")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="names of label values 0, 1, ... (0 is the background); by default those "
                        "saved with the prediction, else 'class 1', 'class 2', ...")
    p.add_argument("--partial", action="store_true",
                   help="for an unfinished 'segment --zarr' store: score only its finished slabs "
                        "(by default an unfinished store is refused)")
    p.add_argument("--instances", action="store_true",
                   help="PRED and GT are instance labels (objects): matches by IoU, precision / "
                        "recall / F1 at 0.5 and 0.75, panoptic quality, splits and merges")
    _axis_options(p, what="both label images")


@command("evaluate", "IoU per class of predicted labels against ground truth (3D and mean of 2D "
         "slices), or instance scores (--instances)",
         _evaluate_args)
def run_evaluate(args: argparse.Namespace) -> int:
    from ..metrics import evaluate

    pred, saved_classes, finished = _read_label_image(args.pred, "prediction", args)
    gt, _, _ = _read_label_image(args.gt, "ground truth", args)
    classes = args.classes or saved_classes
    scope = ""
    if finished is not None:
        pred, gt, scope = _finished_part(pred, gt, *finished, partial=args.partial)
    if args.instances:
        return _evaluate_instances(pred, gt, args)
    try:
        result = evaluate(pred, gt, classes=classes)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"IoU of {args.pred} against {args.gt} ({result.n_slices} slice"
          f"{'s' if result.n_slices != 1 else ''}, background excluded{scope})")
    print(result.table())
    return 0


def _evaluate_instances(pred, gt, args) -> int:
    from ..instance_metrics import evaluate_instances

    try:
        scores = evaluate_instances(pred, gt)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"instances of {args.pred} against {args.gt}")
    print(scores.table())
    return 0


def _finished_part(pred, gt, ranges, n_slabs: int, partial: bool):
    """(pred, gt, note) of a segmentation store: all of it when finished, else refused or,
    with *partial*, only its finished slabs (the note says so)."""
    import numpy as np

    if len(ranges) == n_slabs:
        return pred, gt, ""
    if not partial or not ranges:
        raise CLIError(f"segmentation incomplete ({len(ranges)} of {n_slabs} slabs): rerun segment to "
                       f"finish it{', or add --partial to score the finished slabs only' if ranges else ''}")
    if np.shape(gt)[:1] != np.shape(pred)[:1]:
        raise CLIError(f"the prediction has {np.shape(pred)[0]} slices and the ground truth "
                       f"{np.shape(gt)[0]}; they must have the same shape")
    pred = np.concatenate([np.asarray(pred[a:b]) for a, b in ranges])
    gt = np.concatenate([np.asarray(gt[a:b]) for a, b in ranges])
    return pred, gt, f"; PARTIAL: only the {len(ranges)} finished of {n_slabs} slabs, {len(pred)} slices"


def _read_label_image(path: str, what: str, args):
    """(labels, saved class names or None, finished slabs or None) of a label TIFF/image or a
    segmentation store; finished slabs are ``(ranges, n_slabs)`` for a ``segment --zarr`` store."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} not found: {path}")
    if p.is_dir() and (p / "zarr.json").exists():
        from ..infer import finished_slabs, open_segmentation

        try:
            seg = open_segmentation(p)
        except ValueError:
            seg = None  # another zarr: read it as a volume below
        if seg is not None:
            return seg.labels, seg.classes or None, finished_slabs(p)
    from ..io.labels import saved_class_names

    classes = saved_class_names(p)
    data, _meta = _read(path, args, "evaluate", standardize_mode="none")
    return data, classes, None
