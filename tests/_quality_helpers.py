"""Small helpers for the informative/uninformative tests: patches and export folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from napari_cem.curate import MANIFEST_COLUMNS
from napari_cem.export import patch_filename

LABELS_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "vnc_informative_labels.csv"


def textured_patch(rng, shape=(64, 64)) -> np.ndarray:
    """Cell-like: grey blobs separated by dark membranes (informative)."""
    from scipy import ndimage as ndi

    field = ndi.gaussian_filter(rng.normal(size=shape), 3)
    grad = np.hypot(*np.gradient(field))
    img = 150 + 30 * field / (np.abs(field).max() + 1e-9) - 900 * grad / (grad.max() + 1e-9) * (grad > np.percentile(grad, 80))
    img += rng.normal(0, 8, size=shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def uniform_patch(rng, shape=(64, 64)) -> np.ndarray:
    """Mostly flat (resin or padding) with faint noise (uninformative)."""
    img = np.full(shape, rng.integers(60, 200), np.float64) + rng.normal(0, 2, size=shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_export(folder, patches, source: str = "vol") -> list[str]:
    """An export folder (patches/ + manifest.csv) holding *patches*; returns their ids."""
    import tifffile

    folder = Path(folder)
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    rows, ids = [], []
    for i, p in enumerate(patches):
        h, w = p.shape
        name = patch_filename(source, "xy", i, 0, 0, h, w)
        tifffile.imwrite(folder / "patches" / name, p)
        ids.append(name[:-4])
        rows.append((source, "xy", i, 0, 0, h, w, f"{i:016x}", i, 1))
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return ids


def make_labelled_export(folder, n_inf: int = 16, n_uninf: int = 8, seed: int = 0, shape=(64, 64)):
    """(ids, y) of an export with textured (y=1) and uniform (y=0) patches, shuffled."""
    rng = np.random.default_rng(seed)
    kinds = np.array([1] * n_inf + [0] * n_uninf)
    rng.shuffle(kinds)
    patches = [textured_patch(rng, shape) if k else uniform_patch(rng, shape) for k in kinds]
    return write_export(folder, patches), kinds


def crop_labelled(stacks: dict, row: dict) -> np.ndarray:
    """The patch of one row of vnc_informative_labels.csv (outside the image: zero padding)."""
    from napari_cem.patches import crop_padded

    return crop_padded(stacks[row["stack"]][int(row["slice"])],
                       *(int(row[k]) for k in ("y", "x", "height", "width")))
