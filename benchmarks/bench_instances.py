"""Issue 18's figures for ``napari_cem.instances``.

``--case truth``: instance F1 of our pipeline run on ground-truth masks: the synthetic
volumes (their mitochondria are separate objects with known ids), split off and on; and on
VNC stack1 slices 10-19, the segmentation of a saved lever model (``bench_levers.py``'s
``--model`` in benchmarks/_work) against the objects of the true mask (same rules).
``--case big``: a 1024^3 uint8 semantic zarr of blobs, labelled slab by slab into a zarr
store: seconds and peak memory (a fresh process), and the ids against the in-memory
labelling of a 256^3 crop; then the object table of that store measured slab by slab
(seconds, peak memory, a fresh process) and against the in-memory table of the crop.

    PYTHONPATH=src python benchmarks/bench_instances.py --case truth --rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, WORK_DIR, row  # noqa: E402


def truth_rows(model: str) -> list[str]:
    from napari_cem.instance_metrics import evaluate_instances
    from napari_cem.instances import find_instances
    from napari_cem.synthetic import make_em_volume

    rows = []
    for iso, shape in ((False, (24, 384, 384)), (True, (64, 256, 256))):
        vol = make_em_volume(shape, isotropic=iso, seed=0)
        mito = vol.class_names.index("mitochondria")
        for split in (False, True):
            t0 = time.perf_counter()
            r = find_instances(vol.labels, value=mito, voxel_size=vol.voxel_size, split=split,
                               split_depth=16, unit="nm")
            s = evaluate_instances(r.labels, vol.mito_instances)
            rows.append(row(f"instances on the true mask, synthetic {'isotropic' if iso else 'anisotropic'} "
                            f"{'x'.join(map(str, shape))}, split {'16 nm' if split else 'off'}",
                            _scores(s) + f"; {r.count} found, {int(vol.mito_instances.max())} true; "
                            f"{time.perf_counter() - t0:.2f} s ({r.info['connectivity_why']})"))
    if not (VNC_DIR / "stack1_mito.tif").is_file():
        return rows
    import tifffile

    truth_mask = (tifffile.imread(VNC_DIR / "stack1_mito.tif")[10:] > 0).astype(np.uint8)
    voxel = (45.0, 4.6, 4.6)  # from the data's README
    truth = find_instances(truth_mask, voxel_size=voxel)
    path = WORK_DIR / model
    if path.is_file():
        from napari_cem.infer import segment
        from napari_cem.model import load_bundle

        image = tifffile.imread(VNC_DIR / "stack1_image.tif")[10:]
        bundle = load_bundle(path)
        for name, options in (("plain", {}), ("z_smooth", {"z_smooth": True})):
            seg = segment(image, bundle, device="cpu", **options)
            for min_size in (0, 1000):
                pred = find_instances(np.asarray(seg.labels), value=1, voxel_size=voxel, min_size=min_size)
                s = evaluate_instances(pred.labels, truth.labels)
                rows.append(row(f"instances of a model's segmentation, VNC slices 10-19 ({name}, min size "
                                f"{min_size} voxels)", _scores(s) + f"; {pred.count} found, {truth.count} "
                                f"objects in the true mask (same rules: {truth.info['connectivity_why']}); "
                                f"model {model}"))
    return rows


def _scores(s) -> str:
    a, b = s.at[0.5], s.at[0.75]
    return (f"F1@0.5 {a['f1']:.3f} (P {a['precision']:.3f} R {a['recall']:.3f}), F1@0.75 {b['f1']:.3f}, "
            f"PQ {s.panoptic_quality:.3f}, mean matched IoU {s.mean_matched_iou:.3f}, "
            f"{s.splits} split, {s.merges} merged")


def make_big(path: Path, side: int) -> None:
    """A side^3 uint8 zarr of smooth blobs (about 8 % foreground), written 64 slices at a time."""
    import zarr
    from scipy import ndimage

    arr = zarr.create_array(str(path), shape=(side,) * 3, chunks=(64, 256, 256), dtype=np.uint8,
                            fill_value=0, overwrite=True)
    rng = np.random.default_rng(0)
    for z0 in range(0, side, 64):
        block = ndimage.gaussian_filter(rng.random((64 + 8, side, side), np.float32), 4)[4:-4]
        arr[z0:z0 + 64] = (block > 0.5 + 0.02).astype(np.uint8)[: side - z0]


def big_child(path: str, out: str) -> None:
    import resource

    from napari_cem.instances_slabs import find_instances_in_slabs
    import zarr

    sem = zarr.open_array(path, mode="r")
    t0 = time.perf_counter()
    r = find_instances_in_slabs(sem, out, connectivity="full")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "count": r.count}))


def measure_child(out: str) -> None:
    """Measure the objects of a zarr instances store slab by slab: seconds, peak memory."""
    import resource

    from napari_cem.instances_slabs import open_instances
    from napari_cem.measurements import measure_objects_in_slabs

    r = open_instances(out)
    t0 = time.perf_counter()
    cols = measure_objects_in_slabs(r.labels, voxel_size=(8, 8, 8), object_class=r.object_class)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "rows": len(cols["label"]),
                      "largest_box_voxels": int(max(
                          (cols["bbox_z1_nm"] - cols["bbox_z0_nm"]) * (cols["bbox_y1_nm"] - cols["bbox_y0_nm"])
                          * (cols["bbox_x1_nm"] - cols["bbox_x0_nm"])) / 512)}))


def big_rows(side: int) -> list[str]:
    import shutil

    import zarr

    from napari_cem.instances import find_instances
    from napari_cem.instances_slabs import find_instances_in_slabs

    WORK_DIR.mkdir(exist_ok=True)
    sem, out = WORK_DIR / f"blobs_{side}.zarr", WORK_DIR / f"blobs_{side}_instances.zarr"
    if not sem.exists():
        make_big(sem, side)
    shutil.rmtree(out, ignore_errors=True)
    res = subprocess.run([sys.executable, __file__, "--child", str(sem), str(out)], capture_output=True,
                         text=True, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    crop = np.asarray(zarr.open_array(str(sem), mode="r")[:256, :256, :256])
    a = find_instances(crop, connectivity="full")
    b = find_instances_in_slabs(crop, WORK_DIR / "crop_instances.zarr", slab=40, connectivity="full")
    same = np.array_equal(a.labels, np.asarray(b.labels[:]))
    res = subprocess.run([sys.executable, __file__, "--measure-child", str(out)], capture_output=True,
                         text=True, check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    from napari_cem.measurements import measure_objects, measure_objects_in_slabs

    whole = measure_objects(a.labels)
    slabs = measure_objects_in_slabs(b.labels, slab=40)
    table_same = all(np.allclose(whole[k], slabs[k], rtol=1e-9) for k in whole)
    return [row(f"instances out of core, {side}^3 uint8 zarr of blobs -> zarr store (26-connected)",
                f"{got['seconds']:.1f} s, peak memory {got['peak_gib']:.2f} GiB (process), {got['count']:,} "
                f"objects; 256^3 crop slab by slab (40 slices) vs in memory: ids identical {same}"),
            row(f"object table out of core (measure_objects_in_slabs), those {side}^3 zarr instances",
                f"{m['seconds']:.1f} s, peak memory {m['peak_gib']:.2f} GiB (process), {m['rows']:,} rows "
                f"(largest object box {m['largest_box_voxels']:,} voxels); 256^3 crop slab by slab vs "
                f"in memory: every column equal {table_same}")]


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        big_child(sys.argv[2], sys.argv[3])
        return 0
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--measure-child":
        measure_child(sys.argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["truth", "big"], default="truth")
    p.add_argument("--model", default="levers_5rois_resnet18-slim_none_auto_keep_it300_seed0.pt")
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--rows", action="store_true")
    args = p.parse_args(argv)
    rows = truth_rows(args.model) if args.case == "truth" else big_rows(args.side)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
