"""``napari-cem pretrain``: MoCoV2 pre-training of an EM encoder on a folder of patches.

On several GPUs the same command runs under torchrun, one process per GPU:
``torchrun --nproc_per_node=N -m napari_cem.cli pretrain PATCH_DIR -o OUT ...``; the process
group is set up here when torchrun says there is more than one process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import CLIError, command, progress_bar, progress_callback

# the core's messages name its config fields; this command's options have other names
CLI_NAMES = {"batch_size": "--batch", "queue_size": "--queue", "resume": "--resume"}


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    from .._argtypes import float_in, int_at_least
    from ..model import ENCODERS
    from ..pretrain import PretrainConfig

    d = PretrainConfig()
    p.add_argument("patch_dir", metavar="PATCH_DIR",
                   help="folder of 2D patches (a curate export, or any folder of images)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="folder for checkpoint.pth.tar (every epoch) and log.csv")
    p.add_argument("--epochs", type=int_at_least(1), default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--batch", type=int_at_least(2), default=d.batch_size,
                   help=f"total batch over all GPUs (default {d.batch_size})")
    p.add_argument("--lr", type=float_in(0, 10, low_open=True), default=d.lr, help=f"default {d.lr}")
    p.add_argument("--queue", type=int_at_least(1), default=d.queue_size, help=f"default {d.queue_size}")
    p.add_argument("--arch", default=d.arch, choices=list(ENCODERS),
                   help="encoder (default resnet50, as CEM500K)")
    p.add_argument("--crop", type=int_at_least(32), default=d.crop, help=f"view size (default {d.crop})")
    p.add_argument("--seed", type=int_at_least(0), default=d.seed)
    p.add_argument("--max-minutes", type=float_in(0, low_open=True), default=None,
                   help="stop after the epoch that passes this wall time (a GPU-time budget)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth.tar")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu")
    p.add_argument("--amp", default=d.amp, choices=["auto", "on", "off"],
                   help="mixed precision (default auto: on CUDA and on CPUs with native bf16)")


def config_from_args(args):
    from ..pretrain import PretrainConfig

    return PretrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                          queue_size=args.queue, arch=args.arch, crop=args.crop, seed=args.seed,
                          max_minutes=args.max_minutes, amp=args.amp)


@command("pretrain", "MoCoV2 pre-training of a ResNet encoder on a folder of patches "
         "(one GPU; several with torchrun -m napari_cem.cli pretrain)", _pretrain_args)
def run_pretrain(args: argparse.Namespace) -> int:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        _join_process_group()
    try:
        return _run(args)
    except ValueError as exc:
        from ..pretrain import in_words

        raise CLIError(in_words(str(exc), CLI_NAMES)) from None
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _join_process_group() -> None:
    """One process per GPU under torchrun: NCCL on GPUs, gloo on CPUs."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _run(args) -> int:
    """Pre-train with a progress bar on rank 0; returns the exit code."""
    from .._outputs import check_writable_folder
    from ..pretrain import CHECKPOINT_NAME, _world, pretrain

    config = config_from_args(args)
    check_writable_folder(args.output)  # before reading a single patch
    rank, _ = _world()
    bar = progress_bar(total=0, unit="it", desc="pretrain", disable=rank != 0)
    try:
        for log in pretrain(args.patch_dir, args.output, config, device=args.device,
                            resume=args.resume, progress=progress_callback(bar, "pretrain")):
            if rank == 0:
                bar.write(f"epoch {log.epoch}: loss {log.loss:.4f}, accuracy {log.accuracy:.3f}, "
                          f"{log.images_per_s:.0f} images/s")
    finally:
        bar.close()
    if rank == 0:
        print(f"checkpoint: {Path(args.output) / CHECKPOINT_NAME}")
    return 0
