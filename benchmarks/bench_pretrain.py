"""MoCoV2 pre-training: speed, and whether our own encoder helps fine-tuning on VNC.

Runs headless with the core dependencies only (numpy, torch, torchvision, tifffile, smp;
numba optional); no napari import.

``--case speed``: images per second of ``napari_cem.pretrain.pretrain`` (both views
augmented on the device, forward/backward of the query encoder, key encoder, queue) and
peak memory, on 224 x 224 patches cut from the VNC stacks (synthetic EM if absent). The
first epoch warms up (cuDNN autotuning); the figure is the mean of the following ones.

``--case helps``: curate the VNC stacks (both, 224 x 224, dHash cutoff 12), pre-train a
ResNet50 with MoCoV2 on the exemplars for ``--minutes`` of wall time, then fine-tune
mitochondria on stack1 slices 0-9 and measure 3D IoU on slices 10-19 (benchmarks/
bench_finetune.py's quality case) with: our encoder frozen, our encoder unfrozen, random
init unfrozen (everything trains), random init frozen. Fine-tuning uses bench_finetune's
quality defaults (crop 512 / batch 16 on a GPU, 256 / 8 on the CPU).

Examples::

    PYTHONPATH=src python benchmarks/bench_pretrain.py --case speed --device cpu --batch 16 --steps 3
    PYTHONPATH=src python benchmarks/bench_pretrain.py --case speed --device cuda --batch 128 --steps 20
    PYTHONPATH=src python benchmarks/bench_pretrain.py --case helps --device cuda --minutes 6 --iterations 500
    PYTHONPATH=src python benchmarks/bench_pretrain.py --case helps --device cpu --epochs 14 --minutes 30 \
        --batch 32 --queue 4096 --iterations 300 --eval-at 100,300   # the CPU stand-in (~1 h)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from _harness import VNC_DIR, peak_rss_mib, row  # noqa: E402


def _write_patches(folder: Path, n: int, vnc: Path, size: int = 224) -> str:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    if (vnc / "stack1_image.tif").exists():
        vol = np.concatenate([tifffile.imread(vnc / f"stack{i}_image.tif") for i in (1, 2)])
        label = "VNC"
    else:
        from napari_cem.synthetic import make_em_volume

        vol = np.asarray(make_em_volume((8, 512, 512), seed=0).image)
        label = "synthetic EM"
    rng = np.random.default_rng(0)
    z, h, w = vol.shape
    for i in range(n):
        k, y, x = rng.integers(z), rng.integers(h - size), rng.integers(w - size)
        tifffile.imwrite(folder / f"p{i:05d}.tif", vol[k, y:y + size, x:x + size])
    return label


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def case_speed(args) -> list[str]:
    import torch

    from napari_cem.device import describe_device, select_device
    from napari_cem.pretrain import PretrainConfig, pretrain

    device = select_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="napari-cem-pretrain-"))
    try:
        label = _write_patches(work / "patches", args.batch * args.steps, Path(args.vnc))
        epochs = 3
        queue = max(args.batch, (args.queue // args.batch) * args.batch)
        config = PretrainConfig(epochs=epochs, batch_size=args.batch, queue_size=queue,
                                arch=args.arch, lr_steps=(), amp=args.amp)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        logs = list(pretrain(work / "patches", work / "out", config, device=args.device))
        _sync(device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = float(np.mean([log.images_per_s for log in logs[1:]]))
    peak = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU" if device.type == "cuda"
            else f"{peak_rss_mib() / 1024:.1f} GiB RSS")
    from napari_cem.device import autocast_policy

    precision = autocast_policy(device, args.amp, "training")
    amp = f"{precision.name} autocast + channels_last" if precision.enabled else "fp32"
    figure = (f"{rate:,.1f} images/s (epochs 2-{epochs} of {args.steps} steps), peak {peak}; "
              f"{args.arch}, batch {args.batch}, 224 x 224 {label} patches, queue {queue}, {amp}, "
              f"{describe_device(device)}")
    if device.type == "cpu":
        figure += f", torch threads {torch.get_num_threads()}"
    if args.note:
        figure += f" ({args.note})"
    return [row(f"pretrain speed {device.type} {args.arch} b{args.batch}", figure)]


def curate_vnc(vnc: Path, out: Path) -> tuple[int, int]:
    """Curated exemplars of both VNC stacks into *out* (export layout); (patches, kept)."""
    import tifffile

    from napari_cem.curate import find_near_duplicates
    from napari_cem.export import export_curated

    total = kept = 0
    for i in (1, 2):
        vol = tifffile.imread(vnc / f"stack{i}_image.tif")
        res = find_near_duplicates(vol, source=f"vnc-stack{i}", planes="xy", cutoff=12)
        export_curated(res, vol, out)
        total += res.n_patches
        kept += res.n_kept
    return total, kept


def case_helps(args) -> list[str]:
    import bench_finetune

    from napari_cem.device import describe_device, select_device
    from napari_cem.pretrain import PretrainConfig, pretrain

    device = select_device(args.device)
    vnc = Path(args.vnc)
    work = Path(tempfile.mkdtemp(prefix="napari-cem-helps-"))
    rows = []
    try:
        n_patches, n_kept = curate_vnc(vnc, work / "curated")
        if args.limit_patches:  # smoke runs: pre-train on a few exemplars only
            for extra in sorted((work / "curated" / "patches").glob("*.tif"))[args.limit_patches:]:
                extra.unlink()
        config = PretrainConfig(epochs=args.epochs, batch_size=args.batch,
                                queue_size=args.queue, max_minutes=args.minutes, amp=args.amp)
        t0 = time.perf_counter()
        logs = list(pretrain(work / "curated" / "patches", work / "moco", config,
                             device=args.device))
        minutes = (time.perf_counter() - t0) / 60
        ckpt = work / "moco" / "checkpoint.pth.tar"
        if args.keep:  # for later fine-tunes (bench_levers.py --weights)
            Path(args.keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, args.keep)
        rows.append(row(
            f"pretrain helps? MoCoV2 ResNet50 on VNC stack1+2 curated patches, {device.type}",
            f"{n_kept} exemplars of {n_patches} patches (224 x 224, cutoff 12); {len(logs)} epochs "
            f"in {minutes:.1f} min ({logs[-1].iteration} iterations of batch {args.batch}, "
            f"queue {args.queue}, lr steps at {config.milestones()} of {args.epochs}); last epoch "
            f"loss {logs[-1].loss:.3f}, contrastive accuracy {logs[-1].accuracy:.3f}; "
            f"{describe_device(device)}"))
        for weights, freeze in () if args.no_finetune else (
                (str(ckpt), "encoder"), (str(ckpt), "none"), ("none", "none"), ("none", "encoder")):
            ft = ["--case", "quality", "--device", args.device, "--vnc", str(vnc), "--few", args.few,
                  "--weights", weights, "--freeze", freeze, "--iterations", str(args.iterations),
                  "--eval-at", args.eval_at,
                  "--note", f"encoder: {'our MoCoV2' if weights != 'none' else 'random'}, freeze {freeze}"]
            if args.crop:
                ft += ["--crop", str(args.crop)]
            if args.ft_batch:
                ft += ["--batch", str(args.ft_batch)]
            rows += bench_finetune.case_quality(bench_finetune.parse_args(ft))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def run_suite() -> list[str]:
    """CPU row for ``python benchmarks/run.py pretrain`` (GPU rows: see the module docstring)."""
    ns = argparse.Namespace(device="cpu", batch=16, steps=3, queue=4096, arch="resnet50",
                            vnc=str(VNC_DIR), note="", amp="auto")
    return case_speed(ns)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["speed", "helps"], default="speed")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="speed: steps per epoch")
    p.add_argument("--queue", type=int, default=65536)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--epochs", type=int, default=200, help="helps: schedule length")
    p.add_argument("--minutes", type=float, default=5.0, help="helps: pre-training budget")
    p.add_argument("--iterations", type=int, default=500, help="helps: fine-tuning iterations")
    p.add_argument("--eval-at", default="100,500")
    p.add_argument("--crop", type=int, default=None,
                   help="helps: fine-tuning crop (default 512 on a GPU, 256 on the CPU)")
    p.add_argument("--ft-batch", type=int, default=None,
                   help="helps: fine-tuning batch (default 16 on a GPU, 8 on the CPU)")
    p.add_argument("--few", default="none", choices=["none", "3slices", "5rois"])
    p.add_argument("--limit-patches", type=int, default=0, help="helps: use only K exemplars")
    p.add_argument("--vnc", default=str(VNC_DIR))
    p.add_argument("--keep", default="", help="helps: copy the pre-trained checkpoint here")
    p.add_argument("--no-finetune", action="store_true", help="helps: pre-train only (with --keep)")
    p.add_argument("--note", default="")
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="mixed precision (auto: CUDA and CPUs with native bf16)")
    args = p.parse_args(argv)
    rows = case_speed(args) if args.case == "speed" else case_helps(args)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
