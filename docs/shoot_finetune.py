"""Re-make docs/images/finetune.png: the Fine-tune widget after a short CPU run on VNC.

    xvfb-run -a python docs/shoot_finetune.py [--vnc ../shared/data/vnc] [--iterations 200]

Mitochondria painted on VNC stack1 slices 0, 4 and 8 (complete slices), random init,
default augmentation; after training, the preview of unpainted slice 6. Needs a display
with OpenGL (Xvfb + Mesa). Prints the training time and the preview's IoU on slice 6.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vnc", default=str(ROOT.parent / "shared" / "data" / "vnc"))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "finetune.png"))
    args = p.parse_args(argv)

    import napari
    import numpy as np
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_cem._widgets.finetune import FinetuneWidget

    vnc = Path(args.vnc)
    image = tifffile.imread(vnc / "stack1_image.tif")[:10]
    mito = (tifffile.imread(vnc / "stack1_mito.tif")[:10] > 0).astype(np.uint8)
    paint = np.zeros_like(mito)
    for k in (0, 4, 8):
        paint[k] = mito[k]
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1800, 1100)
    viewer.add_image(image, name="vnc stack1 z0-9")
    painted = viewer.add_labels(paint, name="mito paint")
    painted.contour = 2
    painted.colormap = napari.utils.DirectLabelColormap(color_dict={None: "transparent", 1: "yellow"})
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune", area="right")
    app = QApplication.instance()

    def wait(attr):
        while getattr(widget, attr) is not None:
            app.processEvents()
            time.sleep(0.02)

    widget.image.value = viewer.layers["vnc stack1 z0-9"]
    widget.labels_layer.value = painted
    widget.class_names.value = "mito"
    widget.complete.value = True
    widget.iterations.value = args.iterations
    widget.crop.value = 256
    widget.batch.value = 8
    widget.device.value = "cpu"
    widget.save_to.value = str(Path(tempfile.mkdtemp()) / "vnc_mito_3slices.pt")
    t0 = time.perf_counter()
    widget.start()
    wait("_worker")
    seconds = time.perf_counter() - t0
    viewer.dims.set_current_step(0, 6)
    widget.preview()
    while "vnc stack1 z0-9 preview" not in viewer.layers:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
    preview = viewer.layers["vnc stack1 z0-9 preview"]
    preview.colormap = napari.utils.DirectLabelColormap(color_dict={None: "transparent", 1: "magenta"})
    pred, truth = np.asarray(preview.data[6]) == 1, mito[6] == 1
    iou = (pred & truth).sum() / max((pred | truth).sum(), 1)
    for w in app.allWidgets():  # toasts would cover the canvas
        if type(w).__name__ == "NapariQtNotification":
            w.close()
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(args.out, canvas_only=False)
    print(f"wrote {args.out} | trained in {seconds:.0f} s | {widget.result.value} | "
          f"preview IoU on slice 6: {iou:.3f}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
