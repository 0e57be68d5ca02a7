"""Write curated patches: ``patches/`` of uint8 TIFFs and ``manifest.csv``.

Layout of an export folder::

    manifest.csv                  every patch of every finished source (MANIFEST_COLUMNS);
                                  rows with exemplar=1 have a file in patches/
    patches/<source>_<plane>_<slice>_y<y>_x<x>_<h>x<w>.tif   the kept exemplars, unresized
    .napari-cem/<source>.csv      the finished part of one source
    .napari-cem/<source>.json     its parameters, to skip it when the export is run again

Why in this order: a source's TIFFs are written first, then its part (atomically), then
manifest.csv is rebuilt from the finished parts (atomically). An export interrupted at any
point therefore never leaves a manifest naming a missing file, and running it again skips
the sources whose part matches the parameters.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from ._atomic import write_text_atomic
from ._names import check_name
from ._cancel import Cancelled
from .curate import MANIFEST_COLUMNS, CurationResult

__all__ = ["export_curated", "is_source_done", "patch_filename", "rebuild_manifest", "source_key",
           "read_manifest"]

STATE_DIR = ".napari-cem"


def source_key(source: str) -> str:
    """A file-name-safe form of a source name."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", str(source)).strip("-.")
    return key or "source"


def patch_filename(source: str, plane: str, slice_index: int, y: int, x: int, height: int, width: int) -> str:
    """The patch's file name in ``patches/``; ValueError for fields no export writes.

    The fields may come from a manifest someone else wrote, so the plane must be one of
    xy/xz/yz and the numbers whole and not negative: the name is always one plain component.
    """
    from .patches import PLANES

    if str(plane) not in PLANES:
        raise ValueError(f"plane {str(plane)!r} is not one of {', '.join(PLANES)}")
    numbers = {}
    for field, value in (("slice", slice_index), ("y", y), ("x", x), ("height", height), ("width", width)):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{field} {value!r} is not a whole number") from None
        if number < 0 or (field in ("height", "width") and number == 0):
            raise ValueError(f"{field} {number} is out of range")
        numbers[field] = number
    return check_name(f"{source_key(source)}_{plane}_{numbers['slice']:05d}_y{numbers['y']:05d}_"
                      f"x{numbers['x']:05d}_{numbers['height']}x{numbers['width']}.tif", "patch file name")


def _part_paths(out_dir: Path, source: str) -> tuple[Path, Path]:
    key = source_key(source)
    state = out_dir / STATE_DIR
    return state / f"{key}.csv", state / f"{key}.json"


def _done_record(result: CurationResult, fingerprint: dict | None) -> dict:
    return {"source": result.source, "params": result.params, "input": fingerprint or {},
            "n_patches": result.n_patches, "n_kept": result.n_kept}


def is_source_done(out_dir, source: str, params: dict | None, fingerprint: dict | None = None) -> bool:
    """True when *source* was fully exported to *out_dir* with the same parameters and input.

    ``params=None`` compares only the fingerprint (the batch CLI checks before reading).
    """
    part_csv, part_json = _part_paths(Path(out_dir), source)
    if not (part_csv.exists() and part_json.exists()):
        return False
    try:
        record = json.loads(part_json.read_text())
    except (OSError, ValueError):
        return False
    return (record.get("source") == source
            and (params is None or record.get("params") == params)
            and record.get("input", {}) == (fingerprint or {}))


def _iter_exemplar_patches(result: CurationResult, volume, should_stop):
    """(row index, raw patch) for every exemplar, reading the volume once."""
    from .patches import iter_patch_batches, plane_view

    keep = result.exemplar
    if isinstance(volume, np.ndarray):  # in memory: slice each exemplar directly
        views = {}
        for i in np.flatnonzero(keep):
            if should_stop is not None and i % 256 == 0 and should_stop():
                raise Cancelled("export was cancelled")
            p = result.provenance[i]
            plane = str(p["plane"])
            if plane not in views:
                views[plane] = plane_view(volume, plane)
            v = views[plane]
            y, x = int(p["y"]), int(p["x"])
            yield int(i), np.ascontiguousarray(
                v[int(p["slice"]), y:y + int(p["height"]), x:x + int(p["width"])])
        return
    # lazy: walk the patches in the tiler's order (the result's row order) with raw pixels
    params = result.params
    row = 0
    for batch in iter_patch_batches(volume, planes=tuple(params["planes"]),
                                    patch_size=params["patch_size"],
                                    min_fraction=params.get("min_fraction", 0.5),
                                    keep_raw=True, should_stop=should_stop):
        for j, raw in enumerate(batch.raw):
            if keep[row + j]:
                yield row + j, np.ascontiguousarray(raw)
        row += len(batch.raw)


