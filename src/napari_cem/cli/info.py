"""``napari-cem info``: versions, the compute device, the cache and the weights files."""

from __future__ import annotations

import argparse

from . import command


@command("info", "print versions, the compute device found and the cache folder")
def run_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform

    from .. import __version__
    from ..cache import cache_dir

    print(f"napari-cem {__version__}")
    print(f"python     {platform.python_version()} ({platform.system()} {platform.machine()})")
    for dist in ("napari", "numpy", "torch", "segmentation-models-pytorch", "imagehash",
                 "tifffile", "zarr", "dask", "scikit-image"):
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = "not installed"
        print(f"{dist:<28} {version}")
    print(f"{'Qt binding':<28} {_qt_binding()}")
    try:
        from ..device import describe_device

        print(f"device (auto)                {describe_device()}")
    except Exception as exc:  # torch missing or broken: say so, info must still print
        print(f"device (auto)                unavailable ({exc})")
    print(f"cache folder                 {cache_dir()}  (set NAPARI_CEM_CACHE to change)")
    from ..weights import weights_report

    for row in weights_report():
        state = (f"cached, SHA-256 {row['sha256'] or 'not recorded yet (recorded at next use)'}"
                 if row["cached"] else "not downloaded")
        pin = row["pin"] or f"none (set {row['pin_variable']} to pin one)"
        print(f"weights {row['name']:<20} {state}")
        print(f"{'':<28} file {row['path']}")
        print(f"{'':<28} pinned SHA-256: {pin}")
    return 0


def _qt_binding() -> str:
    try:
        import qtpy

        return f"{qtpy.API_NAME} {qtpy.QT_VERSION}"
    except Exception:
        return "none (install napari-cem[all] for the viewer)"
