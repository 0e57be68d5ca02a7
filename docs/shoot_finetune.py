"""Re-make docs/images/finetune.png: the Fine-tune widget trained on 3 painted VNC slices.

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/shoot_finetune.py [--iterations 200]

Paints the VNC mitochondria ground truth of stack1 slices 0, 4 and 8 (complete slices),
trains from scratch (no pre-trained weights; crop 256, batch 8) on the CPU, then previews
slice 6, which was not painted. Needs a display with OpenGL (Xvfb + Mesa) and
../shared/data/vnc.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _shot import one_colour, open_viewer, pump, save_screenshot

ROOT = Path(__file__).resolve().parents[1]
PAINTED = (0, 4, 8)
PREVIEW = 6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vnc", default=str(ROOT.parent / "shared" / "data" / "vnc"))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "finetune.png"))
    args = p.parse_args(argv)

    import numpy as np
    import tifffile
    from napari_cem._widgets.finetune import FinetuneWidget

    vnc = Path(args.vnc)
    image = tifffile.imread(vnc / "stack1_image.tif")[:10]
    mito = tifffile.imread(vnc / "stack1_mito.tif")[:10] > 0
    painted = np.zeros(image.shape, np.uint8)
    for z in PAINTED:
        painted[z] = mito[z]
    viewer, paint, widget = open_viewer(image, "vnc stack1", painted, "painted", FinetuneWidget,
                                        "Fine-tune")
    widget.image.value = viewer.layers["vnc stack1"]
    widget.labels_layer.value = paint
    widget.class_names.value = "mito"
    widget.complete.value = True
    widget.weights.value = "none"
    widget.iterations.value = args.iterations
    widget.crop.value = 256
    widget.batch.value = 8
    widget.device.value = "cpu"
    widget.save_to.value = str(Path(tempfile.mkdtemp(prefix="napari-cem-shot-")) / "vnc_mito.pt")
    t0 = time.monotonic()
    if widget.start() is None:
        raise SystemExit("training did not start")
    if not pump(lambda: widget._worker is None, 3600):
        raise SystemExit("training did not finish within an hour")
    if widget.bundle is None:
        raise SystemExit(f"training failed: {widget.result.value}")
    minutes = (time.monotonic() - t0) / 60
    viewer.dims.set_current_step(0, PREVIEW)
    widget.preview()
    if not pump(lambda: "vnc stack1 preview" in viewer.layers
                and viewer.layers["vnc stack1 preview"].data[PREVIEW].any(), 300):
        raise SystemExit("the preview did not appear")
    preview = viewer.layers["vnc stack1 preview"]
    one_colour(preview, "magenta")
    viewer.layers.selection.active = preview
    save_screenshot(viewer, args.out)
    truth = mito[PREVIEW]
    pred = preview.data[PREVIEW] > 0
    iou = (truth & pred).sum() / max((truth | pred).sum(), 1)
    print(f"wrote {args.out} | {args.iterations} it in {minutes:.1f} min | "
          f"IoU of the slice {PREVIEW} preview: {iou:.3f} | {widget.result.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
