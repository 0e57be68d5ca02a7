"""Re-make docs/images/organelles.png (1920 x 1080) and organelles-1366x768.png: every
napari-cem dock open, the Organelles widget in front, on VNC stack1 with its mitochondria
mask as the segmentation: objects found in 3D (min. size 1000 voxels), the largest one
picked in the table (the view jumps to it).

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/shoot_organelles.py [--vnc ../shared/data/vnc]
    xvfb-run -a -s "-screen 0 1366x768x24" python docs/shoot_organelles.py --small
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _shot import pump, save_screenshot

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vnc", default=str(ROOT.parent / "shared" / "data" / "vnc"))
    p.add_argument("--small", action="store_true", help="1366 x 768 (run Xvfb at that size)")
    args = p.parse_args(argv)
    out = ROOT / "docs" / "images" / ("organelles-1366x768.png" if args.small else "organelles.png")

    import napari
    import numpy as np
    import tifffile
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    from napari_cem.widgets_registry import add_all_dock_widgets, fit_window

    vnc = Path(args.vnc)
    image = tifffile.imread(vnc / "stack1_image.tif")
    mito = (tifffile.imread(vnc / "stack1_mito.tif") > 0).astype(np.uint8)
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="vnc stack1")
    viewer.add_labels(mito, name="mito mask", metadata={"napari_cem": {"classes": ["background", "mito"]}})
    widgets = add_all_dock_widgets(viewer)
    fit_window(viewer)
    widget = next(w for w in widgets if type(w).__name__ == "OrganellesWidget")
    dock = next(d for d in viewer.window._qt_window.findChildren(QDockWidget) if d.windowTitle() == "Organelles")
    pump(lambda: False, 1)
    dock.raise_()
    widget.segmentation.value = viewer.layers["mito mask"]
    widget.min_size.value = 1000
    t0 = time.perf_counter()
    widget.find_objects()
    pump(lambda: widget._worker is None, 600)
    seconds = time.perf_counter() - t0
    table = widget.proofreader.table
    biggest = int(table["label"][int(np.argmax(table["voxels"]))])
    widget.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)  # the largest objects first
    widget.table.select_labels([biggest])
    widget._on_rows_selected([biggest])
    save_screenshot(viewer, out)
    print(f"wrote {out} | {widget.progress.status.value} | find + measure {seconds:.1f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