def export_curated(result: CurationResult, volume, out_dir, *, fingerprint: dict | None = None,
                   progress=None, should_stop=None, skip_done: bool = True,
                   update_manifest: bool = True) -> dict:
    """Write the exemplars of *result* (cut from *volume*) and update manifest.csv.

    Returns a summary dict. ``fingerprint`` (for example the input file's size and mtime)
    is stored so that a changed input is exported again. Parallel workers pass
    ``update_manifest=False`` and let one process call rebuild_manifest.
    """
    import tifffile

    out_dir = Path(out_dir)
    if skip_done and is_source_done(out_dir, result.source, result.params, fingerprint):
        if update_manifest:
            rebuild_manifest(out_dir)
        return {"source": result.source, "skipped": True, "written": 0,
                "n_patches": result.n_patches, "n_kept": result.n_kept}
    patches_dir = out_dir / "patches"
    patches_dir.mkdir(parents=True, exist_ok=True)
    part_csv, part_json = _part_paths(out_dir, result.source)
    part_csv.parent.mkdir(parents=True, exist_ok=True)
    _remove_previous_files(out_dir, part_csv, part_json, update_manifest)
    _remove_orphan_patches(patches_dir, result.source)

    total = result.n_kept
    written = 0
    for i, patch in _iter_exemplar_patches(result, volume, should_stop):
        p = result.provenance[i]
        name = patch_filename(result.source, p["plane"], p["slice"], p["y"], p["x"], p["height"], p["width"])
        tifffile.imwrite(patches_dir / name, patch, photometric="minisblack")
        written += 1
        if progress is not None and (written % 64 == 0 or written == total):
            progress(written, total, "exporting")
        if should_stop is not None and written % 64 == 0 and should_stop():
            raise Cancelled("export was cancelled")
    if written != total:
        raise RuntimeError(f"wrote {written} of {total} exemplar patches of '{result.source}'")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(result.manifest_rows())
    write_text_atomic(part_csv, buf.getvalue())
    write_text_atomic(part_json, json.dumps(_done_record(result, fingerprint), indent=1))
    if update_manifest:
        rebuild_manifest(out_dir)
    return {"source": result.source, "skipped": False, "written": written,
            "n_patches": result.n_patches, "n_kept": result.n_kept}


def _remove_previous_files(out_dir: Path, part_csv: Path, part_json: Path, update_manifest: bool) -> None:
    """A source exported before with other parameters: drop its part, so that the manifest
    stops naming its old TIFFs before ``_remove_orphan_patches`` deletes them."""
    if part_json.exists():
        part_json.unlink()
    if not part_csv.exists():
        return
    part_csv.unlink()
    if update_manifest or (out_dir / "manifest.csv").exists():
        rebuild_manifest(out_dir)


def _remove_orphan_patches(patches_dir: Path, source: str) -> None:
    """Patch files of *source* left by an export that never finished (killed, disk full).

    Called when the source is exported (again): by then no finished part lists any file of
    it, so every file named like its patches is an orphan. The name pattern is exact
    (source key, plane, numbers), so another source's files never match.
    """
    pattern = re.compile(rf"^{re.escape(source_key(source))}_(xy|xz|yz)_\d{{5,}}_y\d{{5,}}_x\d{{5,}}_\d+x\d+\.tif$")
    for entry in os.scandir(patches_dir):
        if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def rebuild_manifest(out_dir) -> Path:
    """manifest.csv = header + every finished part, sources in name order (atomic)."""
    out_dir = Path(out_dir)
    state = out_dir / STATE_DIR
    parts = sorted(p for p in state.glob("*.csv") if p.with_suffix(".json").exists()) if state.exists() else []
    chunks = [",".join(MANIFEST_COLUMNS) + "\n"]
    chunks += [p.read_text() for p in parts]
    path = out_dir / "manifest.csv"
    write_text_atomic(path, "".join(chunks))
    return path


def read_manifest(path) -> list[dict]:
    """manifest.csv as a list of dicts with typed values (for tests and later steps)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    ints = {"slice", "y", "x", "height", "width", "group", "exemplar"}
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ints else v) for k, v in row.items()} for row in csv.DictReader(f)]
