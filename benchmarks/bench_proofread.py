"""Issue 18's proofreading figures: each edit of ``napari_cem.proofread`` on a 512^3 uint32
volume of ~600 ball-shaped objects (isotropic 8 nm), and the same edits through the
Organelles widget in a real viewer (``--widget``: the edit, the table and the layer refresh,
all on the main thread). Goal: each merge, split and delete under 500 ms.

    PYTHONPATH=src python benchmarks/bench_proofread.py --rows
    PYTHONPATH=src xvfb-run -a python benchmarks/bench_proofread.py --widget --rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import record, row  # noqa: E402

SIDE = 512


def ball_volume(side: int = SIDE, n: int = 600, seed: int = 0):
    """Labels 1..n of balls (radius 8-20 voxels) at random places (later ones overwrite), and
    the centres of objects 1 and 2, moved to touch each other (a merge then a split)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side,) * 3, np.uint32)
    centres = rng.integers(30, side - 30, size=(n, 3))
    centres[1] = centres[0] + [0, 0, 30]
    radii = rng.integers(8, 21, size=n)
    radii[:2] = 16
    for i in range(n - 1, -1, -1):  # objects 1 and 2 drawn last: whole
        c, r = centres[i], int(radii[i])
        box = tuple(slice(v - r, v + r + 1) for v in c)
        grid = np.ogrid[tuple(slice(-r, r + 1) for _ in range(3))]
        ball = sum(g ** 2 for g in grid) <= r * r
        labels[box][ball] = i + 1
    return labels, centres


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000


def core_rows() -> list[str]:
    from napari_cem.proofread import Proofreader

    labels, centres = ball_volume()
    image = (labels % 200).astype(np.uint8)
    t0 = time.perf_counter()
    p = Proofreader(labels, object_class=np.ones(int(labels.max()) + 1, np.int64), class_names=["bg", "mito"],
                    voxel_size=(8.0, 8.0, 8.0), image=image)
    setup = time.perf_counter() - t0
    times = {}
    _e, times["merge"] = _timed(p.merge, [1, 2])
    _e, times["split"] = _timed(p.split, 1, [centres[0], centres[1]])
    _e, times["delete"] = _timed(p.delete, [3])
    _e, times["fill holes"] = _timed(p.fill_holes, 4)
    _e, times["dilate"] = _timed(p.dilate, 5)
    _e, times["erode"] = _timed(p.erode, 6)
    _e, times["undo"] = _timed(p.undo)
    _e, times["relabel"] = _timed(p.relabel)
    _e, times["undo relabel"] = _timed(p.undo)
    figures = ", ".join(f"{k} {v:.0f} ms" for k, v in times.items())
    saved = _autosave_seconds(p)
    return [row(f"proofreading core, {SIDE}^3 uint32, {p.count} objects, 8 nm isotropic",
                f"{figures}; table of all objects at the start, with the EM intensity columns, {setup:.1f} s "
                f"(once, in a worker); one autosave (copy, zlib TIFF {SIDE}^3 uint32 + CSV, background "
                f"thread) {saved:.1f} s")]


def _autosave_seconds(p) -> float:
    import tempfile

    from napari_cem.autosave import Autosave

    with tempfile.TemporaryDirectory() as folder:
        saver = Autosave(p, Path(folder) / "objects.tif")
        t0 = time.perf_counter()
        saver.request()
        saver.wait()
        seconds = time.perf_counter() - t0
        saver.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widget", action="store_true")
    parser.add_argument("--rows", action="store_true", help="append the rows to RESULTS.md")
    args = parser.parse_args()
    if args.widget:
        from _bench_organelles_widget import widget_rows

        rows = widget_rows(ball_volume)
    else:
        rows = core_rows()
    print("\n".join(rows))
    if args.rows:
        record(rows)


if __name__ == "__main__":
    main()
