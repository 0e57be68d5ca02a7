"""The patches to label and filter: the kept exemplars of a curation export or live result.

``PatchSet.from_export(folder)`` reads ``manifest.csv`` (rows with exemplar=1 have a file in
``patches/``); ``PatchSet.from_curation(result, volume)`` uses a live
``napari_cem.curate.CurationResult`` and the volume it was computed on. Either way a patch
is known by its id (its file name without ``.tif``), its manifest row and its pixels, read
on demand.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._names import check_patch_id, path_under
from ..curate import MANIFEST_COLUMNS

__all__ = ["PatchSet", "manifest_patch_ids", "patch_id"]


def patch_id(row: dict) -> str:
    """The id of a manifest row: its patch file name without ``.tif`` (ValueError if unsafe)."""
    from ..export import patch_filename

    name = patch_filename(row["source"], row["plane"], row["slice"], row["y"], row["x"],
                          row["height"], row["width"])
    return check_patch_id(name[:-len(".tif")])


def manifest_patch_ids(rows: list[dict], manifest) -> list[str]:
    """The patch id of every row of *manifest*, or ValueError naming the first bad line."""
    ids = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            ids.append(patch_id(row))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{manifest}, line {line}: {exc}. The manifest is damaged or was "
                             "edited by hand; nothing was read or written.") from None
    return ids


@dataclass
class PatchSet:
    """Patches with ids and manifest rows; pixels come from files or from a volume."""

    rows: list[dict]  # MANIFEST_COLUMNS, typed
    ids: list[str]
    folder: Path | None = None  # the export folder, when read from one
    volume: Any = None  # the volume, for a live curation result
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def description(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        sources = sorted({r["source"] for r in self.rows})
        return "live result of " + ", ".join(sources)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_export(cls, folder) -> PatchSet:
        """The exemplar patches of an export folder (``manifest.csv`` + ``patches/``)."""
        from ..export import read_manifest

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; choose the export folder that holds "
                             "manifest.csv and patches/")
        manifest = folder / "manifest.csv"
        if not manifest.exists():
            raise ValueError(f"{folder} has no manifest.csv, so it is not a napari-cem export folder. "
                             "Export curated patches first (Near-duplicates widget or 'napari-cem curate').")
        try:
            rows = read_manifest(manifest)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{manifest} could not be read as a napari-cem manifest ({exc})") from None
        if rows and not set(MANIFEST_COLUMNS) <= set(rows[0]):
            missing = sorted(set(MANIFEST_COLUMNS) - set(rows[0]))
            raise ValueError(f"{manifest} lacks the columns {', '.join(missing)}: not a napari-cem manifest")
        all_ids = manifest_patch_ids(rows, manifest)
        kept = [i for i, r in enumerate(rows) if int(r["exemplar"]) == 1]
        rows, ids = [rows[i] for i in kept], [all_ids[i] for i in kept]
        if not rows:
            raise ValueError(f"{manifest} lists no exported patch (no row with exemplar=1)")
        missing = [i for i in ids if not path_under(folder / "patches", f"{i}.tif", "patch file").exists()]
        if missing:
            raise ValueError(f"{len(missing)} of the {len(ids)} patches named in {manifest} are missing "
                             f"from {folder / 'patches'} (first: {missing[0]}.tif); export again")
        return cls(rows, ids, folder=folder)

    @classmethod
    def from_curation(cls, result, volume) -> PatchSet:
        """The exemplars of a live CurationResult, read from *volume* when needed."""
        rows = []
        for values in result.manifest_rows(only_exemplars=True):
            rows.append(dict(zip(MANIFEST_COLUMNS, values)))
        if not rows:
            raise ValueError("the curation result has no exemplar patch")
        return cls(rows, [patch_id(r) for r in rows], volume=volume)

    # -- pixels -------------------------------------------------------------------------
    def patch(self, index: int) -> np.ndarray:
        """The uint8 pixels of patch *index*, checked against the manifest's size."""
        index = int(index)
        if index in self._cache:
            return self._cache[index]
        row = self.rows[index]
        if self.volume is not None:
            from ..patches import read_patch

            pixels = np.asarray(read_patch(self.volume, row["plane"], row["slice"], row["y"], row["x"],
                                           row["height"], row["width"]))
        else:
            import tifffile

            path = self._file(index)
            try:
                pixels = tifffile.imread(path)
            except Exception as exc:  # noqa: BLE001 -- any reader failure is a damaged file
                raise ValueError(f"{path.name} could not be read as a TIFF ({exc})") from None
        pixels = np.ascontiguousarray(pixels)
        if pixels.dtype != np.uint8 or pixels.shape != (int(row["height"]), int(row["width"])):
            raise ValueError(f"patch {self.ids[index]} is {pixels.dtype} {pixels.shape[0]} x "
                             f"{pixels.shape[1] if pixels.ndim > 1 else ''} px but the manifest says uint8 "
                             f"{row['height']} x {row['width']}; the export folder is damaged, export again")
        if len(self._cache) < 20_000:
            self._cache[index] = pixels
        return pixels

    def _file(self, index: int) -> Path:
        return path_under(self.folder / "patches", f"{self.ids[index]}.tif", "patch file")

    def patches(self, indices=None) -> list[np.ndarray]:
        indices = range(len(self)) if indices is None else indices
        return [self.patch(i) for i in indices]

    def sizes(self) -> np.ndarray:
        return np.array([(int(r["height"]), int(r["width"])) for r in self.rows], int).reshape(-1, 2)

    def write_patch(self, index: int, dest: Path) -> None:
        """Write patch *index* as a TIFF at *dest* (a file copy when it came from a folder)."""
        if self.folder is not None:
            shutil.copyfile(self._file(index), dest)
        else:
            import tifffile

            tifffile.imwrite(dest, self.patch(index), photometric="minisblack")
