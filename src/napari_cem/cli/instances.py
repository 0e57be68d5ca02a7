"""``napari-cem instances``: objects (instance labels) of a segmentation, and their table."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .._argtypes import float_in, int_at_least
from . import CLIError, command, progress_bar, progress_callback
from ._common import _axis_options, _cluster_options, _read, cli_cluster


def _instances_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("segmentation", metavar="SEGMENTATION",
                   help="labels (TIFF or any label image, or the zarr store of 'segment --zarr'), or "
                        "probabilities (float 0-1, or the uint8 OUT_probabilities.tif of segment)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="instance labels: OUT.tif, or a zarr store (OUT.zarr, labelled slab by slab); "
                        "the table of objects goes to OUT.csv")
    p.add_argument("--class", dest="class_name", metavar="NAME",
                   help="the class to take (a name saved with the segmentation, or its value); "
                        "default: every class, objects of different classes kept apart")
    dims = p.add_mutually_exclusive_group()
    dims.add_argument("--3d", dest="mode", action="store_const", const="3d", default="3d",
                      help="objects in 3D (default)")
    dims.add_argument("--2d", dest="mode", action="store_const", const="2d",
                      help="objects per xy slice")
    p.add_argument("--connectivity", choices=["auto", "full", "faces"], default="auto",
                   help="auto: full (26) for near-isotropic voxels, faces (6) across thick sections")
    p.add_argument("--split", action="store_true",
                   help="split touching objects (distance-transform watershed; 3D needs the volume "
                        "in memory)")
    p.add_argument("--split-depth", type=float_in(0, 1e9, low_open=True), default=2.0, metavar="H",
                   help="how much narrower a neck must be than the bodies it joins (in --unit; "
                        "default 2)")
    p.add_argument("--min-size", type=float_in(0, 1e18), default=0, metavar="SIZE",
                   help="drop objects smaller than SIZE (voxels, or nm^3 / nm^2 with --unit nm)")
    p.add_argument("--unit", choices=["auto", "voxels", "nm"], default="auto",
                   help="of --min-size and --split-depth; auto: nm when the voxel size is known")
    p.add_argument("--threshold", type=float_in(0, 1), default=0.5, help="for probabilities (default 0.5)")
    p.add_argument("--image", metavar="EM", help="the EM volume, for intensity columns in OUT.csv")
    p.add_argument("--slab", type=int_at_least(1), default=None, metavar="N",
                   help="slices per slab for a zarr output (default: about 64 MiB of input)")
    _cluster_options(p, "with a zarr output: label the slabs on", "this process stitches them (the same ids)")
    _axis_options(p, what="the segmentation")


def _read_semantic(args):
    """(array, class names, voxel size, kind) of the segmentation input."""
    from ..io.labels import saved_class_names, saved_info

    p = Path(args.segmentation)
    if not p.exists():
        raise CLIError(f"segmentation not found: {args.segmentation}")
    if p.is_dir() and (p / "zarr.json").exists():
        from ..infer import open_segmentation

        try:
            seg = open_segmentation(p)
        except ValueError:
            seg = None
        if seg is not None:
            if not seg.metadata.get("complete"):
                raise CLIError(f"the segmentation store '{p}' is unfinished: rerun segment to finish it")
            return seg.labels, seg.classes, seg.metadata.get("voxel_size"), "labels"
    data, meta = _read(args.segmentation, args, "instances", standardize_mode="none")
    info = saved_info(p) or {}
    kind = "probabilities" if "probabilities" in info else "auto"
    return data, saved_class_names(p), meta.voxel_size, kind


def _class_value(name, classes, kind):
    if name is None:
        return None
    if kind == "probabilities":
        raise CLIError("probabilities hold one structure: drop --class (use --threshold)")
    if classes and name in classes:
        return classes.index(name)
    if name.isdigit():
        return int(name)
    known = f"; the classes are: {', '.join(classes[1:])}" if classes else ""
    raise CLIError(f"class '{name}' is not in the segmentation{known}")


@command("instances", "objects (instance labels) of a segmentation, with a CSV table of their sizes",
         _instances_args)
def run_instances(args: argparse.Namespace) -> int:
    import numpy as np

    from .._atomic import write_text_atomic
    from ..instances import find_instances
    from ..instances_slabs import find_instances_in_slabs
    from ..io.labels import write_labels_tiff
    from ..measurements import measure_objects, measure_objects_in_slabs, table_csv

    out = Path(args.output)
    to_zarr = out.suffix.lower() == ".zarr"
    data, classes, voxel_size, kind = _read_semantic(args)
    value = _class_value(args.class_name, classes or [], kind)
    unit = args.unit if args.unit != "auto" else ("nm" if voxel_size is not None else "voxels")
    options = dict(value=value, kind=kind, threshold=args.threshold, mode=args.mode,
                   connectivity=args.connectivity, split=args.split, split_depth=args.split_depth,
                   min_size=args.min_size, unit=unit, voxel_size=voxel_size, class_names=classes)
    bar = progress_bar(total=0, unit="step", desc="instances")
    try:
        if to_zarr:
            if np.ndim(data) != 3:
                raise CLIError("a zarr output is for 3D volumes; write a TIFF")
            with contextlib.ExitStack() as stack:
                client = stack.enter_context(cli_cluster(args)) if args.scheduler or args.workers else None
                result = find_instances_in_slabs(data, out, slab=args.slab, client=client,
                                                 progress=progress_callback(bar, "instances"), **options)
        else:
            if args.scheduler or args.workers:
                raise CLIError("--scheduler / --workers label the slabs of a zarr output: write OUT.zarr")
            result = find_instances(np.asarray(data), progress=progress_callback(bar, "instances"), **options)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    if not to_zarr:
        write_labels_tiff(out, result.labels, voxel_size,
                          {"instances": result.info, "classes": list(classes or []),
                           "object_class": result.object_class.tolist()})
    image = None
    if args.image:
        image, _ = _read(args.image, args, "instances", standardize_mode="none")
    table = dict(voxel_size=voxel_size, object_class=result.object_class, class_names=classes)
    bar = progress_bar(total=0, unit="slice", desc="measuring")
    try:
        if to_zarr:  # never the whole label volume in memory: slab by slab, then object by object
            cols = measure_objects_in_slabs(result.labels, image=image, slab=args.slab,
                                            progress=progress_callback(bar, "measuring"), **table)
        else:
            cols = measure_objects(result.labels, image=None if image is None else np.asarray(image), **table)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    csv = out.with_suffix(".csv")
    write_text_atomic(csv, table_csv(cols))
    print(result.describe())
    if result.count == 0:
        print("napari-cem instances: note: no objects; the table is empty", file=sys.stderr)
    print(f"instance labels: {out} ({np.dtype(result.labels.dtype).name}); table: {csv}")
    return 0
