"""Re-make docs/images/segment.png: the Segment widget on VNC slices 10-19 (not trained on).

    xvfb-run -a python docs/shoot_segment.py MODEL.pt [--vnc ../shared/data/vnc]

MODEL.pt: a ResNet50 bundle fine-tuned on slices 0-9, e.g. ``benchmarks/_work/levers_none_
resnet50_none_auto_keep_it300_seed0.pt`` from ``python benchmarks/bench_levers.py --arch
resnet50 --seeds 0`` (the picture in the README). Needs a display with OpenGL (Xvfb + Mesa).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _shot import one_colour, open_viewer, pump, save_screenshot

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--vnc", default=str(ROOT.parent / "shared" / "data" / "vnc"))
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "segment.png"))
    args = p.parse_args(argv)

    import numpy as np
    import tifffile
    from napari_cem._widgets.segment import SegmentWidget

    vnc = Path(args.vnc)
    image = tifffile.imread(vnc / "stack1_image.tif")[10:, 256:768, 256:768]
    mito = (tifffile.imread(vnc / "stack1_mito.tif")[10:, 256:768, 256:768] > 0).astype(np.uint8)
    viewer, truth, widget = open_viewer(image, "vnc stack1 z10-19", mito, "mito ground truth",
                                        SegmentWidget, "Segment")
    def wait():
        pump(lambda: widget._worker is None, 3600)

    widget.load_model_file(args.model)
    wait()
    widget.image.value = viewer.layers["vnc stack1 z10-19"]
    widget.device.value = "cpu"
    widget.ground_truth.value = truth  # compared automatically after segmenting
    widget.run()
    wait()
    if widget.evaluation is None:
        widget.evaluate()
        wait()
    seg = [layer for layer in viewer.layers if layer.name.endswith("segmentation")][0]
    seg.opacity = 0.6
    one_colour(seg, "magenta")
    viewer.layers.move(viewer.layers.index(truth), len(viewer.layers))  # outlines over the result
    viewer.layers.selection.active = seg
    viewer.dims.set_current_step(0, 5)
    save_screenshot(viewer, args.out)
    print("wrote", args.out, "|", widget.iou_info.value)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
