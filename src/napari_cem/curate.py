"""Find near-duplicate patches in one source (CEM500K's curation step, SPEC section 2).

A source (one volume or image) is cut into patches on its planes, every patch gets a dHash,
and patches within the Hamming cutoff are grouped; one exemplar per group is kept. The
hashes are kept in the result so a new cutoff regroups in milliseconds without re-hashing.
Qt-free: progress goes through a callback, cancelling through ``should_stop``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ._cancel import Cancelled
from ._progress import Progress, staged

__all__ = ["CurationResult", "Cancelled", "find_near_duplicates", "hash_volume", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ("source", "plane", "slice", "y", "x", "height", "width", "dhash", "group", "exemplar")

# progress(done, total, stage): stage is "hashing" or "grouping"


@dataclass
class CurationResult:
    """One row per patch: provenance, hash, group and exemplar flag, plus the parameters."""

    source: str
    shape: tuple
    provenance: np.ndarray  # patches.PROVENANCE_DTYPE
    hashes: np.ndarray  # uint64
    group: np.ndarray  # int64, 0..n_groups-1 in the order exemplars were chosen
    exemplar: np.ndarray  # bool
    params: dict = field(default_factory=dict)

    @property
    def n_patches(self) -> int:
        return len(self.hashes)

    @property
    def n_groups(self) -> int:
        return int(self.exemplar.sum())

    @property
    def n_kept(self) -> int:
        return self.n_groups

    @property
    def fraction_removed(self) -> float:
        return 0.0 if self.n_patches == 0 else 1.0 - self.n_kept / self.n_patches

    def summary(self) -> str:
        return (f"{self.n_patches:,} patches, {self.n_groups:,} groups, {self.n_kept:,} kept, "
                f"{100 * self.fraction_removed:.1f} % removed")

    def regroup(self, cutoff: int | None = None, grouping: str | None = None, seed: int | None = None,
                progress: Progress | None = None, should_stop=None) -> CurationResult:
        """The same hashes grouped with new parameters (no re-hashing)."""
        from .dedup import group_hashes

        params = dict(self.params)
        for key, value in (("cutoff", cutoff), ("grouping", grouping), ("seed", seed)):
            if value is not None:
                params[key] = value
        g = group_hashes(self.hashes, cutoff=int(params["cutoff"]), method=params["grouping"],
                         seed=int(params["seed"]), progress=staged(progress, "grouping"),
                         should_stop=should_stop)
        return CurationResult(self.source, self.shape, self.provenance, self.hashes,
                              g.group, g.exemplar, params)

    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.group, minlength=self.n_groups)

    def largest_groups(self, k: int = 10, max_members: int | None = None) -> list[np.ndarray]:
        """Row indices of the k largest groups (size > 1), exemplar first, then members."""
        if self.n_patches == 0:
            return []
        sizes = self.group_sizes()
        order = np.argsort(-sizes, kind="stable")
        order = order[sizes[order] > 1][:k]
        by_group = np.argsort(self.group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        out = []
        for g in order:
            rows = by_group[starts[g]:starts[g + 1]]
            rows = np.concatenate([rows[self.exemplar[rows]], rows[~self.exemplar[rows]]])
            out.append(rows if max_members is None else rows[:max_members])
        return out

    def rows_on_slice(self, plane: str, slice_index: int) -> np.ndarray:
        """Row indices of the patches cut from one slice of one plane (for the overlay)."""
        p = self.provenance
        return np.flatnonzero((p["plane"] == plane) & (p["slice"] == slice_index))

    def manifest_rows(self, only_exemplars: bool = False):
        """Rows for manifest.csv (MANIFEST_COLUMNS), dhash as 16 hex digits."""
        from .dedup import hashes_to_hex

        idx = np.flatnonzero(self.exemplar) if only_exemplars else np.arange(self.n_patches)
        p = self.provenance[idx]
        hexes = hashes_to_hex(self.hashes[idx])
        for i, row in enumerate(p):
            yield (self.source, str(row["plane"]), int(row["slice"]), int(row["y"]), int(row["x"]),
                   int(row["height"]), int(row["width"]), str(hexes[i]), int(self.group[idx[i]]),
                   int(bool(self.exemplar[idx[i]])))


def hash_volume(volume, *, planes=("xy",), patch_size: int = 224, min_fraction: float = 0.5,
                progress: Progress | None = None, should_stop=None):
    """(provenance, hashes) of every patch of *volume* (uint8 numpy/dask/zarr, 2D or 3D)."""
    from .dedup import dhash
    from .patches import PROVENANCE_DTYPE, count_patches, iter_patch_batches

    total = count_patches(volume.shape, planes, patch_size, min_fraction)
    provenance = np.empty(total, PROVENANCE_DTYPE)
    hashes = np.empty(total, np.uint64)
    done = 0
    last = 0.0
    for batch in iter_patch_batches(volume, planes=planes, patch_size=patch_size,
                                    min_fraction=min_fraction, should_stop=should_stop):
        n = len(batch.provenance)
        provenance[done:done + n] = batch.provenance
        hashes[done:done + n] = dhash(batch.pixels)
        done += n
        if should_stop is not None and should_stop():
            raise Cancelled("hashing was cancelled")
        now = time.perf_counter()
        if progress is not None and (now - last > 0.1 or done == total):
            progress(done, total, "hashing")
            last = now
    if done != total:  # the tiler and the counter must agree; anything else is a bug
        raise RuntimeError(f"expected {total} patches, got {done}")
    return provenance, hashes


def find_near_duplicates(volume, *, source: str = "volume", voxel_size=None, planes="auto",
                         patch_size: int = 224, cutoff: int = 12, grouping: str = "greedy",
                         seed: int = 0, tolerance: float = 0.2, min_fraction: float = 0.5,
                         progress: Progress | None = None, should_stop=None) -> CurationResult:
    """Hash every patch of *volume* and group near-duplicates (distance <= cutoff).

    Raises ValueError with a plain message for data that gives no patch, and Cancelled when
    ``should_stop()`` becomes true.
    """
    from .patches import count_patches, planes_for

    if getattr(volume, "dtype", None) != np.uint8:
        raise TypeError(f"curation needs 8-bit data; got {getattr(volume, 'dtype', type(volume))}. "
                        "Load it with napari_cem.io.read_volume, which standardises to uint8.")
    if volume.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got {volume.ndim} dimensions "
                         f"(shape {tuple(volume.shape)})")
    if int(patch_size) < 8:
        raise ValueError(f"patch size must be at least 8 pixels, got {patch_size}")
    if int(cutoff) < 0:
        raise ValueError(f"cutoff must be 0 or more, got {cutoff}")
    chosen = planes_for(volume.shape, voxel_size, planes, tolerance)
    if count_patches(volume.shape, chosen, patch_size, min_fraction) == 0:
        half = int(np.ceil(patch_size * min_fraction))
        raise ValueError(
            f"'{source}' ({' x '.join(map(str, volume.shape))} px) is smaller than half a patch "
            f"({half} px) in every plane: no patch to hash. Choose a smaller patch size.")
    provenance, hashes = hash_volume(volume, planes=chosen, patch_size=patch_size,
                                     min_fraction=min_fraction, progress=progress,
                                     should_stop=should_stop)
    params = {"patch_size": int(patch_size), "cutoff": int(cutoff), "grouping": grouping,
              "seed": int(seed), "planes": list(chosen), "min_fraction": float(min_fraction)}
    result = CurationResult(str(source), tuple(int(s) for s in volume.shape), provenance, hashes,
                            np.zeros(0, np.int64), np.zeros(0, bool), params)
    return result.regroup(progress=progress, should_stop=should_stop)
