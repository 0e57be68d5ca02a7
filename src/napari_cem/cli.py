"""The ``napari-cem`` command: every subcommand is registered here, in one place.

Exit codes: 0 done; 1 done in part (``curate``: some sources failed; ``finetune`` /
``segment``: the result could not be saved where asked and was saved in the cache's
``rescued`` folder instead); 2 nothing done: a bad option, an unreadable input or an
output that cannot be written (one plain line, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._argtypes import float_in, int_at_least, int_in, workers
from ._outputs import check_writable_file, check_writable_folder
from ._terminal import progress_bar, progress_callback

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, Callable]] = {}


class CLIError(Exception):
    """A problem the user can fix; printed without traceback."""


def _option_names(prefix: str = "") -> dict[str, str]:
    """How a choice of channel / time point is asked for on the command line."""
    return {"channel": f"--{prefix}channel ", "timepoint": f"--{prefix}timepoint "}


def _axis_options(p: argparse.ArgumentParser, prefix: str = "", what: str = "the input") -> None:
    """--channel / --timepoint (or --labels-channel ...) for a command that reads an image."""
    p.add_argument(f"--{prefix}timepoint", type=int_at_least(0), default=None, metavar="T",
                   help=f"index on the time axis of {what}, if it has one")
    p.add_argument(f"--{prefix}channel", type=int_at_least(0), default=None, metavar="C",
                   help=f"index on the channel axis of {what}, if it has one")


def _read(path, args, command: str, prefix: str = "", **options):
    """read_volume with the command's --channel / --timepoint; its notes go to stderr and
    an axis choice it asks for names this command's options."""
    from .io import VolumeError, read_volume

    key = prefix.replace("-", "_")
    try:
        data, meta = read_volume(path, channel=getattr(args, f"{key}channel", None),
                                 timepoint=getattr(args, f"{key}timepoint", None), **options)
    except VolumeError as exc:
        raise CLIError(exc.message(_option_names(prefix))) from None
    for note in meta.warnings:
        print(f"napari-cem {command}: note: {Path(str(path)).name}: {note}", file=sys.stderr)
    return data, meta


