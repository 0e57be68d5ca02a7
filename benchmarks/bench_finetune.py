"""Fine-tuning: speed (iterations/s, peak memory) and quality on the real VNC ssTEM data.

Runs headless with only the core dependencies (numpy, torch, smp, tifffile, scikit-image);
no napari import. Each case prints its RESULTS.md rows.

Speed (``--case speed``): ``napari_cem.train.finetune`` on a synthetic volume, warm-up 3
iterations, then the time of ``--iterations`` iterations (sampling + batched augmentation
on the device + forward/backward/step), peak memory (``torch.cuda.max_memory_allocated``
on a GPU, peak RSS on the CPU). ``--plain`` times a plain smp loop instead (fp32, no
channels_last, full autograd through the encoder, CPU-side data already augmented) as
the baseline the issue quotes.

Quality (``--case quality``): fine-tune mitochondria on VNC stack1 slices 0-9 ("painted
slices are complete": mito vs everything else), segment slices 10-19 whole-slice (padded
to a multiple of 32), 3D IoU against ``stack1_mito.tif`` at several iteration counts of
the same run (evaluation time not counted in the wall time). ``--few 3slices`` paints
only slices 0, 4 and 8; ``--few 5rois`` only five 256 x 256 ROIs (complete inside).

Examples::

    PYTHONPATH=src python benchmarks/bench_finetune.py --case speed --device cpu --batch 8 --crop 256 --freeze encoder --iterations 10
    PYTHONPATH=src python benchmarks/bench_finetune.py --case speed --device cuda --batch 16 --crop 512 --freeze encoder --iterations 100
    PYTHONPATH=src python benchmarks/bench_finetune.py --case quality --device cuda --iterations 1000 --eval-at 100,300,1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from _harness import VNC_DIR, peak_rss_mib, row  # noqa: E402


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU"
    return f"{peak_rss_mib() / 1024:.1f} GiB RSS"


def case_speed(args) -> list[str]:
    import torch

    from napari_cem.device import describe_device, select_device
    from napari_cem.synthetic import make_em_volume
    from napari_cem.train import finetune

    device = select_device(args.device)
    side = max(2 * args.crop, 512)
    vol = make_em_volume((4, side, side), isotropic=False, seed=0)
    labels = (vol.labels == 2).astype(np.uint8) + 1  # every pixel painted: 1 background, 2 mito
    n = args.iterations
    warm = 3
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.plain:
        seconds = _plain_loop(vol.image, labels, device, args.batch, args.crop, warm, n)
        label = "plain smp loop (fp32, no channels_last, encoder autograd)"
    else:
        gen = finetune(vol.image, labels, iterations=warm + n, crop_size=args.crop,
                       batch_size=args.batch, device=args.device, freeze=args.freeze,
                       amp=args.amp if args.amp != "auto" else "auto", complete_slices=False,
                       channels_last=args.channels_last, arch=args.arch, bin=args.bin)
        for _ in range(warm):
            next(gen)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step = next(gen)
        _sync(device)
        seconds = time.perf_counter() - t0
        label = (f"napari_cem.train.finetune, U-Net {args.arch}"
                 + (f" binned {args.bin} x {args.bin}" if args.bin > 1 else "")
                 + f", freeze {args.freeze}, amp {args.amp}, channels_last {args.channels_last}")
        if step.batch_size != args.batch:
            label += f", batch halved to {step.batch_size} (OOM)"
    info = describe_device(device)
    figure = (f"{n / seconds:.2f} it/s ({seconds:.1f} s for {n} iterations, "
              f"{seconds / n * 100:.1f} s per 100), peak {_peak(device)}; {label}; "
              f"batch {args.batch}, crop {args.crop}, {info}")
    if device.type == "cpu":
        figure += f", torch threads {torch.get_num_threads()}"
        if args.note:
            figure += f" ({args.note})"
    return [row(f"finetune speed {device.type} b{args.batch} c{args.crop} "
                f"{'plain' if args.plain else 'frozen' if args.freeze == 'encoder' else args.freeze}"
                + ("" if args.plain or args.arch == "auto" else f" {args.arch}")
                + (f" bin{args.bin}" if args.bin > 1 else ""), figure)]


def _plain_loop(image, labels, device, batch, crop, warm, n) -> float:
    """The baseline: a plain PyTorch/smp loop, everything in fp32 and contiguous."""
    import torch
    import torch.nn.functional as F

    from napari_cem.model import build_unet

    torch.manual_seed(42)
    model = build_unet(1).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    rng = np.random.default_rng(0)
    z, h, w = image.shape
    t0 = None
    for i in range(warm + n):
        if i == warm:
            _sync(device)
            t0 = time.perf_counter()
        xs, ys = [], []
        for _ in range(batch):
            k, y, x = rng.integers(z), rng.integers(h - crop), rng.integers(w - crop)
            im = image[k, y:y + crop, x:x + crop]
            lb = labels[k, y:y + crop, x:x + crop]
            r = int(rng.integers(4))
            xs.append(np.rot90(im, r).copy())
            ys.append(np.rot90(lb, r).copy())
        x = torch.from_numpy(np.stack(xs)).float().div(255).sub(0.5).div(0.2)[:, None].to(device)
        y = (torch.from_numpy(np.stack(ys)) == 2).float()[:, None].to(device)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _load_vnc(vnc: Path):
    import tifffile

    if not (vnc / "stack1_image.tif").exists():
        raise SystemExit(f"VNC data not found in {vnc} (give --vnc DIR)")
    image = tifffile.imread(vnc / "stack1_image.tif")
    mito = tifffile.imread(vnc / "stack1_mito.tif").astype(np.uint8)
    return image, mito


def _few_labels(mito: np.ndarray, few: str):
    """Painted labels for training (slices 0-9): value 1 = mito; complete slices/ROIs."""
    train = np.zeros(mito[:10].shape, np.uint8)
    rois = None
    if few == "none":
        train[:] = mito[:10]
    elif few == "3slices":
        for k in (0, 4, 8):
            train[k] = mito[k]
    elif few == "5rois":
        rng = np.random.default_rng(7)
        rois = []
        for i in range(5):
            k = int(2 * i)
            ys, xs = np.nonzero(mito[k])  # ROIs centred on a mitochondrion, as a user would
            j = int(rng.integers(len(ys)))
            y0 = int(np.clip(ys[j] - 128, 0, 1024 - 256))
            x0 = int(np.clip(xs[j] - 128, 0, 1024 - 256))
            train[k, y0:y0 + 256, x0:x0 + 256] = mito[k, y0:y0 + 256, x0:x0 + 256]
            rois.append((k, y0, x0, y0 + 256, x0 + 256))
    else:
        raise SystemExit(f"unknown --few {few}")
    return train, rois


def _iou3d(model_bundle, image, truth, device) -> float:
    from napari_cem.model import predict_slice

    inter = union = 0
    for k in range(image.shape[0]):
        pred = predict_slice(model_bundle, image[k], device) == 1
        t = truth[k] == 1
        inter += int((pred & t).sum())
        union += int((pred | t).sum())
    return inter / max(union, 1)


def _augment(args):
    from napari_cem.augment import Augment

    aug = Augment.preset(args.augment)
    if args.scale:
        lo, hi = (float(v) for v in args.scale.split(","))
        aug.scale = (lo, hi)
        if lo == hi == 1.0:
            aug.aspect = (1.0, 1.0)
    if args.angles:
        aug.angles = args.angles
    if args.intensity is not None:
        aug.brightness = aug.contrast = args.intensity
    return aug


def case_quality(args) -> list[str]:
    import torch

    from napari_cem.device import describe_device, select_device
    from napari_cem.train import finetune

    device = select_device(args.device)
    image, mito = _load_vnc(Path(args.vnc))
    train_labels, rois = _few_labels(mito, args.few)
    eval_at = sorted({int(v) for v in args.eval_at.split(",")} | {args.iterations})
    eval_seconds = [0.0]

    def evaluate(bundle):
        _sync(device)
        t = time.perf_counter()
        iou = _iou3d(bundle, image[10:], mito[10:], device)
        eval_seconds[0] += time.perf_counter() - t
        return iou

    gen = finetune(image[:10], train_labels, classes=["mito"], complete_slices=True, rois=rois,
                   weights=args.weights, freeze=args.freeze, iterations=args.iterations,
                   crop_size=args.crop, batch_size=args.batch, device=args.device, planes="xy",
                   amp=args.amp, evaluate=evaluate, evaluate_at=eval_at, lr=args.lr,
                   random_crop_fraction=args.random_fraction, augment=_augment(args),
                   structure_crop_fraction=getattr(args, "structure_fraction", 0.5),
                   arch=args.arch, seed=args.seed, encoder_bn=args.encoder_bn,
                   data_source="VNC stack1 slices 0-9")
    results = []
    t0 = time.perf_counter()
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            bundle = stop.value
            break
        if step.evaluation is not None:
            train_s = time.perf_counter() - t0 - eval_seconds[0]
            results.append((step.iteration, train_s, step.evaluation, step.loss))
            print(json.dumps({"iteration": step.iteration, "train_s": round(train_s, 1),
                              "iou3d": round(step.evaluation, 4), "loss": round(step.loss, 4)}), flush=True)
    # end to end as a user runs it: the bundle saved, loaded, the slices segmented by
    # napari_cem.infer.segment (2D stack) and scored by napari_cem.metrics.evaluate
    from napari_cem.infer import segment
    from napari_cem.metrics import evaluate as evaluate_labels
    from napari_cem.model import load_bundle, save_bundle

    save_to = Path(args.save) if args.save else Path(tempfile.mkdtemp()) / "bundle.pt"
    save_bundle(bundle, save_to)
    t = time.perf_counter()
    seg = segment(image[10:], load_bundle(save_to), mode="stack", device=args.device)
    seg_s = time.perf_counter() - t
    e2e = evaluate_labels(seg.labels, mito[10:], classes=seg.classes)
    print(e2e.table(), flush=True)
    info = describe_device(device)
    few = {"none": "all 10 slices painted (dense, complete)", "3slices": "3 painted slices (0, 4, 8)",
           "5rois": "5 painted 256x256 ROIs"}[args.few]
    curve = "; ".join(f"{it} it: IoU {iou:.3f} at {sec:.0f} s" for it, sec, iou, _ in results)
    enc = bundle.encoder
    a = bundle.training["augment"]
    figure = (f"3D IoU mito on slices 10-19 = {results[-1][2]:.3f} after {results[-1][0]} iterations "
              f"({results[-1][1]:.0f} s training); curve: {curve}. Training: {few}; U-Net {bundle.arch}, "
              f"seed {args.seed}; encoder {enc['name']} ({enc['frozen']} frozen, BatchNorm "
              f"{enc.get('batchnorm')}); batch {args.batch}, crop {args.crop}, "
              f"amp {bundle.training['amp']}, lr {args.lr}, random crops {args.random_fraction}, "
              f"zoom {a['scale']}, rotation {a['angles'] if a['rotate'] else 'none'}, "
              f"brightness/contrast +-{a['brightness']}/{a['contrast']}, "
              f"structure-centred crops {bundle.training['structure_crop_fraction']}, {info}")
    figure += (f". End to end (bundle saved and loaded, slices 10-19 segmented by infer.segment "
               f"stack in {seg_s:.0f} s, scored by metrics.evaluate): IoU 3D {e2e.mean_iou_3d:.3f}, "
               f"mean 2D {e2e.mean_iou_2d:.3f}")
    if device.type == "cpu":
        figure += f", torch threads {torch.get_num_threads()}"
    if args.note:
        figure += f" ({args.note})"
    return [row(f"finetune quality VNC mito {args.few} {enc['name']} {device.type}", figure)]


def case_responsiveness(args) -> list[str]:
    """Longest stall of napari's main thread while the Fine-tune widget trains in a real viewer
    (needs napari and a display: run under xvfb-run). Imports napari, unlike the other cases."""
    import napari
    from _responsiveness import StallProbe, run_until

    from napari_cem._widgets.finetune import FinetuneWidget
    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((4, 256, 256), isotropic=False, seed=3)
    viewer = napari.Viewer(show=True)
    viewer.add_image(vol.image, name="em")
    painted = np.zeros(vol.labels.shape, np.uint8)
    painted[1] = (vol.labels[1] == 2)
    viewer.add_labels(painted, name="paint")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.iterations.value = args.iterations
    widget.crop.value = args.crop
    widget.batch.value = args.batch
    widget.device.value = args.device if args.device in ("cpu", "cuda", "mps") else "auto"
    widget.complete.value = True
    widget.class_names.value = "mito"
    widget.save_to.value = str(Path(__file__).resolve().parent / "_work" / "finetune_responsiveness.pt")
    # a user chooses layers and names before pressing Start: by then the background import of
    # torch/smp that the widget began when it opened has usually finished
    from napari_cem._widgets._common import torch_stack_ready

    opened = time.perf_counter()
    run_until(lambda: False, 1.0)
    if args.wait_import:
        run_until(torch_stack_ready, timeout_s=120)
    waited = time.perf_counter() - opened
    probe = StallProbe(interval_ms=10)
    probe.start()
    t0 = time.perf_counter()
    widget.start()
    finished = run_until(lambda: widget._worker is None, timeout_s=1800)
    t1 = time.perf_counter()
    run_until(lambda: False, 0.5)
    probe.stop()
    job = probe.longest_stall_ms_between(t0 + 0.05, t1)
    viewer.close()
    figure = (f"longest main-thread stall {job:.0f} ms while training ({probe.longest_stall_ms:.0f} ms "
              f"over the whole run incl. the Start click); "
              f"{args.iterations} iterations, batch {args.batch}, crop {args.crop}, device {args.device}, "
              f"job {t1 - t0:.0f} s, finished {finished}; Start pressed {waited:.1f} s after the widget "
              f"opened{' (after the background torch/smp import)' if args.wait_import else ''}")
    top = sorted(((round((g - probe.interval) * 1000), round(e - t0, 1)) for g, e in zip(probe.gaps, probe.ends)),
                 reverse=True)[:5]
    figure += "; top stalls (ms at s after Start): " + ", ".join(f"{ms} at {at}" for ms, at in top)
    if args.note:
        figure += f" ({args.note})"
    return [row("finetune: Fine-tune widget in a real viewer (Xvfb), 10 ms QTimer probe", figure)]


def run_suite() -> list[str]:
    """CPU rows for ``python benchmarks/run.py finetune`` (short runs; GPU rows: see --help)."""
    from _harness import run_isolated

    rows = []
    for extra in (["--freeze", "encoder"], ["--freeze", "none"], ["--plain"]):
        out = run_isolated("bench_finetune", "speed", "--device", "cpu", "--batch", "8", "--crop", "256",
                           "--iterations", "5", "--json", *extra)
        rows += out["rows"]
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    """Options with the per-device defaults filled in (bench_pretrain's helps case uses it too)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["speed", "quality", "responsiveness"], default="speed")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="default: 16 on a GPU, 8 on the CPU")
    p.add_argument("--crop", type=int, default=None, help="default: 512 on a GPU, 256 on the CPU")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--freeze", default="auto", choices=["auto", "encoder", "layer4", "none"])
    p.add_argument("--arch", default="auto", choices=["auto", "resnet50", "resnet34", "resnet18", "resnet18-slim"])
    p.add_argument("--encoder-bn", default="keep", choices=["keep", "adapt"])
    p.add_argument("--bin", type=int, default=1, choices=[1, 2, 4], help="speed: the U-Net works binned N x N")
    p.add_argument("--seed", type=int, default=42, help="quality: training seed")
    p.add_argument("--amp", default="auto", help="auto | off")
    p.add_argument("--channels-last", default="auto", help="auto | on | off")
    p.add_argument("--plain", action="store_true", help="speed: time the plain smp baseline loop")
    p.add_argument("--weights", default="none", help="quality: encoder weights (name or file)")
    p.add_argument("--lr", type=float, default=3e-3, help="quality: OneCycle max lr")
    p.add_argument("--random-fraction", type=float, default=0.25, help="quality: share of random crops")
    p.add_argument("--scale", default=None, help="quality: zoom range LO,HI of the crop side (1,1 = no zoom)")
    p.add_argument("--augment", default="default", choices=["default", "cem500k"],
                   help="quality: augmentation preset (then --scale/--angles/--intensity override)")
    p.add_argument("--angles", default=None, choices=["any", "right"], help="quality: rotation angles")
    p.add_argument("--intensity", type=float, default=None,
                   help="quality: brightness and contrast jitter +-value (default: the preset's)")
    p.add_argument("--few", default="none", choices=["none", "3slices", "5rois"])
    p.add_argument("--eval-at", default="100,300", help="quality: iterations at which to measure IoU")
    p.add_argument("--wait-import", action="store_true",
                   help="responsiveness: press Start only once the widget's background import finished")
    p.add_argument("--save", default=None, help="quality: also keep the model bundle here")
    p.add_argument("--structure-fraction", type=float, default=0.5,
                   help="quality: share of crops centred on mitochondria")
    p.add_argument("--vnc", default=str(VNC_DIR), help="folder of the VNC data")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--note", default="", help="free text appended to the row (e.g. machine load)")
    p.add_argument("--json", action="store_true", help="print one JSON line {rows: [...]} at the end")
    p.add_argument("--case-arg", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device in ("cuda", "auto") and torch.cuda.is_available()
    args.batch = args.batch or (16 if gpu else 8)
    args.crop = args.crop or (512 if gpu else 256)
    args.iterations = args.iterations or (100 if args.case == "speed" and gpu else
                                          10 if args.case == "speed" else 300)
    if args.amp == "off":
        args.amp = False
    if args.channels_last in ("on", "off"):
        args.channels_last = args.channels_last == "on"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = {"speed": case_speed, "quality": case_quality,
            "responsiveness": case_responsiveness}[args.case](args)
    print("\n".join(rows), flush=True)
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
