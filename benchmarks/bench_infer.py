"""Whole-volume segmentation: napari_cem.infer.segment vs the original code's loop.

Reference (what the original CEM500K code did): every xy slice whole, padded to a multiple
of 32, batch 1, float32, NCHW. Ours: ``segment(...)`` (batched, channels-last, bf16/fp16
autocast where it pays, tiles only when a slice exceeds the tile). Same model in both: the
published architecture ``smp.Unet('resnet50', in_channels=1, classes=1)``, random init with
seed 0 (speed does not depend on the weights; agreement of labels is reported). Input: the
real VNC ssTEM slices (1024 x 1024) when present, else a synthetic EM volume.

Cases (each prints one JSON line; ``run_suite`` formats RESULTS.md rows):

* ``speed``: both side by side in one process: voxels/s, and the peak memory each added
  (GPU: torch.cuda.max_memory_allocated; CPU: resident memory sampled every 5 ms, above
  the level before the call), and the label agreement.
* ``zarr``: a synthetic 1024 x 1024 x 1024 uint8 zarr volume (made once under
  benchmarks/_work) segmented in stack mode into a zarr store; peak RSS of the process.
  ``--zarr-slices K`` segments only the first K slices (a lazy view of the same store),
  for CPUs where the full run would take hours. Needs the zarr package.

Headless, no napari: ``PYTHONPATH=src python benchmarks/bench_infer.py --case speed --device cuda``
(or ``python benchmarks/run.py infer``; ``NAPARI_CEM_BENCH_DEVICE`` picks the device there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
from _harness import VNC_DIR, WORK_DIR, emit, row  # noqa: E402


# ------------------------------------------------------------------------------ helpers
class RssSampler:
    """Peak resident memory (MiB) above the level at start, sampled in a thread."""

    def __init__(self, every_s: float = 0.005):
        self.every = every_s
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def load_volume(n_slices: int, size: int) -> tuple[np.ndarray, str]:
    if (VNC_DIR / "stack1_image.tif").exists():
        import tifffile

        vol = tifffile.imread(VNC_DIR / "stack1_image.tif")
        start = 10 if vol.shape[0] >= 10 + n_slices else 0
        return np.ascontiguousarray(vol[start:start + n_slices, :size, :size]), "VNC stack1"
    from napari_cem.synthetic import make_em_volume

    base = np.asarray(make_em_volume((min(n_slices, 32), size, size), isotropic=False, seed=0).image)
    reps = [np.roll(base, 37 * k, axis=(1, 2)) for k in range(-(-n_slices // base.shape[0]))]
    return np.ascontiguousarray(np.concatenate(reps)[:n_slices]), "synthetic EM"


def make_model(seed: int = 0):
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    return smp.Unet("resnet50", in_channels=1, encoder_weights=None, classes=1).eval()


def load_model(model_path: str | None):
    """(bundle, description): the trained bundle at *model_path*, else a random-init
    Unet-ResNet50 with CEM500K's mean/std in the shape ``segment`` takes."""
    if model_path:
        from napari_cem.model import load_bundle

        bundle = load_bundle(model_path)
        return bundle, f"trained model {Path(model_path).name} ({bundle.training.get('iterations')} it)"
    bundle = type("B", (), {"model": make_model(), "classes": ["background", "mito"], "norms": (0.58, 0.10)})()
    return bundle, "random-init model"


def calibrate(model, image: np.ndarray, norms, device) -> None:
    """Shift the output bias so that about half of *image* is foreground: a random-init model
    otherwise calls nearly everything background and label agreement would say little."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image[:512, :512])).to(device).float()[None, None]
    x = (x / 255.0 - norms[0]) / norms[1]
    with torch.no_grad():
        median = model(x).median()
        conv = next(m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d))
        conv.bias -= median


def reference_segment(volume: np.ndarray, model, norms, device) -> np.ndarray:
    """The original code's loop: whole slice, padded to x32 (reflect, bottom/right), batch 1, float32."""
    import torch
    import torch.nn.functional as F

    out = np.zeros(volume.shape, np.uint8)
    mean, std = norms
    with torch.no_grad():
        for z in range(volume.shape[0]):
            img = volume[z]
            h, w = img.shape
            x = torch.from_numpy(img).to(device).float()[None, None] / 255.0
            x = (x - mean) / std
            ph, pw = (-h) % 32, (-w) % 32
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            prob = torch.sigmoid(model(x))[0, 0, :h, :w]
            out[z] = (prob > 0.5).cpu().numpy()
    return out


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _measure(fn, device):
    """(seconds, peak memory MiB added) of fn()."""
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        seconds = time.perf_counter() - t0
        return result, seconds, (torch.cuda.max_memory_allocated() - base) / 2**20
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    return result, seconds, sampler.added_mib


