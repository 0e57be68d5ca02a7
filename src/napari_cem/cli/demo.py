"""``napari-cem demo``: napari with the synthetic sample, its labels and every widget."""

from __future__ import annotations

import argparse

from .._argtypes import int_at_least
from . import command


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--anisotropic", action="store_true",
                   help="ssTEM-like anisotropic sample (40 x 8 x 8 nm) instead of the isotropic one")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the synthetic volume (default 0)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="save a screenshot of the whole window to PNG once it is shown, then quit")


@command("demo", "open napari with a synthetic EM volume, its labels and the napari-cem widgets", _demo_args)
def run_demo(args: argparse.Namespace) -> int:
    import napari

    from .._sample_data import sample_layers
    from ..widgets_registry import add_all_dock_widgets, fit_window

    viewer = napari.Viewer(title="napari-cem demo")
    for data, kwargs, kind in sample_layers(isotropic=not args.anisotropic, seed=args.seed):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.current_step = tuple(s // 2 for s in viewer.dims.nsteps)
    add_all_dock_widgets(viewer)
    fit_window(viewer)
    if args.screenshot:
        from qtpy.QtCore import QTimer

        def shoot():
            _save_window_screenshot(viewer, args.screenshot)
            viewer.close()

        QTimer.singleShot(1500, shoot)
    napari.run()
    return 0


def _save_window_screenshot(viewer, path: str) -> None:
    import imageio.v3 as iio

    image = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(path, image)
    print(f"screenshot saved to {path}")
