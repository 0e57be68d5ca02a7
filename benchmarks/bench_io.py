"""Load + standardise: a 1 GiB uint16 TIFF (in memory) and a 1 GiB uint16 Zarr (lazy).

Goal: the TIFF loads at disk/decoder speed with bounded temporaries; the Zarr never
holds the whole volume: standardising it chunk by chunk keeps memory near a few chunks.
The ``huge`` case times ``napari-cem inspect`` on a Zarr declared 100000^3 with
(1, 1024, 1024) chunks and no data (~10^9 chunks): goal seconds and < 500 MiB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _harness import WORK_DIR, Timer, emit, row, run_isolated  # noqa: E402

SHAPE = (512, 1024, 1024)  # 2**29 uint16 voxels = 1 GiB
CHUNKS = (64, 256, 256)


def _synthetic_uint16(z0: int, z1: int) -> np.ndarray:
    """EM-like 16-bit slab: smooth structure plus noise, deterministic per slice."""
    rng = np.random.default_rng(z0)
    yy, xx = np.mgrid[0:SHAPE[1], 0:SHAPE[2]].astype(np.float32)
    out = np.empty((z1 - z0, *SHAPE[1:]), np.uint16)
    for i, z in enumerate(range(z0, z1)):
        base = 30000 + 8000 * np.sin(xx / 37.0 + z / 11.0) * np.cos(yy / 53.0)
        out[i] = np.clip(base + rng.normal(0, 3000, base.shape), 0, 65535).astype(np.uint16)
    return out


def make_inputs() -> tuple[Path, Path]:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tif = WORK_DIR / "bench_1gib_uint16.tif"
    zpath = WORK_DIR / "bench_1gib_uint16.zarr"
    if not tif.exists():
        import tifffile

        with tifffile.TiffWriter(tif, bigtiff=True, imagej=False) as tw:
            for z0 in range(0, SHAPE[0], 64):
                for plane in _synthetic_uint16(z0, z0 + 64):
                    tw.write(plane, contiguous=True)
    if not zpath.exists():
        import zarr

        arr = zarr.open_array(zpath, mode="w", shape=SHAPE, chunks=CHUNKS, dtype="uint16")
        for z0 in range(0, SHAPE[0], CHUNKS[0]):
            arr[z0:z0 + CHUNKS[0]] = _synthetic_uint16(z0, z0 + CHUNKS[0])
    return tif, zpath


def case_tiff(path: Path) -> dict:
    from napari_cem.io import read_volume

    with Timer() as t:
        data, meta = read_volume(path)
    assert data.dtype == np.uint8 and data.shape == SHAPE
    return {"seconds": round(t.seconds, 2), "shape": list(data.shape)}


def case_zarr(path: Path) -> dict:
    import dask.array as da
    import zarr

    from napari_cem.io import read_volume

    with Timer() as t_open:
        data, meta = read_volume(path)
    assert isinstance(data, da.Array) and data.dtype == np.uint8
    out = zarr.open_array(WORK_DIR / "bench_out_uint8.zarr", mode="w", shape=data.shape,
                          chunks=CHUNKS, dtype="uint8")
    with Timer() as t_all:
        da.store(data, out, lock=False)
    return {"open_seconds": round(t_open.seconds, 2), "convert_seconds": round(t_all.seconds, 2)}


HUGE_SHAPE, HUGE_CHUNKS = (100_000,) * 3, (1, 1024, 1024)


def case_huge() -> dict:
    """The real command in a child process; its peak RSS comes from RUSAGE_CHILDREN."""
    import resource
    import shutil
    import subprocess
    import time

    import zarr

    path = WORK_DIR / "bench_huge_declared.zarr"
    if not path.exists():
        zarr.create_array(str(path), shape=HUGE_SHAPE, chunks=HUGE_CHUNKS, dtype="uint16", fill_value=7)
    exe = shutil.which("napari-cem")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_cem.cli"]
    start = time.perf_counter()
    done = subprocess.run(cmd + ["inspect", str(path)], capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "child_peak_rss_mib": round(child_mib, 1)}


def case_baseline() -> dict:
    import napari_cem.io  # noqa: F401  (same imports as the cases)
    import dask.array  # noqa: F401
    import zarr  # noqa: F401

    return {}


def run_suite() -> list[str]:
    make_inputs()
    base = run_isolated("bench_io", "baseline")["peak_rss_mib"]
    tif = run_isolated("bench_io", "tiff")
    zr = run_isolated("bench_io", "zarr")
    huge = run_isolated("bench_io", "huge")
    gib_s = lambda s: 1.0 / s  # noqa: E731  (1 GiB of input)
    return [
        row("io: read_volume 1 GiB uint16 TIFF (512x1024x1024) -> uint8, percentile 0.5/99.5",
            f"{tif['seconds']} s ({gib_s(tif['seconds']):.2f} GiB/s), peak RSS {tif['peak_rss_mib']:.0f} MiB "
            f"(imports alone {base:.0f} MiB)"),
        row("io: read_volume 1 GiB uint16 Zarr (lazy, chunks 64x256x256), open + percentile sample",
            f"{zr['open_seconds']} s"),
        row("io: same Zarr standardised chunk-wise to a uint8 zarr (da.store)",
            f"{zr['convert_seconds']} s ({gib_s(zr['convert_seconds']):.2f} GiB/s), peak RSS "
            f"{zr['peak_rss_mib']:.0f} MiB (imports alone {base:.0f} MiB)"),
        row("io: `napari-cem inspect` of a Zarr declared 100000^3 uint16, chunks 1x1024x1024 "
            "(~9.6e8 chunks), no data written",
            f"{huge['seconds']} s wall (process start and imports included), peak RSS "
            f"{huge['child_peak_rss_mib']:.0f} MiB (goal: seconds, < 500 MiB; before: no answer "
            "after 60 s, memory growing, as dask listed every chunk key)"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["tiff", "zarr", "huge", "baseline"], required=True)
    args = parser.parse_args()
    tif, zpath = WORK_DIR / "bench_1gib_uint16.tif", WORK_DIR / "bench_1gib_uint16.zarr"
    result = {"tiff": lambda: case_tiff(tif), "zarr": lambda: case_zarr(zpath), "huge": case_huge,
              "baseline": case_baseline}[args.case]()
    emit(result)