# ------------------------------------------------------------------------------ cases
def case_speed(device_name: str, n_slices: int, size: int, precision: str = "auto",
               model_path: str | None = None) -> dict:
    """Reference loop vs infer.segment on the same slices, in one process.

    *model_path*: a trained bundle (e.g. the quality benchmark's ``--save``); without it a
    random-init U-Net calibrated to ~1/3 foreground. A random model's outputs all sit near
    the threshold, so reduced precision flips many "confident" labels and segment() falls
    back to float32; a trained model shows the speed a user gets.
    """
    import torch

    from napari_cem.device import describe_device, select_device
    from napari_cem.infer import segment

    device = select_device(device_name)
    volume, source = load_volume(n_slices, size)
    bundle, model_desc = load_model(model_path)
    model = bundle.model.to(device)  # in place: the bundle holds the moved model
    norms = tuple(bundle.norms)
    if not model_path:
        calibrate(model, volume[0], norms, device)
    # warm-up (cuDNN autotuning, oneDNN primitive caches) for both, untimed
    reference_segment(volume[:1], model, norms, device)
    segment(volume[:1], bundle, device=device_name, precision=precision)
    ref, ref_s, ref_mem = _measure(lambda: reference_segment(volume, model, norms, device), device)
    ours, our_s, our_mem = _measure(lambda: segment(volume, bundle, device=device_name,
                                                    precision=precision), device)
    voxels = volume.size
    agree = float((ref == ours.labels).mean())
    return {
        "source": source, "model": model_desc, "shape": list(volume.shape), "device": str(describe_device(device)),
        "torch_threads": torch.get_num_threads(),
        "ref_s": ref_s, "ours_s": our_s, "ref_vox_s": voxels / ref_s, "ours_vox_s": voxels / our_s,
        "speedup": ref_s / our_s, "ref_mem_mib": ref_mem, "ours_mem_mib": our_mem,
        "agreement": agree, "fg_ref": float(ref.mean()), "precision": ours.metadata["precision"],
        "float32_agreement": ours.metadata["float32_agreement"], "batch_size": ours.metadata["batch_size"],
        "float32_agreement_confident": ours.metadata["float32_agreement_confident"],
        "tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
    }


class _FirstSlices:
    """A lazy view of the first *n* z slices of an array (no dask needed)."""

    def __init__(self, array, n):
        self.a, self.n = array, n
        self.shape = (n, *array.shape[1:])
        self.dtype = array.dtype
        self.chunks = array.chunks

    def __getitem__(self, key):
        z = key[0] if isinstance(key, tuple) else key
        rest = key[1:] if isinstance(key, tuple) else ()
        start, stop, _ = z.indices(self.n)
        return self.a[(slice(start, stop), *rest)]


