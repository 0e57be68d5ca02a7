"""``napari-cem finetune``: a U-Net fine-tuned on painted labels, saved as a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._argtypes import float_in, int_at_least
from ..train import ARCH_CHOICES, ENCODER_BN_CHOICES  # light: no torch at import
from .._outputs import check_writable_file
from . import CLIError, command, progress_bar
from ._common import _axis_options, _read, _save


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the EM volume or image (any format napari-cem reads)")
    p.add_argument("labels", metavar="LABELS",
                   help="painted labels of the same shape: 0 = not annotated, 1..K = classes")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model bundle to write (.pt)")
    p.add_argument("--weights", default="none", metavar="NAME|PATH|none",
                   help="encoder weights: cem500k-mocov2, cem1.5m-swav (downloaded once into the "
                        "cache), a checkpoint file, or none (random init, everything trains; default)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="continue from this model bundle (a .pt made by finetune): its whole U-Net, "
                        "normalisation and freeze setting; the painted classes must be its classes")
    p.add_argument("--add-classes", action="store_true",
                   help="with --init: a painted class the model lacks gets a new output, learned "
                        "from scratch (the others keep theirs)")
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
    p.add_argument("--encoder-bn", choices=list(ENCODER_BN_CHOICES), default="keep",
                   help="a frozen encoder's BatchNorm statistics: keep the checkpoint's (default) or "
                        "adapt them to the training data (parameters stay frozen)")
    p.add_argument("--arch", choices=list(ARCH_CHOICES), default="auto",
                   help="the U-Net: its ResNet encoder (resnet18-slim: with a decoder half as wide). "
                        "auto: the encoder of --weights / --init, else ResNet50 (on a CPU without "
                        "native bf16 resnet18-slim trains 2.4x faster, about 0.03 IoU lower on VNC)")
    p.add_argument("--bin", choices=["1", "2", "4"], default="1",
                   help="the U-Net works on the image binned N x N (averaged; its labels are "
                        "upsampled back): N^2 less work per crop and per slice, for structures much "
                        "larger than N pixels (default 1: full resolution); --crop stays in image pixels "
                        "and must be a multiple of 32 x N")
    p.add_argument("--planes", choices=["auto", "xy", "all"], default="auto",
                   help="auto: also xz and yz slices for near-isotropic volumes (default)")
    p.add_argument("--lr", type=float_in(0, 10, low_open=True), default=None,
                   help="OneCycle peak learning rate (default: 0.003 for a new model; a continued "
                        "round's own default with --init)")
    p.add_argument("--augment", choices=["default", "cem500k"], default="default",
                   help="augmentations: default (quarter turns, flips, +-10%% brightness/contrast; best "
                        "for short runs) or cem500k (the paper's: any angle, random resized crop, +-30%%)")
    p.add_argument("--seed", type=int_at_least(0), default=42, help="random seed (default 42)")
    _axis_options(p, what="the image")
    _axis_options(p, "labels-", what="the labels")


@command("finetune", "fine-tune a U-Net (pre-trained ResNet encoder) on painted labels and save "
         "the model bundle", _finetune_args)
def run_finetune_cli(args: argparse.Namespace) -> int:
    import signal

    import numpy as np
    from tqdm import tqdm

    from .._cancel import Cancelled
    from ..augment import Augment
    from ..model import save_bundle
    from ..train import FinetuneConfig, finetune

    for name in ("image", "labels"):
        if not Path(getattr(args, name)).exists():
            raise CLIError(f"{name} not found: {getattr(args, name)}")
    if args.init is not None and not Path(args.init).is_file():
        raise CLIError(f"model file not found: {args.init} (--init)")
    out = Path(args.output)
    if out.is_dir():
        raise CLIError(f"output '{out}' is a folder; give a file name such as model.pt")
    from ..model import bin_step

    step = bin_step(int(args.bin))
    if args.crop % step or args.crop < 2 * step:
        binned = f" with --bin {args.bin}" if step > 32 else ""
        raise CLIError(f"--crop must be a multiple of {step} and at least {2 * step}{binned}, got {args.crop}")
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
        config = FinetuneConfig(init=args.init, add_classes=args.add_classes, weights=args.weights,
                                freeze=args.freeze, encoder_bn=args.encoder_bn, arch=args.arch,
                                bin=int(args.bin), iterations=args.iterations,
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
