"""The dock widgets as a user meets them, in a real viewer (run under xvfb-run off a desktop).

Cases (each prints one JSON line; ``--rows`` prints RESULTS.md rows too):

* ``speed``: the Segment widget against ``napari-cem segment`` on the same 4 VNC slices
  (1024 x 1024, random-init Unet-ResNet50, CPU), in one run: CLI, widget, CLI again. The
  ratio is CLI seconds / widget seconds (1.0 = as fast; the goal is >= 0.9), with the
  longest main-thread stall while the widget works (goal < 200 ms).
* ``cancel``: the seconds from Cancel / Stop to the widget being idle again, per widget,
  pressed while the work is in its slowest step (inside a slice, an iteration, a grouping).
* ``live``: Fine-tune with the live preview and the paint picked up while a scripted user
  paints: the longest main-thread stall while training (goal < 200 ms).
* ``stall``: a fresh viewer: opening the Segment widget and loading a model file at once
  (torch still importing in the background); the longest main-thread stall.
* ``organelles``: the Organelles widget's *Find objects* against ``napari-cem instances``
  on VNC stack1's mitochondria mask (20 x 1024 x 1024, 3D, min. size 1000, EM intensity
  columns), in turn; the longest main-thread stall while the widget works.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, emit, row  # noqa: E402

SLICES = (10, 14)  # the 4 VNC stack1 slices both paths segment


def _vnc(name: str = "stack1_image.tif") -> np.ndarray:
    import tifffile

    return tifffile.imread(VNC_DIR / name)


def _bundle_file() -> Path:
    """A random-init Unet-ResNet50 bundle (the speed does not depend on the weights), made
    in a child process so that this one has not imported torch (the stall case needs that)."""
    path = WORK_DIR / "widgets_random_unet.pt"
    if not path.is_file():
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        code = ("import sys, torch; from napari_cem.model import ModelBundle, build_unet, save_bundle; "
                "torch.manual_seed(0); save_bundle(ModelBundle(model=build_unet(1).eval(), "
                "classes=['background', 'mito'], norms=(0.58, 0.10)), sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def _viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    return viewer


# -- speed: widget vs CLI ---------------------------------------------------------------
def _cli_segment(tif: Path, model: Path) -> dict:
    out = WORK_DIR / "widgets_cli_seg.tif"
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "napari_cem.cli", "segment", str(model), str(tif),
                          "-o", str(out), "--device", "cpu"], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    seconds = float(re.search(r"segmented .* in ([0-9.]+) s", run.stdout).group(1))
    return {"seconds": seconds, "wall_s": wall}


def case_speed(rounds: int = 3) -> dict:
    """CLI and widget in turn, *rounds* times each (this 2-core machine's speed drifts by
    tens of percent between minutes: a single pair says little); the medians compared."""
    import tifffile
    from _responsiveness import StallProbe, run_until

    from napari_cem._widgets._common import torch_stack_ready
    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget
    from napari_cem.model import load_bundle

    volume = np.ascontiguousarray(_vnc()[slice(*SLICES)])
    tif = WORK_DIR / "widgets_vnc4.tif"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tif, volume, photometric="minisblack")  # 4 pages, not an RGBA image
    model = _bundle_file()
    viewer = _viewer()
    viewer.add_image(volume, name="vnc")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device.value = "cpu"
    state_for(viewer).set_active_model(load_bundle(model))
    run_until(torch_stack_ready, 120)
    run_until(lambda: False, 1.0)
    cli, ours, walls, stalls, showing = [], [], [], [], []
    for _ in range(rounds):
        cli.append(_cli_segment(tif, model)["seconds"])
        probe = StallProbe(interval_ms=10)
        probe.start()
        t0 = time.perf_counter()
        widget.run()
        run_until(lambda: widget._worker is None, 1800)
        t1 = time.perf_counter()
        probe.stop()
        ours.append(widget.result.metadata["seconds"])
        walls.append(t1 - t0)
        stalls.append(probe.longest_stall_ms_between(t0 + 0.05, t0 + 0.05 + ours[-1]))  # while predicting
        showing.append(probe.longest_stall_ms)
        if widget.result.labels.shape != volume.shape:
            raise RuntimeError(f"the widget segmented {widget.result.labels.shape}, not {volume.shape}")
    viewer.close()
    return {"cli_s": cli, "widget_s": ours, "widget_click_to_layer_s": walls,
            "ratio": float(np.median(cli) / np.median(ours)),
            "longest_stall_while_working_ms": max(stalls), "longest_stall_ms": max(showing)}


def speed_row(r: dict) -> str:
    def seconds(values):
        return " / ".join(f"{v:.1f}" for v in values)

    return row("widgets: Segment widget vs `napari-cem segment`, same 4 x 1024 x 1024 VNC stack1 slices "
               "(10-13), random-init Unet-ResNet50, CPU, in turn in one run (segmentation seconds as "
               "each reports them)",
               f"CLI {seconds(r['cli_s'])} s, widget {seconds(r['widget_s'])} s (click to layer shown "
               f"{seconds(r['widget_click_to_layer_s'])} s): ratio of the medians CLI/widget "
               f"{r['ratio']:.2f} (goal >= 0.9); longest main-thread stall while predicting "
               f"{r['longest_stall_while_working_ms']:.0f} ms ({r['longest_stall_ms']:.0f} ms incl. "
               "showing the layer)")


# -- cancel latency ---------------------------------------------------------------------
def _cancel_when(widget, ready, timeout=600.0) -> dict:
    """Wait for *ready()* while the job runs, press Cancel, time until the widget is idle."""
    from _responsiveness import run_until

    started = time.perf_counter()
    if not run_until(lambda: ready() or widget._worker is None, timeout):
        raise RuntimeError("the job never reached the point to cancel at")
    if widget._worker is None:
        raise RuntimeError("the job ended before Cancel could be pressed")
    t0 = time.perf_counter()
    widget.progress.cancel_button.changed.emit(True)  # what a click does
    run_until(lambda: widget._worker is None, 600)
    return {"latency_s": time.perf_counter() - t0, "pressed_after_s": t0 - started,
            "status": str(widget.progress.status.value)}


def _after(seconds: float):
    end = time.perf_counter() + seconds
    return lambda: time.perf_counter() >= end


def _cancel_segment(viewer) -> dict:
    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget
    from napari_cem.model import load_bundle

    viewer.add_image(np.ascontiguousarray(_vnc()[slice(*SLICES)]), name="vnc")
    widget = SegmentWidget(viewer)
    widget.device.value = "cpu"
    state_for(viewer).set_active_model(load_bundle(_bundle_file()))
    widget.run()
    # inside the second slice: its forward pass has run for 2 s
    seen = {"t": None}

    def inside_second():
        if seen["t"] is None and "1 / 4" in str(widget.progress.status.value):
            seen["t"] = time.perf_counter()
        return seen["t"] is not None and time.perf_counter() - seen["t"] > 2.0

    return _cancel_when(widget, inside_second)


def _cancel_finetune(viewer) -> dict:
    from napari_cem._widgets.finetune import FinetuneWidget

    image = np.ascontiguousarray(_vnc()[:2])
    mito = _vnc("stack1_mito.tif")[:2]
    viewer.add_image(image, name="vnc")
    viewer.add_labels(np.where(mito > 0, 2, 1).astype(np.uint8), name="paint")
    widget = FinetuneWidget(viewer)
    widget.device.value = "cpu"
    widget.iterations.value = 200
    widget.batch.value = 8
    widget.crop.value = 512
    widget.class_names.value = "background, mito"
    widget.save_to.value = str(WORK_DIR / "widgets_cancel_finetune.pt")
    steps = []
    show = widget._on_step
    widget._on_step = lambda step: (steps.append(time.perf_counter()), show(step))
    widget.start()
    return _cancel_when(widget, lambda: bool(steps) and time.perf_counter() - steps[-1] > 1.0)


def _patches_folder() -> Path:
    """An export of VNC stack1's 224 px exemplars (Near-duplicates' format), made once."""
    from napari_cem.curate import find_near_duplicates
    from napari_cem.export import export_curated

    out = WORK_DIR / "widgets_vnc_export"
    if not (out / "manifest.csv").is_file():
        volume = _vnc()
        result = find_near_duplicates(volume, source="vnc_stack1", patch_size=224, planes="xy")
        export_curated(result, volume, out)
    return out


def _cancel_pretrain(viewer) -> dict:
    import shutil

    from napari_cem._widgets.pretrain import PretrainWidget

    folder = _patches_folder()
    out = WORK_DIR / "widgets_cancel_moco"
    shutil.rmtree(out, ignore_errors=True)
    widget = PretrainWidget(viewer)
    widget.device.value = "cpu"
    widget.patches.value = str(folder / "patches")
    widget.output.value = str(out)
    widget.epochs.value = 5
    widget.batch.value = 16
    widget.queue.value = 256
    widget.start()
    return _cancel_when(widget, lambda: "Epoch 1 / 5" in str(widget.progress.status.value))


def _cancel_near_duplicates(viewer) -> dict:
    from napari_cem._widgets.near_duplicates import NearDuplicatesWidget

    big = np.concatenate([_vnc()] * 8)  # 160 x 1024 x 1024: long enough to cancel while grouping
    viewer.add_image(big, name="vnc x8")
    widget = NearDuplicatesWidget(viewer)
    widget.patch_size.value = 16
    widget.planes.value = "xy"
    widget.run()
    return _cancel_when(widget, lambda: "Grouping" in str(widget.progress.status.value))


def _cancel_label_patches(viewer) -> dict:
    from napari_cem._widgets.label_patches import LabelPatchesWidget
    from napari_cem.quality import LabelStore, PatchSet

    folder = _patches_folder()
    ids = PatchSet.from_export(folder).ids
    store = LabelStore(folder / "labels.csv")
    for i, pid in enumerate(ids[:12]):
        store.set(pid, "informative" if i % 2 else "uninformative")
    widget = LabelPatchesWidget(viewer)
    widget.open_folder(folder)
    widget.model.value = "encoder"
    widget.train()
    return _cancel_when(widget, lambda: "Features" in str(widget.progress.status.value))


def _big_tiff() -> Path:
    """A 1 GiB uint16 TIFF (512 x 1024 x 1024): seconds to read and standardise."""
    import tifffile

    path = WORK_DIR / "widgets_1gib_uint16.tif"
    if not path.is_file():
        rng = np.random.default_rng(0)
        with tifffile.TiffWriter(path) as tif:
            for _ in range(512):
                tif.write(rng.integers(0, 4096, (1024, 1024), dtype=np.uint16), contiguous=True)
    return path


def _cancel_organelles(viewer) -> dict:
    from napari_cem._widgets.organelles import OrganellesWidget

    viewer.add_image(_vnc(), name="vnc")
    viewer.add_labels((_vnc("stack1_mito.tif") > 0).astype(np.uint8), name="mito")
    widget = OrganellesWidget(viewer)
    widget.segmentation.value = viewer.layers["mito"]
    widget.find_objects()
    return _cancel_when(widget, lambda: "measuring" in str(widget.progress.status.value).lower())


def _cancel_load(viewer) -> dict:
    from napari_cem._widgets.load_volume import LoadVolumeWidget

    path = _big_tiff()
    widget = LoadVolumeWidget(viewer)
    widget.load(path)
    return _cancel_when(widget, _after(1.0))


CANCELS = {"Segment (inside a 1024 x 1024 slice)": _cancel_segment,
           "Fine-tune (inside an iteration, batch 8, crop 512)": _cancel_finetune,
           "Pre-train encoder (inside an iteration, ResNet50, batch 16)": _cancel_pretrain,
           "Near-duplicates (while grouping 655,360 patches)": _cancel_near_duplicates,
           "Label patches (while computing ResNet50 features)": _cancel_label_patches,
           "Load EM volume (while reading a 1 GiB uint16 TIFF)": _cancel_load,
           "Organelles (while measuring the objects' surfaces)": _cancel_organelles}


def case_cancel(only: str = "") -> dict:
    from _responsiveness import run_until

    from napari_cem._widgets._common import torch_stack_ready, wait_for_torch_stack

    out = {}
    for name, case in CANCELS.items():
        if only and only.lower() not in name.lower():
            continue
        viewer = _viewer()
        wait_for_torch_stack()
        run_until(torch_stack_ready, 120)
        try:
            out[name] = case(viewer)
        except Exception as exc:  # noqa: BLE001 - recorded, the other widgets still run
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        viewer.close()
    return out


def cancel_row(r: dict) -> str:
    parts = [f"{name}: " + (f"{v['latency_s']:.2f} s" if "latency_s" in v else v["error"])
             for name, v in r.items() if isinstance(v, dict)]
    return row("widgets: Cancel / Stop latency per dock widget in a real viewer (Xvfb), from the "
               "click to the widget idle again, pressed in the job's slowest step (goal <= 2 s)",
               "; ".join(parts))


# -- the refinement loop's live parts ---------------------------------------------------
def case_live() -> dict:
    """Fine-tune on 4 VNC slices (1024 x 1024) with the live preview every 3 s and the paint
    picked up every 2 s while a scripted user paints another slice and changes slice; the
    longest main-thread stall while training."""
    from _responsiveness import StallProbe, run_until

    import napari_cem._widgets.finetune as ft
    from napari_cem._widgets._common import torch_stack_ready, wait_for_torch_stack

    ft.PAINT_REFRESH_S = 2.0
    image = np.ascontiguousarray(_vnc()[:4])
    mito = _vnc("stack1_mito.tif")[:4] > 0
    viewer = _viewer()
    viewer.add_image(image, name="vnc")
    paint = np.zeros(image.shape, np.uint8)
    paint[0] = mito[0]
    labels = viewer.add_labels(paint, name="paint")
    widget = ft.FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device.value = "cpu"
    widget.iterations.value = 60
    widget.batch.value = 4
    widget.crop.value = 256
    widget.complete.value = True
    widget.class_names.value = "mito"
    widget.live_every.value = 3.0
    widget.save_to.value = str(WORK_DIR / "widgets_live.pt")
    wait_for_torch_stack()
    run_until(torch_stack_ready, 120)
    run_until(lambda: False, 1.0)
    previews, notes = [], []
    show = widget._show_preview
    widget._show_preview = lambda target, values: (previews.append(target[1].index), show(target, values))
    step_shown = widget._on_step
    widget._on_step = lambda step: (step_shown(step), notes.append(step.message))
    probe = StallProbe(interval_ms=10)
    probe.start()
    t0 = time.perf_counter()
    widget.start()
    run_until(lambda: len(notes) >= 3, 600)
    for y0 in range(0, 1024, 128):  # the user paints slice 1, a band at a time, and looks at it
        viewer.dims.set_current_step(0, 1)
        labels.data[1, y0:y0 + 128] = mito[1, y0:y0 + 128]
        labels.refresh()
        run_until(lambda: False, 1.0)
    run_until(lambda: widget._worker is None, 1800)
    t1 = time.perf_counter()
    probe.stop()
    viewer.close()
    return {"seconds": t1 - t0, "previews": len(previews), "preview_slices": sorted(set(previews)),
            "pick_ups": sum("paint picked up" in n for n in notes),
            "longest_stall_while_training_ms": probe.longest_stall_ms_between(t0 + 0.05, t1 - 0.5),
            "top_stalls_ms_at_s": sorted(((round((g - probe.interval) * 1000), round(e - t0, 1))
                                          for g, e in zip(probe.gaps, probe.ends)), reverse=True)[:5]}


def live_row(r: dict) -> str:
    top = ", ".join(f"{ms} ms at {at} s" for ms, at in r["top_stalls_ms_at_s"])
    return row("widgets: Fine-tune on 4 x 1024 x 1024 VNC slices (batch 4, crop 256, 60 iterations, CPU) "
               "with the live preview every 3 s and the paint picked up every 2 s while a scripted user "
               "paints slice 1 band by band; 10 ms QTimer probe",
               f"longest main-thread stall while training {r['longest_stall_while_training_ms']:.0f} ms "
               f"(goal < 200 ms; top: {top}); {r['previews']} previews shown (slices "
               f"{r['preview_slices']}), {r['pick_ups']} paint pick-ups, job {r['seconds']:.0f} s")


# -- UI stalls in a fresh viewer ----------------------------------------------------------
def case_stall() -> dict:
    from _responsiveness import StallProbe, run_until

    model = _bundle_file()
    torch_before = "torch" in sys.modules
    viewer = _viewer()
    probe = StallProbe(interval_ms=10)
    run_until(lambda: False, 0.5)
    probe.start()
    t0 = time.perf_counter()
    from napari_cem._widgets.segment import SegmentWidget

    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    opened = time.perf_counter() - t0
    widget.load_model_file(model)
    run_until(lambda: widget._worker is None, 300)
    t1 = time.perf_counter()
    run_until(lambda: False, 0.3)
    probe.stop()
    loaded = widget.state.active_model is not None
    top = sorted(((round((g - probe.interval) * 1000), round(e - t0, 2))
                  for g, e in zip(probe.gaps, probe.ends)), reverse=True)[:4]
    viewer.close()
    return {"open_ms": opened * 1000, "load_s": t1 - t0, "loaded": loaded, "torch_imported_before": torch_before,
            "longest_stall_ms": probe.longest_stall_ms, "top_stalls_ms_at_s": top}


def stall_row(r: dict) -> str:
    top = ", ".join(f"{ms} ms at {at} s" for ms, at in r["top_stalls_ms_at_s"])
    return row("widgets: fresh viewer (Xvfb), Segment widget opened and 'Load model file' pressed at once "
               "(torch still importing in the background); longest main-thread stall, 10 ms QTimer probe",
               f"{r['longest_stall_ms']:.0f} ms (goal < 200 ms; top: {top}); opening the widget "
               f"{r['open_ms']:.0f} ms (blocking); model loaded {r['loaded']} after {r['load_s']:.1f} s")


# -- organelles: widget vs CLI -----------------------------------------------------------
def case_organelles(rounds: int = 2) -> dict:
    import tifffile
    from _responsiveness import StallProbe, run_until

    from napari_cem._widgets.organelles import OrganellesWidget

    image, mito = _vnc(), (_vnc("stack1_mito.tif") > 0).astype(np.uint8)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    seg, em = WORK_DIR / "organelles_mito.tif", WORK_DIR / "organelles_em.tif"
    tifffile.imwrite(seg, mito, photometric="minisblack")
    tifffile.imwrite(em, image, photometric="minisblack")
    viewer = _viewer()
    viewer.add_image(image, name="vnc")
    layer = viewer.add_labels(mito, name="mito")
    widget = OrganellesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.min_size.value = 1000
    run_until(lambda: False, 1.0)
    cli, ours, stalls, counts = [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "napari_cem.cli", "instances", str(seg), "-o",
                        str(WORK_DIR / "organelles_cli.tif"), "--min-size", "1000", "--image", str(em)],
                       check=True, capture_output=True)
        cli.append(time.perf_counter() - t0)
        if widget.objects_layer is not None:
            viewer.layers.remove(widget.objects_layer)
        widget.segmentation.value = layer
        probe = StallProbe(interval_ms=10)
        probe.start()
        t0 = time.perf_counter()
        widget.find_objects()
        run_until(lambda: widget._worker is None, 600)
        ours.append(time.perf_counter() - t0)
        probe.stop()
        stalls.append(probe.longest_stall_ms)
        counts.append(widget.proofreader.count)
    viewer.close()
    return {"cli_s": cli, "widget_s": ours, "longest_stall_ms": max(stalls), "objects": counts[-1]}


def organelles_row(r: dict) -> str:
    def seconds(values):
        return " / ".join(f"{v:.1f}" for v in values)

    return row("widgets: Organelles *Find objects* vs `napari-cem instances --min-size 1000 --image`, "
               "VNC stack1 mitochondria mask (20 x 1024 x 1024, 3D), in turn in one run",
               f"CLI {seconds(r['cli_s'])} s (a new process: start-up, reading the TIFFs, writing TIFF + "
               f"CSV), widget {seconds(r['widget_s'])} s (click to table shown); {r['objects']} objects; "
               f"longest main-thread stall {r['longest_stall_ms']:.0f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["speed", "cancel", "stall", "live", "organelles"], required=True)
    parser.add_argument("--rows", action="store_true", help="print the RESULTS.md row too")
    parser.add_argument("--only", default="", help="cancel: only the widgets whose name holds this")
    args = parser.parse_args(argv)
    case, make_row = {"speed": (case_speed, speed_row),
                      "cancel": (lambda: case_cancel(args.only), cancel_row),
                      "stall": (case_stall, stall_row), "live": (case_live, live_row),
                      "organelles": (case_organelles, organelles_row)}[args.case]
    result = case()
    emit(result)
    if args.rows:
        print(make_row(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