def make_zarr_volume(path: Path, side: int = 1024, chunk: int = 64):
    import zarr

    if (path / "zarr.json").exists():
        arr = zarr.open_array(str(path), mode="r")
        if arr.shape == (side,) * 3:
            return arr
    from napari_cem.synthetic import make_em_volume

    arr = zarr.create_array(str(path), shape=(side,) * 3, chunks=(chunk, 256, 256), dtype=np.uint8,
                            overwrite=True)
    tile = np.asarray(make_em_volume((chunk, 512, 512), isotropic=True, seed=1).image)
    for z in range(0, side, chunk):
        slab = np.tile(np.roll(tile, z, axis=2), (1, side // 512, side // 512))
        arr[z:z + chunk] = slab[: min(chunk, side - z)]
    return zarr.open_array(str(path), mode="r")


def case_zarr(device_name: str, n_slices: int | None, side: int, model_path: str | None = None) -> dict:
    import shutil

    import torch

    from napari_cem.device import describe_device, select_device
    from napari_cem.infer import segment

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    src = make_zarr_volume(WORK_DIR / f"infer_{side}.zarr", side)
    volume = src if not n_slices or n_slices >= side else _FirstSlices(src, n_slices)
    out = WORK_DIR / f"infer_{side}_labels.zarr"
    shutil.rmtree(out, ignore_errors=True)
    from _harness import peak_rss_mib

    before = peak_rss_mib()
    bundle, model_desc = load_model(model_path)
    t0 = time.perf_counter()
    res = segment(volume, bundle, device=device_name, out=out)
    seconds = time.perf_counter() - t0
    import zarr

    labels = zarr.open_group(str(out), mode="r")["labels"]
    shutil.rmtree(out, ignore_errors=True)
    return {"shape": list(volume.shape), "of": [side] * 3, "seconds": seconds,
            "vox_s": float(np.prod(volume.shape)) / seconds, "rss_before_mib": before,
            "device": str(describe_device(select_device(device_name))), "labels_shape": list(labels.shape),
            "precision": res.metadata["precision"], "torch_threads": torch.get_num_threads(),
            "model": model_desc}


def case_responsiveness(device_name: str, n_slices: int, size: int) -> dict:
    """Longest stall of napari's main thread while the Segment widget segments a volume with
    Unet-ResNet50 in a real viewer (needs napari and a display: run under xvfb-run)."""
    import napari
    from _responsiveness import StallProbe, run_until

    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget

    volume, source = load_volume(n_slices, size)
    viewer = napari.Viewer(show=True)
    viewer.add_image(volume, name="em", scale=(50, 4.6, 4.6), units=("nm",) * 3)
    t_open = time.perf_counter()
    widget = SegmentWidget(viewer)  # the UI thread is blocked for as long as this takes
    open_ms = (time.perf_counter() - t_open) * 1000
    viewer.window.add_dock_widget(widget)
    bundle, _ = load_model(None)
    state_for(viewer).set_active_model(bundle)
    widget.device.value = device_name if device_name in ("cpu", "cuda", "mps") else "auto"
    run_until(lambda: False, 1.0)  # let the window settle
    probe = StallProbe(interval_ms=10)
    probe.start()
    t0 = time.perf_counter()
    widget.run()
    finished = run_until(lambda: widget._worker is None, timeout_s=1800)
    t1 = time.perf_counter()
    run_until(lambda: False, 0.5)
    probe.stop()
    ok = "em segmentation" in [layer.name for layer in viewer.layers]
    job_stall = probe.longest_stall_ms_between(t0 + 0.05, t1) if hasattr(probe, "longest_stall_ms_between") \
        else probe.longest_stall_ms
    result = {"source": source, "shape": list(volume.shape), "seconds": t1 - t0, "finished": finished,
              "labels_layer": ok, "longest_stall_ms": probe.longest_stall_ms,
              "longest_stall_during_job_ms": job_stall, "ticks": len(probe.gaps),
              "widget_open_ms": open_ms,
              "top_stalls_ms_at_s": sorted(((round((g - probe.interval) * 1000), round(e - t0, 2))
                                            for g, e in zip(probe.gaps, getattr(probe, "ends", []))),
                                           reverse=True)[:6]}
    viewer.close()
    return result


def responsiveness_row(r: dict) -> str:
    shape = " x ".join(str(s) for s in r["shape"])
    return row(f"infer: Segment widget in a real viewer (Xvfb), Unet-ResNet50, {shape} {r['source']}: "
               "longest main-thread stall (10 ms QTimer probe)",
               f"{r['longest_stall_ms']:.0f} ms over the whole run incl. showing the layer "
               f"({r['longest_stall_during_job_ms']:.0f} ms while predicting; job {r['seconds']:.0f} s); "
               f"opening the widget {r.get('widget_open_ms', float('nan')):.0f} ms")


# ------------------------------------------------------------------------------ suite
def _device_default() -> str:
    return os.environ.get("NAPARI_CEM_BENCH_DEVICE", "auto")


def speed_rows(r: dict) -> list[str]:
    shape = " x ".join(str(s) for s in r["shape"])
    where = f"{r['device']}"
    tf32 = " (cuDNN TF32 on, torch default)" if r.get("tf32") else ""
    return [
        row(f"infer: reference loop (whole slice, batch 1, float32{tf32}), Unet-ResNet50 "
            f"({r.get('model', 'random-init model')}), {shape} {r['source']}, {where}",
            f"{r['ref_vox_s'] / 1e6:.3f} Mvoxel/s ({r['ref_s']:.1f} s), peak memory +{r['ref_mem_mib']:.0f} MiB"),
        row(f"infer: napari_cem.infer.segment stack ({r['precision']}, batch {r['batch_size']}, channels-last), same input, {where}",
            f"{r['ours_vox_s'] / 1e6:.3f} Mvoxel/s ({r['ours_s']:.1f} s) = {r['speedup']:.2f}x the reference, "
            f"peak memory +{r['ours_mem_mib']:.0f} MiB, labels identical to the reference on "
            f"{100 * r['agreement']:.3f} % of voxels ({100 * r['fg_ref']:.0f} % foreground)"),
    ]


def zarr_row(r: dict) -> str:
    n = r["shape"][0]
    part = "" if n == r["of"][0] else f" (first {n} slices)"
    return row(f"infer: 1024^3 uint8 zarr, stack mode to a zarr store{part}, Unet-ResNet50 "
               f"({r.get('model', 'random-init model')}), {r['device']}",
               f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] / 1024:.2f} GiB), "
               f"{r['vox_s'] / 1e6:.3f} Mvoxel/s ({r['seconds']:.0f} s), {r['precision']}")


