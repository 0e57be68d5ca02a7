"""Issue 19's cluster figure: VNC stack1 (20 x 1024 x 1024) segmented into a zarr store by one
process (``segment(out=...)``, torch on every core) and by a 2-worker dask.distributed
LocalCluster (``segment_on_cluster``, one torch thread per worker), one after the other in
one run, with a random-init U-Net (the speed does not depend on the weights): seconds,
slices per second, and whether the labels are identical.

    PYTHONPATH=src python benchmarks/bench_cluster.py --rows
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, bench_parser, noted, publish, row, vnc_missing  # noqa: E402


def main(argv=None) -> int:
    import tifffile
    import torch

    from napari_cem.cluster import segment_on_cluster, start_local_cluster
    from napari_cem.infer import segment
    from napari_cem.model import ModelBundle, build_unet, load_bundle, save_bundle

    p = bench_parser(__doc__)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if vnc_missing():
        return 0
    volume = tifffile.imread(VNC_DIR / "stack1_image.tif")
    WORK_DIR.mkdir(exist_ok=True)
    model = WORK_DIR / f"cluster_random_{args.arch}.pt"
    torch.manual_seed(0)
    save_bundle(ModelBundle(model=build_unet(1, args.arch).eval(), classes=["background", "mito"],
                            norms=(0.58, 0.10)), model)
    one, many = WORK_DIR / "cluster_one.zarr", WORK_DIR / "cluster_many.zarr"
    for path in (one, many):
        shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    a = segment(volume, load_bundle(model), out=one, device="cpu")
    one_s = time.perf_counter() - t0
    client = start_local_cluster(args.workers)
    try:
        t0 = time.perf_counter()
        b = segment_on_cluster(volume, model, many, client, device="cpu")
        many_s = time.perf_counter() - t0  # includes the workers loading torch and the model
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    same = bool(np.array_equal(np.asarray(a.labels), np.asarray(b.labels)))
    n = volume.shape[0]
    rows = [row(f"segment on a dask cluster: VNC stack1 {'x'.join(map(str, volume.shape))} -> zarr, random-init "
                f"U-Net {args.arch}, CPU, one process vs {args.workers}-worker LocalCluster, one after the other",
                noted(f"one process {one_s:.1f} s ({n / one_s:.2f} slices/s, {a.metadata['precision']}); "
                f"{args.workers} workers {many_s:.1f} s ({n / many_s:.2f} slices/s, from the cluster's start, "
                f"workers loading the model included); labels identical {same}", args.note))]
    for path in (one, many):
        shutil.rmtree(path, ignore_errors=True)
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