def _save(save, path, command: str):
    """Save with the rescue fallback; (path written, exit code): 1 when it was rescued."""
    from ._outputs import save_or_rescue

    written, problem = save_or_rescue(save, path)
    if problem:
        print(f"napari-cem {command}: error: {problem}", file=sys.stderr)
    return written, (1 if problem else 0)


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register the decorated ``run(args) -> exit code`` as subcommand *name*.

    *arguments* adds the subcommand's options to its parser.
    """

    def register(run: Callable):
        _COMMANDS[name] = (help, arguments, run)
        return run

    return register


# -- demo ------------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--anisotropic", action="store_true",
                   help="ssTEM-like anisotropic sample (40 x 8 x 8 nm) instead of the isotropic one")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the synthetic volume (default 0)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="save a screenshot of the whole window to PNG once it is shown, then quit")


@command("demo", "open napari with a synthetic EM volume, its labels and the napari-cem widgets", _demo_args)
def run_demo(args: argparse.Namespace) -> int:
    import napari

    from ._sample_data import sample_layers
    from .widgets_registry import add_all_dock_widgets, fit_window

    viewer = napari.Viewer(title="napari-cem demo")
    for data, kwargs, kind in sample_layers(isotropic=not args.anisotropic, seed=args.seed):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.current_step = tuple(s // 2 for s in viewer.dims.nsteps)
    add_all_dock_widgets(viewer)
    fit_window(viewer)
    if args.screenshot:
        from qtpy.QtCore import QTimer

        def shoot():
            _save_window_screenshot(viewer, args.screenshot)
            viewer.close()

        QTimer.singleShot(1500, shoot)
    napari.run()
    return 0


def _save_window_screenshot(viewer, path: str) -> None:
    import imageio.v3 as iio

    image = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(path, image)
    print(f"screenshot saved to {path}")


# -- info ------------------------------------------------------------------------------------
@command("info", "print versions, the compute device found and the cache folder")
def run_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform

    from . import __version__
    from .cache import cache_dir

    print(f"napari-cem {__version__}")
    print(f"python     {platform.python_version()} ({platform.system()} {platform.machine()})")
    for dist in ("napari", "numpy", "torch", "segmentation-models-pytorch", "imagehash",
                 "tifffile", "zarr", "dask", "scikit-image"):
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = "not installed"
        print(f"{dist:<28} {version}")
    print(f"{'Qt binding':<28} {_qt_binding()}")
    try:
        from .device import describe_device

        print(f"device (auto)                {describe_device()}")
    except Exception as exc:  # torch missing or broken: say so, info must still print
        print(f"device (auto)                unavailable ({exc})")
    print(f"cache folder                 {cache_dir()}  (set NAPARI_CEM_CACHE to change)")
    from .weights import weights_report

    for row in weights_report():
        state = (f"cached, SHA-256 {row['sha256'] or 'not recorded yet (recorded at next use)'}"
                 if row["cached"] else "not downloaded")
        pin = row["pin"] or f"none (set {row['pin_variable']} to pin one)"
        print(f"weights {row['name']:<20} {state}")
        print(f"{'':<28} file {row['path']}")
        print(f"{'':<28} pinned SHA-256: {pin}")
    return 0


def _qt_binding() -> str:
    try:
        import qtpy

        return f"{qtpy.API_NAME} {qtpy.QT_VERSION}"
    except Exception:
        return "none (install napari-cem[all] for the viewer)"


# -- inspect ---------------------------------------------------------------------------------
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an EM file, a folder of 2D images, or a glob such as 'dir/*.png'")
    p.add_argument("--standardize", choices=["percentile", "dtype-max", "none"], default="percentile")
    p.add_argument("--percentiles", nargs=2, type=float_in(0, 100), default=(0.5, 99.5),
                   metavar=("LOW", "HIGH"))
    _axis_options(p)
    p.add_argument("--level", type=int_at_least(0), default=0, help="OME-Zarr multiscale level (default 0)")


@command("inspect", "read an EM volume as napari-cem would and describe it (shape, voxel size, "
         "value range, contrast)", _inspect_args)
def run_inspect(args: argparse.Namespace) -> int:
    data, meta = _read(args.path, args, "inspect", standardize_mode=args.standardize,
                       percentiles=tuple(args.percentiles), level=args.level)
    voxel = "unknown" if meta.voxel_size is None else " x ".join(f"{v:g}" for v in meta.voxel_size) + " nm"
    print(f"source          {meta.source}")
    print(f"format          {meta.format}{' (lazy)' if meta.lazy else ''}")
    print(f"shape ({meta.axes})    {' x '.join(str(s) for s in data.shape)}")
    print(f"voxel size      {voxel}")
    print(f"original dtype  {meta.original_dtype}, values {meta.value_range[0]:g} .. {meta.value_range[1]:g}")
    print(f"standardised    {meta.standardize_mode} -> {data.dtype}")
    print(f"contrast        {'looks INVERTED (bright membranes): use invert' if meta.likely_inverted else 'normal (dark membranes)'}")
    return 0


# -- curate ----------------------------------------------------------------------------------
def _curate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="EM volumes or 2D images (any format napari-cem reads); each is one source")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="export folder: patches/ (kept exemplars as TIFF) and manifest.csv")
    p.add_argument("--patch-size", type=int_at_least(8), default=224, help="patch side in pixels (default 224)")
    p.add_argument("--cutoff", type=int_in(0, 64), default=12,
                   help="Hamming distance of near-duplicates, inclusive (default 12)")
    p.add_argument("--planes", choices=["auto", "xy", "all"], default="auto",
                   help="auto: xy, xz and yz for near-isotropic volumes, xy otherwise (default)")
    p.add_argument("--tolerance", type=float_in(0), default=0.2,
                   help="relative z/xy spacing difference still called isotropic (default 0.2)")
    p.add_argument("--grouping", choices=["greedy", "components"], default="greedy",
                   help="greedy: the original exemplar procedure (default); components: transitive groups")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the greedy shuffle (default 0)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="parallel processes, one source each (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler address: spread the sources over that cluster "
                        "(its workers must see the same files)")
    _axis_options(p, what="every input")


@command("curate", "cut patches, find near-duplicates by dHash and export the kept exemplars",
         _curate_args)
def run_curate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .batch import CurateRequest, curate_files

    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise CLIError(f"input not found: {', '.join(missing)}")
    out = check_writable_folder(args.output)
    request = CurateRequest(patch_size=args.patch_size, cutoff=args.cutoff, planes=args.planes,
                            grouping=args.grouping, seed=args.seed, tolerance=args.tolerance,
                            channel=args.channel, timepoint=args.timepoint)
    single = len(args.inputs) == 1 and not args.scheduler
    bar = progress_bar(total=0 if single else len(args.inputs), unit="patch" if single else "source",
                       desc="curate")
    errors = []

    def on_done(summary, n_done, n_total):
        if "error" in summary:
            errors.append(summary)
            tqdm.write(f"napari-cem curate: error: {summary['source']}: {summary['error']}", file=sys.stderr)
        elif summary.get("skipped"):
            tqdm.write(f"{summary['source']}: already exported, skipped", file=sys.stderr)
        else:
            tqdm.write(f"{summary['source']}: {summary['n_patches']:,} patches "
                       f"({'/'.join(summary['planes'])}), {summary['n_groups']:,} groups, "
                       f"{summary['written']:,} exemplars written in {summary['seconds']:.1f} s",
                       file=sys.stderr)
        if not single:
            bar.update(1)

    progress = progress_callback(bar, "curate")

    try:
        results = curate_files(args.inputs, out, request, workers=args.workers,
                               scheduler=args.scheduler, on_done=on_done,
                               progress=progress if single else None, option_names=_option_names())
    finally:
        bar.close()
    done = [r for r in results if "error" not in r]
    kept = sum(r.get("n_kept", 0) for r in done if not r.get("skipped"))
    print(f"{len(done)} of {len(results)} sources curated into {out} "
          f"({kept:,} exemplars written this run); manifest: {out / 'manifest.csv'}")
    return 1 if errors else 0


# -- segment / evaluate ----------------------------------------------------------------------
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
    p.add_argument("--threshold", type=float_in(0, 1), default=0.5,
                   help="probability above which a voxel is the structure (one-structure models; default 0.5)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the confidences (uint8, 255 = 1): OUT_prob.tif, or inside the zarr store")
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

    from .infer import segment
    from .model import load_bundle

    model_path, out = Path(args.model), Path(args.output)
    if not model_path.is_file():
        raise CLIError(f"model file not found: {model_path}")
    if not Path(args.input).exists() and not any(c in args.input for c in "*?["):
        raise CLIError(f"input not found: {args.input}")
    if args.zarr and out.exists() and not out.is_dir():
        raise CLIError(f"output '{out}' exists and is not a zarr store (a folder)")
    if not args.zarr and out.is_dir():
        raise CLIError(f"output '{out}' is a folder; give a .tif file name, or add --zarr")
    if args.zarr:
        check_writable_folder(out if out.exists() else out.parent, "zarr store's folder")
    else:
        check_writable_file(out)
    try:
        bundle = load_bundle(model_path)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    volume, meta = _read(args.input, args, "segment", standardize_mode=args.standardize)
    bar = progress_bar(total=0, unit="slice", desc="segment")

    progress = progress_callback(bar, "segment")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = segment(volume, bundle, mode=args.mode, threshold=args.threshold, tile=args.tile,
                             batch_size=args.batch_size, device=args.device,
                             out=out if args.zarr else None, keep_probabilities=args.probabilities,
                             voxel_size=meta.voxel_size, progress=progress)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)):
            print(f"napari-cem segment: warning: {w.message}", file=sys.stderr)
    info = {"classes": result.classes, "source": meta.source, "voxel_size": meta.voxel_size,
            **{k: result.metadata.get(k) for k in ("mode", "threshold", "precision", "device")}}
    written, code = [out], 0
    if not args.zarr:
        saved, code = _save(lambda p: _write_labels_tiff(p, result.labels, meta.voxel_size, info),
                            out, "segment")
        written = [saved]
        if result.probabilities is not None:
            prob_path = saved.with_name(saved.name.split(".")[0] + "_prob.tif")
            saved, rescued = _save(lambda p: _write_labels_tiff(
                p, result.probabilities, meta.voxel_size, {**info, "probabilities": "uint8, 255 = 1.0"}),
                prob_path, "segment")
            written.append(saved)
            code = max(code, rescued)
    labels = result.labels
    counts = _label_counts(labels, len(result.classes))
    total = max(int(sum(counts)), 1)
    fractions = ", ".join(f"{name} {100 * c / total:.1f} %" for name, c in zip(result.classes, counts))
    print(f"{' x '.join(str(s) for s in labels.shape)} voxels segmented ({args.mode}, "
          f"{result.metadata['precision']} on {result.metadata['device']}) in "
          f"{result.metadata['seconds']:.1f} s: {fractions}")
    print(f"written: {', '.join(str(p) for p in written)}  (classes: {json.dumps(result.classes)})")
    return code


def _label_counts(labels, n: int) -> list[int]:
    import numpy as np

    counts = np.zeros(n, np.int64)
    step = max(1, (64 << 20) // max(int(np.prod(labels.shape[1:])) if labels.ndim > 1 else 1, 1))
    for z0 in range(0, labels.shape[0], step):
        counts += np.bincount(np.asarray(labels[z0:z0 + step]).ravel(), minlength=n)[:n]
    return counts.tolist()


def _write_labels_tiff(path, array, voxel_size, info: dict) -> None:
    """Labels (or uint8 confidences) as an ImageJ TIFF with the voxel size in nm and the class
    names (JSON in the Info field), written atomically."""
    import json

    import numpy as np
    import tifffile

    from ._atomic import atomic_path

    array = np.asarray(array)
    kwargs: dict = {"compression": "zlib"}
    if array.dtype in (np.uint8, np.uint16) and array.ndim in (2, 3, 4):
        axes = {2: "YX", 3: "ZYX", 4: "CZYX"}[array.ndim]
        metadata = {"axes": axes, "unit": "nm", "Info": json.dumps(info)}
        if voxel_size is not None:
            vs = [float(v) for v in voxel_size]
            kwargs["resolution"] = (1.0 / vs[-1], 1.0 / vs[-2])
            if len(vs) == 3:
                metadata["spacing"] = vs[0]
        kwargs.update(imagej=True, metadata=metadata)
    else:
        kwargs["metadata"] = {"napari_cem": json.dumps(info)}
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, array, **kwargs)


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
    _axis_options(p, what="both label images")


@command("evaluate", "IoU per class of predicted labels against ground truth (3D and mean of 2D slices)",
         _evaluate_args)
def run_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate

    pred, saved_classes, finished = _read_label_image(args.pred, "prediction", args)
    gt, _, _ = _read_label_image(args.gt, "ground truth", args)
    classes = args.classes or saved_classes
    scope = ""
    if finished is not None:
        pred, gt, scope = _finished_part(pred, gt, *finished, partial=args.partial)
    try:
        result = evaluate(pred, gt, classes=classes)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"IoU of {args.pred} against {args.gt} ({result.n_slices} slice"
          f"{'s' if result.n_slices != 1 else ''}, background excluded{scope})")
    print(result.table())
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
    import json

    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} not found: {path}")
    if p.is_dir() and (p / "zarr.json").exists():
        from .infer import finished_slabs, open_segmentation

        try:
            seg = open_segmentation(p)
        except ValueError:
            seg = None  # another zarr: read it as a volume below
        if seg is not None:
            return seg.labels, seg.classes or None, finished_slabs(p)
    classes = None
    if p.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            with tifffile.TiffFile(p) as tif:
                text = (tif.imagej_metadata or {}).get("Info")
                if text:
                    classes = json.loads(text).get("classes")
        except Exception:
            classes = None
    data, _meta = _read(path, args, "evaluate", standardize_mode="none")
    return data, classes, None


# -- finetune --------------------------------------------------------------------------------
def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the EM volume or image (any format napari-cem reads)")
    p.add_argument("labels", metavar="LABELS",
                   help="painted labels of the same shape: 0 = not annotated, 1..K = classes")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model bundle to write (.pt)")
    p.add_argument("--weights", default="none", metavar="NAME|PATH|none",
                   help="encoder weights: cem500k-mocov2, cem1.5m-swav (downloaded once into the "
                        "cache), a checkpoint file, or none (random init, everything trains; default)")
    p.add_argument("--iterations", type=int_at_least(1), default=500, help="training iterations (default 500)")
    p.add_argument("--crop", type=int_at_least(64), default=512, help="crop size, a multiple of 32 (default 512)")
    p.add_argument("--batch", type=int_at_least(1), default=16, help="crops per iteration (default 16)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    p.add_argument("--classes", default=None, metavar="NAME,...",
                   help="names of the label values 1, 2, ... in order, e.g. 'background,mito'")
    p.add_argument("--background-label", type=int_at_least(0), default=None, metavar="V",
                   help="the painted value that is background (default: the class named "
                        "'background'; else unpainted pixels with --complete-slices; else 1)")
    p.add_argument("--complete-slices", action="store_true",
                   help="every slice holding paint is fully labelled: its 0 pixels are background")
    p.add_argument("--freeze", choices=["auto", "encoder", "layer4", "none"], default="auto",
                   help="auto: frozen encoder with weights, everything trains without (default)")
    p.add_argument("--planes", choices=["auto", "xy", "all"], default="auto",
                   help="auto: also xz and yz slices for near-isotropic volumes (default)")
    p.add_argument("--lr", type=float_in(0, 10, low_open=True), default=3e-3,
                   help="OneCycle maximum learning rate (default 0.003)")
    p.add_argument("--augment", choices=["default", "cem500k"], default="default",
                   help="augmentations: default (quarter turns, flips, +-10%% brightness/contrast; best "
                        "for short runs) or cem500k (the paper's: any angle, random resized crop, +-30%%)")
    p.add_argument("--seed", type=int_at_least(0), default=42, help="random seed (default 42)")
    _axis_options(p, what="the image")
    _axis_options(p, "labels-", what="the labels")


@command("finetune", "fine-tune a U-Net (pre-trained ResNet50 encoder) on painted labels and save "
         "the model bundle", _finetune_args)
def run_finetune_cli(args: argparse.Namespace) -> int:
    import signal

    import numpy as np
    from tqdm import tqdm

    from ._cancel import Cancelled
    from .augment import Augment
    from .model import save_bundle
    from .train import FinetuneConfig, finetune

    for name in ("image", "labels"):
        if not Path(getattr(args, name)).exists():
            raise CLIError(f"{name} not found: {getattr(args, name)}")
    out = Path(args.output)
    if out.is_dir():
        raise CLIError(f"output '{out}' is a folder; give a file name such as model.pt")
    if args.crop % 32:
        raise CLIError(f"--crop must be a multiple of 32 and at least 64, got {args.crop}")
    check_writable_file(out, "model file")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    image, meta = _read(args.image, args, "finetune", lazy=False)
    labels, _ = _read(args.labels, args, "finetune", "labels-", standardize_mode="none", lazy=False)
    image, labels = np.asarray(image), np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        if np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise CLIError(f"{args.labels} does not hold integer labels (found {labels.dtype} values)")

    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        tqdm.write("stopping after this iteration; the model trained so far is saved "
                   "(Ctrl-C again to abort)", file=sys.stderr)

    bar = progress_bar(total=args.iterations, desc="finetune", unit="it")
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        config = FinetuneConfig(weights=args.weights, freeze=args.freeze, iterations=args.iterations,
                                crop_size=args.crop, batch_size=args.batch, device=args.device,
                                lr=args.lr, seed=args.seed, augment=Augment.preset(args.augment))
        gen = finetune(image, labels, config, classes=classes, background_label=args.background_label,
                       complete_slices=args.complete_slices, planes=args.planes,
                       voxel_size=meta.voxel_size, should_stop=lambda: stop["requested"],
                       data_source=f"image {args.image}; labels {args.labels}")
        while True:
            try:
                step = next(gen)
            except StopIteration as done:
                bundle = done.value
                break
            if step.message:
                tqdm.write(f"napari-cem finetune: {step.message}", file=sys.stderr)
            bar.n = step.iteration
            bar.set_postfix(loss=f"{step.loss:.4f}", iou=f"{step.train_iou or 0:.3f}",
                            batch=step.batch_size, refresh=False)
            bar.refresh()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except Cancelled:
        raise CLIError("stopped before the first iteration; nothing was saved") from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    out, code = _save(lambda p: save_bundle(bundle, p), out, "finetune")
    t = bundle.training
    print(f"{'stopped after' if t['stopped_early'] else 'trained'} {t['iterations']} iterations in "
          f"{t['seconds']:.0f} s on {t['device']}; classes {', '.join(bundle.classes)}; "
          f"encoder {bundle.encoder['name']} ({bundle.encoder['frozen']} frozen"
          f"{', ' + str(bundle.encoder['n_tensors_loaded']) + ' tensors loaded' if bundle.encoder['n_tensors_loaded'] else ''}); "
          f"final loss {t['loss'][-1]:.4f}; model saved to {out}")
    return code


# -- filter ----------------------------------------------------------------------------------
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
    from .quality import filter_export

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


# -- pretrain --------------------------------------------------------------------------------
def _pretrain_args(p: argparse.ArgumentParser) -> None:
    from .pretrain import add_arguments

    add_arguments(p)


@command("pretrain", "MoCoV2 pre-training of a ResNet encoder on a folder of patches "
         "(one GPU; many with torchrun -m napari_cem.pretrain)", _pretrain_args)
def run_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import run_from_args

    try:
        return run_from_args(args)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# -- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-cem",
        description="CEM500K workflow for cellular EM: curate patches, fine-tune, segment.",
    )
    parser.add_argument("--version", action="version", version=f"napari-cem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if arguments is not None:
            arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a bad option (argparse said why, exit 2), or --help / --version
        return done.code if isinstance(done.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from ._outputs import OutputError, describe_os_error
    from .io import VolumeError

    try:
        return int(args._run(args) or 0)
    except VolumeError as exc:
        print(f"napari-cem {args.command}: error: {exc.message(_option_names())}", file=sys.stderr)
        return 2
    except (CLIError, OutputError) as exc:
        print(f"napari-cem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only, permission denied, drive gone: say which
        print(f"napari-cem {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-cem {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