def run_suite() -> list[str]:
    from _harness import run_isolated

    device = _device_default()
    on_gpu = device.startswith("cuda") or (device == "auto" and _cuda())
    n, size = (256, 1024) if on_gpu else (3, 1024)
    rows = speed_rows(run_isolated("bench_infer", "speed", "--device", device, "--slices", str(n),
                                   "--size", str(size)))
    try:
        import zarr  # noqa: F401
    except ImportError:
        return rows
    k = 0 if on_gpu else 4
    rows.append(zarr_row(run_isolated("bench_infer", "zarr", "--device", device, "--zarr-slices", str(k))))
    try:
        import napari  # noqa: F401
    except ImportError:
        return rows
    rows.append(responsiveness_row(_run_with_display("responsiveness", "--device", device,
                                                     "--slices", "4", "--size", "1024")))
    return rows


def _run_with_display(case: str, *args: str) -> dict:
    """Run a case that opens a viewer: under xvfb-run when there is no display."""
    import shutil
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, *args]
    if not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["speed", "zarr", "responsiveness", "all"], default="all")
    parser.add_argument("--device", default=_device_default())
    parser.add_argument("--slices", type=int, default=None, help="speed: slices (default 256 GPU / 3 CPU)")
    parser.add_argument("--precision", default="auto", help="speed: precision of ours (auto, float32, bf16, fp16)")
    parser.add_argument("--size", type=int, default=1024, help="speed: slice side (default 1024)")
    parser.add_argument("--model", default=None, help="speed, zarr: a trained bundle (.pt) instead of a random model")
    parser.add_argument("--rows", action="store_true", help="speed: print the RESULTS rows too")
    parser.add_argument("--zarr-slices", type=int, default=0, help="zarr: only the first K slices (0 = all)")
    parser.add_argument("--side", type=int, default=1024, help="zarr: volume side (default 1024)")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda") or (args.device == "auto" and _cuda())
    slices = args.slices or (256 if on_gpu else 3)
    if args.case == "speed":
        r = case_speed(args.device, slices, args.size, args.precision, args.model)
        emit(r)
        if args.rows:
            print("\n".join(speed_rows(r)))
    elif args.case == "zarr":
        emit(case_zarr(args.device, args.zarr_slices, args.side, args.model))
    elif args.case == "responsiveness":
        emit(case_responsiveness(args.device, slices, args.size))
    else:  # both, in this process, printing the RESULTS rows (for the lead's headless GPU run)
        r = case_speed(args.device, slices, args.size, args.precision, args.model)
        print(json.dumps(r))
        print("\n".join(speed_rows(r)))
        try:
            import zarr  # noqa: F401
        except ImportError:
            print("zarr case skipped: the zarr package is not installed")
            return 0
        z = case_zarr(args.device, args.zarr_slices, args.side, args.model)
        from _harness import peak_rss_mib

        z["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(z))
        print(zarr_row(z) + "  (peak RSS of the process after the speed case too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
