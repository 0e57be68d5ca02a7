"""Issue 19: the Segment widget's *Save labels (OME-Zarr)* against the core call it runs.

One run, in turn, on the same labels (a threshold "model" segments VNC stack1, 20 x 1024 x
1024, voxel size 45 x 4.6 x 4.6 nm, in the widget): ``napari_cem.ome_labels.save_ome_labels``
called directly, then the widget in a real viewer (Xvfb) saving its segmentation layer (from the click until the status line
says it is saved, with a 10 ms QTimer probe for the longest main-thread stall), then a save
cancelled 0.1 s after the click (the time from Cancel until the widget is idle, and whether
the older file is unchanged).

    xvfb-run -a python benchmarks/bench_save_labels.py --rows
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, bench_parser, noted, publish, row, vnc_missing  # noqa: E402
from _responsiveness import StallProbe, run_until  # noqa: E402

VOXEL = (45.0, 4.6, 4.6)


def main(argv=None) -> int:
    import torch  # before the widgets (they import it in threads)

    args = bench_parser(__doc__).parse_args(argv)
    if vnc_missing():
        return 0
    import napari
    import tifffile

    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget
    from napari_cem.ome_labels import read_ome_labels, save_ome_labels

    image = tifffile.imread(VNC_DIR / "stack1_image.tif")
    with tempfile.TemporaryDirectory() as folder:
        class Dark(torch.nn.Module):  # a model that needs no training: the save is measured
            def forward(self, x):
                return 4 * (-1.0 - x)

        viewer = napari.Viewer()
        viewer.window._qt_window.resize(1920, 1080)
        viewer.add_image(image, name="vnc stack1", scale=VOXEL, units=("nm",) * 3)
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment")
        from types import SimpleNamespace

        state_for(viewer).set_active_model(SimpleNamespace(model=Dark(), classes=["background", "dark"],
                                                           norms=(0.58, 0.10)))
        widget.run()
        run_until(lambda: widget._worker is None, 600)
        labels = np.array(viewer.layers["vnc stack1 segmentation"].data)  # the same labels, both ways
        t0 = time.perf_counter()
        save_ome_labels(Path(folder) / "core.zarr", labels, voxel_size=VOXEL, class_names=["background", "dark"])
        core_s = time.perf_counter() - t0
        target = Path(folder) / "widget.zarr"
        probe = StallProbe()
        probe.start()
        t0 = time.perf_counter()
        widget.save_labels(str(target))
        run_until(lambda: widget._worker is None, 600)
        widget_s = time.perf_counter() - t0
        probe.stop()
        saved = "saved" in widget.progress.status.value
        before = np.asarray(read_ome_labels(target)[0][0])
        widget.viewer.layers["vnc stack1 segmentation"].data[:] = 0
        widget.save_labels(str(target))
        run_until(lambda: False, 0.1)
        t0 = time.perf_counter()
        widget.jobs.cancel()
        run_until(lambda: widget._worker is None, 60)
        cancel_s = time.perf_counter() - t0
        kept = np.array_equal(np.asarray(read_ome_labels(target)[0][0]), before)
        said = widget.progress.status.value
        viewer.close()
    rows = [row("Segment widget 'Save labels (OME-Zarr)' vs save_ome_labels, VNC-sized labels 20 x 1024 x 1024 "
                "uint8 (pyramid of 3 levels), in turn in one run",
                noted(f"core {core_s:.2f} s; widget {widget_s:.2f} s from the click to the status line "
                      f"(saved: {saved}; longest main-thread stall {probe.longest_stall_ms:.0f} ms, the "
                      f"snapshot of the layer taken at the click included); Cancel 0.1 s into a second save: "
                      f"idle {cancel_s:.2f} s later, the older file unchanged: {kept} ('{said}')", args.note))]
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
