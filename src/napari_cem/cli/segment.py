"""``napari-cem segment``: a whole volume with a fine-tuned model into a labels file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._argtypes import float_in, int_at_least
from .._outputs import check_writable_file, check_writable_folder
from ..engines import ENGINES
from . import CLIError, command, progress_bar, progress_callback
from ._common import _axis_options, _cluster_options, _read, _save, cli_cluster


def _segment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a napari-cem model bundle (.pt) made by fine-tuning")
    p.add_argument("input", metavar="INPUT", help="the EM volume or image (any format napari-cem reads)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="labels file: a TIFF (default), or a zarr store with --zarr")
    p.add_argument("--mode", choices=["stack", "orthoplane"], default="stack",
                   help="stack: every xy slice (default); orthoplane: xy, xz and yz averaged "
                        "(near-isotropic volumes)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    p.add_argument("--zarr", action="store_true",
                   help="write a zarr store slab by slab (volumes larger than memory); rerunning "
                        "the same command resumes an interrupted run")
    p.add_argument("--ome-zarr", action="store_true",
                   help="write an OME-Zarr label image (implies --zarr; resumable the same way): a "
                        "multiscale pyramid, class names and colours, the voxel size in nm; with OUT = "
                        "IMAGE.zarr/labels/NAME, the labels of the OME-Zarr image IMAGE.zarr")
    _cluster_options(p, "with --zarr: spread the slabs over", "each worker loads the model once; same "
                                                             "labels and resume as one process", devices=True)
    p.add_argument("--threshold", type=float_in(0, 1), default=0.5,
                   help="probability above which a voxel is the structure (one-structure models; default 0.5)")
    p.add_argument("--threshold-from", default=None, metavar="PAINT",
                   help="estimate the threshold on the painted slices of PAINT (labels of the input's "
                        "shape, painted as for finetune) that the model did not train on: the one of "
                        "0.05 ... 0.95 with the best IoU there (it replaces --threshold; printed)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the confidences (uint8, 255 = 1): OUT_prob.tif, or inside the zarr store")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write how unsure each voxel is (uint8, 255 = most): OUT_uncertainty.tif, "
                        "or inside the zarr store; the most uncertain slices are listed")
    p.add_argument("--tta", choices=["none", "flips", "d4"], default="none",
                   help="test-time augmentation: average over 4 flips or the 8 quarter turns and flips "
                        "(4x / 8x the time; default none)")
    p.add_argument("--z-smooth", action="store_true",
                   help="stack mode: threshold each slice's confidences averaged with its two "
                        "neighbours' (1/4, 1/2, 1/4), against flicker between thick sections; in "
                        "memory only (not with --zarr)")
    p.add_argument("--min-size", type=float_in(0, 1e18), default=0, metavar="SIZE",
                   help="remove pieces of a class under SIZE (voxels; nm^3 / nm^2 with --size-unit nm), "
                        "per xy slice in stack mode, in 3D in orthoplane mode (default 0: keep all)")
    p.add_argument("--size-unit", choices=["voxels", "nm"], default="voxels",
                   help="unit of --min-size (nm needs the voxel size of the input)")
    p.add_argument("--fill-holes", action="store_true",
                   help="background enclosed by one class becomes that class (per slice / 3D as above)")
    p.add_argument("--engine", choices=list(ENGINES), default="auto",
                   help="inference engine: auto (default: openvino on a CPU with native bf16 when it is "
                        "installed, 3x torch bf16 on an AMX CPU; else torch), torch, or openvino on the CPU "
                        "(pip install 'napari-cem[cpu-engines]')")
    p.add_argument("--precision", choices=["auto", "float32", "bf16", "fp16"], default="auto",
                   help="auto (default): bf16/fp16 on GPUs and on CPUs with native bf16, checked against "
                        "float32 on the first batch; float32: always full precision (with openvino too)")
    p.add_argument("--tile", type=int_at_least(32), default=1024,
                   help="largest slice side predicted at once (default 1024)")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="slices per forward pass (default: per device)")
    p.add_argument("--standardize", choices=["percentile", "dtype-max", "none"], default="percentile",
                   help="how a non-8-bit input becomes 8-bit (as in 'inspect'; default percentile)")
    _axis_options(p)


@command("segment", "segment a whole volume with a fine-tuned model (2D stack or orthoplane) into labels",
         _segment_args)
def run_segment(args: argparse.Namespace) -> int:
    import json
    import warnings

    from ..infer import segment
    from ..io.labels import label_counts, write_labels_tiff
    from ..model import load_bundle

    model_path, out = Path(args.model), Path(args.output)
    args.zarr = args.zarr or args.ome_zarr
    if not model_path.is_file():
        raise CLIError(f"model file not found: {model_path}")
    if not Path(args.input).exists() and not any(c in args.input for c in "*?["):
        raise CLIError(f"input not found: {args.input}")
    if args.zarr and out.exists() and not out.is_dir():
        raise CLIError(f"output '{out}' exists and is not a zarr store (a folder)")
    if not args.zarr and out.is_dir():
        raise CLIError(f"output '{out}' is a folder; give a .tif file name, or add --zarr")
    if (args.scheduler or args.workers or args.devices) and not args.zarr:
        raise CLIError("--scheduler / --workers / --devices spread the slabs of a zarr output: add --zarr "
                       "(or --ome-zarr)")
    if args.devices:
        from ..cluster import parse_devices

        try:
            gpus = parse_devices(args.devices)[0].startswith("cuda")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        args.device = "cuda" if gpus else "cpu"  # each worker sees its own card as cuda
    if args.zarr and (args.min_size or args.fill_holes):
        raise CLIError("--min-size and --fill-holes clean labels held in memory: write a TIFF (no --zarr)")
    if args.ome_zarr:
        from ..ome_labels import prepare_labels_group

        prepare_labels_group(out)
    if args.zarr:
        check_writable_folder(out if out.exists() else out.parent, "zarr store's folder")
    else:
        check_writable_file(out)
    try:
        bundle = load_bundle(model_path)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    volume, meta = _read(args.input, args, "segment", standardize_mode=args.standardize)
    if args.threshold_from:
        args.threshold = _threshold_from(args, volume, bundle)
    bar = progress_bar(total=0, unit="slice", desc="segment")

    progress = progress_callback(bar, "segment")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            options = dict(mode=args.mode, threshold=args.threshold, tile=args.tile, batch_size=args.batch_size,
                           device=args.device, keep_probabilities=args.probabilities,
                           keep_uncertainty=args.uncertainty, tta=args.tta, voxel_size=meta.voxel_size,
                           engine=args.engine, precision=args.precision, progress=progress)
            if args.scheduler or args.workers or args.devices:
                result = _on_cluster(args, volume, model_path, out, options)
            else:
                result = segment(volume, bundle, out=out if args.zarr else None, z_smooth=args.z_smooth,
                                 **options)
        clean(result, args, meta.voxel_size)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)):
            print(f"napari-cem segment: warning: {w.message}", file=sys.stderr)
    if args.ome_zarr:
        _write_ome(out, meta.voxel_size, result.classes)
    info = {"classes": result.classes, "source": meta.source, "voxel_size": meta.voxel_size,
            **{k: result.metadata.get(k) for k in ("mode", "threshold", "precision", "device", "tta", "z_smooth", "cleanup")}}
    written, code = [out], 0
    if not args.zarr:
        saved, code = _save(lambda p: write_labels_tiff(p, result.labels, meta.voxel_size, info),
                            out, "segment")
        written = [saved]
        if result.probabilities is not None:
            prob_path = saved.with_name(saved.name.split(".")[0] + "_prob.tif")
            saved, rescued = _save(lambda p: write_labels_tiff(
                p, result.probabilities, meta.voxel_size, {**info, "probabilities": "uint8, 255 = 1.0"}),
                prob_path, "segment")
            written.append(saved)
            code = max(code, rescued)
        if result.uncertainty is not None:
            unsure_path = written[0].with_name(written[0].name.split(".")[0] + "_uncertainty.tif")
            saved, rescued = _save(lambda p: write_labels_tiff(
                p, result.uncertainty, meta.voxel_size, {**info, "uncertainty": "uint8, 255 = most unsure"}),
                unsure_path, "segment")
            written.append(saved)
            code = max(code, rescued)
    labels = result.labels
    counts = label_counts(labels, len(result.classes))
    total = max(int(sum(counts)), 1)
    fractions = ", ".join(f"{name} {100 * c / total:.1f} %" for name, c in zip(result.classes, counts))
    print(f"{' x '.join(str(s) for s in labels.shape)} voxels segmented ({args.mode}, "
          f"{result.metadata['precision']} on {result.metadata['device']}) in "
          f"{result.metadata['seconds']:.1f} s: {fractions}")
    print(f"written: {', '.join(str(p) for p in written)}  (classes: {json.dumps(result.classes)})")
    scores = result.metadata.get("slice_uncertainty")
    if scores and len(scores) > 1:
        worst = sorted(range(len(scores)), key=lambda z: -scores[z])[:5]
        print("most uncertain slices (z: mean uncertainty): "
              + ", ".join(f"{z}: {scores[z]:.3f}" for z in worst))
    return code


def _on_cluster(args, volume, model_path: Path, out: Path, options: dict):
    """--scheduler / --workers: the run on a dask.distributed cluster (its client here)."""
    from ..cluster import segment_on_cluster

    with cli_cluster(args) as client:
        return segment_on_cluster(volume, model_path, out, client, **options)


def _write_ome(out: Path, voxel_size, classes) -> None:
    """--ome-zarr: the finished store becomes an OME-Zarr label image (pyramid + metadata)."""
    import time

    from ..ome_labels import image_of_labels, write_ome_labels

    t0 = time.perf_counter()
    write_ome_labels(out, voxel_size=voxel_size, class_names=classes, name=out.name)
    image = image_of_labels(out)
    where = f"labels '{out.name}' of the OME-Zarr image {image}" if image else "an OME-Zarr label image"
    print(f"{out} is {where} (NGFF 0.5; pyramid in {time.perf_counter() - t0:.1f} s)")


def clean(result, args: argparse.Namespace, voxel_size) -> None:
    """--min-size / --fill-holes on the in-memory result, and what they changed."""
    from ..cleanup import clean_segmentation, describe

    clean_segmentation(result, args.min_size, args.fill_holes, args.size_unit, voxel_size)
    if result.metadata.get("cleanup"):
        print(f"clean-up: {describe(result.metadata['cleanup'])}")


def _threshold_from(args, volume, bundle) -> float:
    """--threshold-from: the threshold estimated on the held-out painted slices (printed)."""
    import numpy as np

    from ..threshold import threshold_from_paint

    if not Path(args.threshold_from).exists():
        raise CLIError(f"paint not found: {args.threshold_from} (--threshold-from)")
    paint, _ = _read(args.threshold_from, args, "segment", standardize_mode="none", lazy=False)
    try:
        estimate = threshold_from_paint(volume, np.asarray(paint), bundle, device=args.device)
    except ValueError as exc:
        raise CLIError(f"--threshold-from: {exc}") from None
    print(f"napari-cem segment: {estimate.describe()}")
    return estimate.threshold
