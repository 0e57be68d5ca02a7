"""Issue 19's OME-Zarr figure: writing a label volume as an OME-Zarr label image (level 0,
the pyramid, the metadata; ``napari_cem.ome_labels.save_ome_labels``) against writing the
same array as a plain zarr array with the same chunks, one after the other in one run.
The volume: the 1024^3 uint8 blobs of ``bench_instances.py --case big`` (made if missing).

    PYTHONPATH=src python benchmarks/bench_ome_zarr.py --rows
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import WORK_DIR, bench_parser, noted, publish, row  # noqa: E402


def _size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> int:
    import zarr
    from bench_instances import make_big

    from napari_cem.ome_labels import pyramid_factors, save_ome_labels

    p = bench_parser(__doc__)
    p.add_argument("--side", type=int, default=1024)
    args = p.parse_args(argv)
    WORK_DIR.mkdir(exist_ok=True)
    source = WORK_DIR / f"blobs_{args.side}.zarr"
    if not source.exists():
        make_big(source, args.side)
    labels = np.asarray(zarr.open_array(str(source), mode="r")[...])
    chunks = (16, 512, 512)
    plain, ome = WORK_DIR / "ome_bench_plain.zarr", WORK_DIR / "ome_bench_labels.zarr"
    shutil.rmtree(plain, ignore_errors=True)
    shutil.rmtree(ome, ignore_errors=True)
    t0 = time.perf_counter()
    arr = zarr.create_array(str(plain), shape=labels.shape, chunks=chunks, dtype=labels.dtype, fill_value=0)
    for z0 in range(0, labels.shape[0], chunks[0]):
        arr[z0:z0 + chunks[0]] = labels[z0:z0 + chunks[0]]
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    save_ome_labels(ome, labels, voxel_size=(8.0, 8.0, 8.0), class_names=["background", "blob"], chunks=chunks)
    ome_s = time.perf_counter() - t0
    levels = len(pyramid_factors(labels.shape, (8.0, 8.0, 8.0)))
    rows = [row(f"OME-Zarr label image vs plain zarr, {args.side}^3 uint8 labels (blobs), chunks 16 x 512 x 512, "
                "one after the other", noted(f"plain zarr array {plain_s:.1f} s ({_size_mib(plain):.1f} MiB on disk); "
                f"OME-Zarr label image (level 0 + {levels - 1} smaller levels + NGFF 0.5 metadata, written to a "
                f"temporary folder and renamed) {ome_s:.1f} s ({_size_mib(ome):.1f} MiB): {ome_s / plain_s:.2f}x", args.note))]
    shutil.rmtree(plain, ignore_errors=True)
    shutil.rmtree(ome, ignore_errors=True)
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
