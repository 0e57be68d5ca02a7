"""Cut EM volumes into the CEM500K's 224 x 224 curation patches, with provenance.

The published method tiles every slice of the chosen planes from the top-left with no
overlap; an edge remainder of at least half a patch becomes a smaller patch (resized to
full size before hashing), a smaller one is dropped. Every patch carries its plane,
slice and (y, x, height, width) so it can be found again in the volume.

Lazy (dask, Zarr) volumes are read in slabs of consecutive slices sized by a byte
budget, so a volume far larger than memory can be tiled; numpy volumes take the same
path at no cost (their slabs are views).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ._cancel import Cancelled

__all__ = [
    "PLANES",
    "PROVENANCE_DTYPE",
    "Cancelled",
    "PatchBatch",
    "axis_starts",
    "count_patches",
    "crop_padded",
    "is_isotropic",
    "iter_patch_batches",
    "patch_grid",
    "plane_shape",
    "plane_view",
    "planes_for",
    "provenance_to_volume_coords",
    "read_patch",
]

PLANES = ("xy", "xz", "yz")
PROVENANCE_DTYPE = np.dtype(
    [
        ("plane", "U2"),
        ("slice", "i4"),
        ("y", "i4"),
        ("x", "i4"),
        ("height", "i4"),
        ("width", "i4"),
    ]
)
# Axis of the original (z, y, x) volume that each plane's slice index runs along.
_SLICE_AXIS = {"xy": 0, "xz": 1, "yz": 2}
# A chunk-aligned slab may exceed the byte budget by at most this factor (re-reading a
# chunk for every thin slab costs far more than a slightly bigger slab).
_CHUNK_SLACK = 4


# --------------------------------------------------------------------------- grid


def axis_starts(
    n: int, patch_size: int = 224, min_fraction: float = 0.5
) -> list[tuple[int, int]]:
    """(start, length) along one axis, the CEM500K rule.

    Full patches from 0 with no overlap; an edge remainder of at least
    min_fraction * patch_size (112 for 224) becomes a smaller patch, a smaller one is
    dropped. An axis shorter than a patch gives one patch of length n if n is at least
    min_fraction * patch_size, else none. This is the published rule; the original
    code's round(n / 224) differed only at exactly 112 px after an even number of full
    patches (dropped) and on axes under 112 px (one patch).
    """
    _check_geometry(patch_size, min_fraction)
    n = int(n)
    if n <= 0:
        return []
    full = n // patch_size
    out = [(i * patch_size, patch_size) for i in range(full)]
    rest = n - full * patch_size
    if rest > 0 and rest >= min_fraction * patch_size:
        out.append((full * patch_size, rest))
    return out


def patch_grid(
    height: int, width: int, patch_size: int = 224, min_fraction: float = 0.5
) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) of every patch of one slice, row-major (the order patches are yielded)."""
    rows = axis_starts(height, patch_size, min_fraction)
    cols = axis_starts(width, patch_size, min_fraction)
    return [(y, x, h, w) for y, h in rows for x, w in cols]


def _check_geometry(patch_size, min_fraction) -> None:
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(
            f"Patch size must be a positive whole number of pixels, not {patch_size!r}."
        )
    if not (0 < float(min_fraction) <= 1):
        raise ValueError(
            "The smallest edge patch must be a fraction in (0, 1] of a patch, "
            f"not {min_fraction!r}."
        )


# ------------------------------------------------------------------------- planes


def is_isotropic(voxel_size, tolerance: float = 0.2) -> bool:
    """True when the z spacing is within ``tolerance`` (relative) of the xy spacing.

    voxel_size is (z, y, x) in nm; xy spacing is the mean of y and x; exactly at the
    tolerance counts as isotropic. Unknown spacing (None, 2D, missing values) counts as
    anisotropic: xz/yz cuts through thick sections would add smeared patches.
    """
    if voxel_size is None:
        return False
    try:
        values = [float(v) for v in voxel_size]
    except (TypeError, ValueError):
        return False
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        return False
    z, y, x = values
    xy = (y + x) / 2.0
    # The epsilon keeps "exactly at the tolerance" on the inclusive side despite rounding.
    return abs(z - xy) / xy <= float(tolerance) + 1e-9


def planes_for(
    shape, voxel_size=None, planes="auto", tolerance: float = 0.2
) -> tuple[str, ...]:
    """The planes to cut: the paper slices isotropic volumes along all three, others xy.

    planes: "auto" (all three if isotropic, else xy), "all", one plane name, or an
    iterable of names (unknown names raise ValueError). A 2D shape always gives ("xy",).
    The result is in the canonical xy, xz, yz order without repeats.
    """
    ndim = len(tuple(shape))
    if ndim not in (2, 3):
        raise ValueError(f"Expected a 2D image or a 3D volume, got {ndim} dimensions.")
    if isinstance(planes, str):
        key = planes.strip().lower()
        if key == "auto":
            chosen: tuple[str, ...] = PLANES if is_isotropic(voxel_size, tolerance) else ("xy",)
        elif key == "all":
            chosen = PLANES
        elif key in PLANES:
            chosen = (key,)
        else:
            raise ValueError(
                f"Unknown planes option {planes!r}: use 'auto', 'all', or plane names "
                "'xy', 'xz', 'yz'."
            )
    else:
        names = _plane_list(planes)
        chosen = tuple(p for p in PLANES if p in names)
    return ("xy",) if ndim == 2 else chosen


def _check_plane(plane) -> str:
    name = plane.strip().lower() if isinstance(plane, str) else plane
    if name not in PLANES:
        raise ValueError(f"Unknown plane {plane!r}: use 'xy', 'xz' or 'yz'.")
    return name


def _plane_list(planes) -> tuple[str, ...]:
    """Validated plane names in the caller's order, repeats dropped."""
    if isinstance(planes, str):
        key = planes.strip().lower()
        if key == "all":
            return PLANES
        if key == "auto":
            raise ValueError(
                "'auto' needs the voxel size: choose the planes with planes_for first."
            )
        return (_check_plane(key),)
    if not isinstance(planes, Iterable):
        raise ValueError(f"Planes must be plane names such as ('xy', 'xz', 'yz'), not {planes!r}.")
    out: list[str] = []
    for plane in planes:
        name = _check_plane(plane)
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("No planes given: choose at least one of 'xy', 'xz', 'yz'.")
    return tuple(out)


def _shape3(shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(f"Expected a 2D image or a 3D volume, got shape {shape}.")


def plane_shape(shape, plane) -> tuple[int, int, int]:
    """(n_slices, rows, cols) of that plane view; a 2D shape is one xy slice."""
    z, y, x = _shape3(shape)
    return {"xy": (z, y, x), "xz": (y, z, x), "yz": (x, z, y)}[_check_plane(plane)]


def _is_dask(arr) -> bool:
    return type(arr).__module__.split(".")[0] == "dask"


def plane_view(volume, plane):
    """The volume (lazily) with the slice index of ``plane`` first.

    xy: (z, y, x) as is; xz: transpose(1, 0, 2), slice = y, rows = z, cols = x;
    yz: transpose(2, 0, 1), slice = x, rows = z, cols = y. 2D input is one xy slice.
    Other array-likes (Zarr, h5py) are wrapped in dask so nothing is read here.
    """
    plane = _check_plane(plane)
    if not isinstance(volume, np.ndarray) and not _is_dask(volume):
        if hasattr(volume, "shape") and hasattr(volume, "dtype"):
            import dask.array as da

            volume = da.from_array(volume)
        else:
            volume = np.asarray(volume)
    _shape3(volume.shape)
    if volume.ndim == 2:
        volume = volume[None]
    if plane == "xy":
        return volume
    if plane == "xz":
        return volume.transpose(1, 0, 2)
    return volume.transpose(2, 0, 1)


def count_patches(shape, planes, patch_size=224, min_fraction=0.5) -> int:
    """How many patches iter_patch_batches yields, for progress bars and estimates."""
    total = 0
    for plane in _plane_list(planes):
        n, rows, cols = plane_shape(shape, plane)
        total += (
            n
            * len(axis_starts(rows, patch_size, min_fraction))
            * len(axis_starts(cols, patch_size, min_fraction))
        )
    return total


# ------------------------------------------------------------------------ reading


def _to_numpy(block) -> np.ndarray:
    if _is_dask(block):
        block = block.compute()
    return np.asarray(block)


def _read_block(volume, plane, s0, s1, r0, r1, c0, c1) -> np.ndarray:
    """Slices s0:s1, rows r0:r1, cols c0:c1 of a plane, read as one numpy array.

    Indexes the original (z, y, x) volume directly so Zarr/h5py/dask read only that box.
    """
    s, r, c = slice(s0, s1), slice(r0, r1), slice(c0, c1)
    key = {"xy": (s, r, c), "xz": (r, s, c), "yz": (r, c, s)}[plane]
    if volume.ndim == 2:
        # One xy slice: the z key is always within 0:1 and is applied after reading.
        block = _to_numpy(volume[key[1], key[2]])[None][key[0]]
    else:
        block = _to_numpy(volume[key])
    if plane == "xz":
        block = block.transpose(1, 0, 2)
    elif plane == "yz":
        block = block.transpose(2, 0, 1)
    return block


def read_patch(volume, plane, slice_index, y, x, height, width) -> np.ndarray:
    """The raw (unresized) patch of one provenance row, read from the volume as numpy."""
    plane = _check_plane(plane)
    n, rows, cols = plane_shape(volume.shape, plane)
    slice_index, y, x, height, width = (int(v) for v in (slice_index, y, x, height, width))
    if not (
        0 <= slice_index < n
        and 0 <= y
        and 0 <= x
        and height > 0
        and width > 0
        and y + height <= rows
        and x + width <= cols
    ):
        raise ValueError(
            f"Patch {plane} slice {slice_index}, y {y}, x {x}, {height} x {width} lies "
            f"outside this volume ({n} slices of {rows} x {cols} in that plane); "
            "is it the same volume?"
        )
    return _read_block(volume, plane, slice_index, slice_index + 1, y, y + height, x, x + width)[0]


def crop_padded(image2d: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """The (height, width) window of a 2D image at (y, x); what lies outside the image is 0,
    as at a volume's border (labelled patches may overhang it)."""
    out = np.zeros((int(height), int(width)), image2d.dtype)
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + height, image2d.shape[0]), min(x + width, image2d.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = image2d[y0:y1, x0:x1]
    return out


def provenance_to_volume_coords(plane, slice_index, y, x) -> tuple[int, int, int]:
    """(z, y, x) voxel of a patch's top-left corner in the volume, to move the viewer there."""
    plane = _check_plane(plane)
    s, r, c = int(slice_index), int(y), int(x)
    if plane == "xy":
        return (s, r, c)
    if plane == "xz":
        return (r, s, c)
    return (r, c, s)


# ---------------------------------------------------------------------- batching


@dataclass
class PatchBatch:
    """A run of consecutive patches: square pixels for hashing, provenance to find them again.

    pixels: (N, patch_size, patch_size) uint8; partial edge patches resized like PIL's
    bilinear ``Image.resize`` (as the original code did before hashing).
    provenance: (N,) PROVENANCE_DTYPE in the plane's (rows, cols) coordinates; height and
    width are the true, unresized extent.
    raw: only with keep_raw=True, the unresized patches (full ones are views of pixels).
    """

    pixels: np.ndarray
    provenance: np.ndarray
    raw: list | None = None

    def __len__(self) -> int:
        return len(self.provenance)


def _resize(patch: np.ndarray, patch_size: int) -> np.ndarray:
    if patch.shape == (patch_size, patch_size):
        return patch
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(patch))
    return np.asarray(image.resize((patch_size, patch_size), Image.Resampling.BILINEAR))


def _chunk_along(volume, axis: int) -> int | None:
    """First chunk length along an axis (dask, Zarr, h5py), or None for in-memory data."""
    if volume.ndim != 3:
        return None
    try:
        chunks = getattr(volume, "chunks", None)
        if chunks is None:
            return None
        c = chunks[axis]
        if isinstance(c, tuple):  # dask: a tuple of chunk lengths per axis
            c = c[0]
        c = int(c)
    except (TypeError, IndexError, ValueError):
        return None
    return c if c > 1 else None


def _slab_depth(per_slice: int, n_max: int, chunk: int | None) -> int:
    """Slices per slab: fill the batch budget, rounded to whole chunks when that is cheap."""
    k = max(1, n_max // per_slice)
    if chunk:
        if k >= chunk:
            k = k // chunk * chunk
        elif chunk * per_slice <= _CHUNK_SLACK * n_max:
            k = chunk
    return k


def _blocks(n, rows, cols, n_max, chunk):
    """(s0, s1, band_rows): slabs of whole slices, or bands of patch rows of one slice
    when a single slice does not fit in the budget (huge 2D images)."""
    per_slice = len(rows) * len(cols)
    if per_slice <= n_max:
        k = _slab_depth(per_slice, n_max, chunk)
        for s0 in range(0, n, k):
            yield s0, min(n, s0 + k), rows
    else:
        band = max(1, n_max // len(cols))
        for s in range(n):
            for b in range(0, len(rows), band):
                yield s, s + 1, rows[b : b + band]


class _Grid:
    """One block's patch layout (rows of a band x columns), shared by all its slices."""

    def __init__(self, plane, band_rows, cols, patch_size):
        self.plane = plane
        self.ps = patch_size
        self.rows, self.cols = band_rows, cols
        self.r0 = band_rows[0][0]
        self.ny, self.nx = len(band_rows), len(cols)
        self.size = self.ny * self.nx
        # Full rows/columns precede the one partial row/column, if any.
        self.nyf = sum(1 for _, h in band_rows if h == patch_size)
        self.nxf = sum(1 for _, w in cols if w == patch_size)
        self.partial = [
            (i * self.nx + j, y - self.r0, h, x, w)
            for i, (y, h) in enumerate(band_rows)
            for j, (x, w) in enumerate(cols)
            if i >= self.nyf or j >= self.nxf
        ]
        prov = np.empty(self.size, PROVENANCE_DTYPE)
        prov["plane"] = plane
        prov["y"] = np.repeat([y for y, _ in band_rows], self.nx)
        prov["height"] = np.repeat([h for _, h in band_rows], self.nx)
        prov["x"] = np.tile([x for x, _ in cols], self.ny)
        prov["width"] = np.tile([w for _, w in cols], self.ny)
        self.prov = prov

    def cut(self, image, out, raw):
        """Write the patches of one slice (rows from r0) into out (size, ps, ps).

        Full patches come from one reshape, without a per-patch Python loop; only the
        partial edge patches go through PIL one by one.
        """
        ps, nyf, nxf = self.ps, self.nyf, self.nxf
        if nyf and nxf:
            grid = out.reshape(self.ny, self.nx, ps, ps)
            full = image[: nyf * ps, : nxf * ps].reshape(nyf, ps, nxf, ps)
            grid[:nyf, :nxf] = full.transpose(0, 2, 1, 3)
        for k, y, h, x, w in self.partial:
            patch = image[y : y + h, x : x + w]
            out[k] = _resize(patch, ps)
            if raw is not None:
                raw[k] = np.array(patch, np.uint8)


class _Batcher:
    """Fills batches of exactly n_max patches (the last one shorter) slice by slice, so
    memory is one batch buffer and batch boundaries do not depend on how the volume was
    read."""

    def __init__(self, n_max: int, patch_size: int, keep_raw: bool):
        self.n_max, self.ps, self.keep_raw = n_max, patch_size, keep_raw
        self.pix = self.prov = None  # allocated on first use, not while a batch is out
        self.raw: list = []
        self.fill = 0

    def add_slice(self, grid: _Grid, image: np.ndarray, slice_index: int):
        m = grid.size
        self._ensure()
        raw = [None] * m if self.keep_raw else None
        if self.n_max - self.fill >= m:
            grid.cut(image, self.pix[self.fill : self.fill + m], raw)
            pix = None
        else:  # straddles a batch boundary: cut aside, then copy in pieces
            pix = np.empty((m, self.ps, self.ps), np.uint8)
            grid.cut(image, pix, raw)
        done = 0
        while done < m:
            self._ensure()
            take = min(m - done, self.n_max - self.fill)
            dst = slice(self.fill, self.fill + take)
            if pix is not None:
                self.pix[dst] = pix[done : done + take]
            self.prov[dst] = grid.prov[done : done + take]
            self.prov["slice"][dst] = slice_index
            if raw is not None:
                self.raw.extend(raw[done : done + take])
            self.fill += take
            done += take
            if self.fill == self.n_max:
                yield self._emit()

    def _ensure(self):
        if self.pix is None:
            self.pix = np.empty((self.n_max, self.ps, self.ps), np.uint8)
            self.prov = np.empty(self.n_max, PROVENANCE_DTYPE)

    def finish(self):
        if self.fill:
            yield self._emit()

    def _emit(self) -> PatchBatch:
        n = self.fill
        pixels = self.pix if n == self.n_max else self.pix[:n].copy()
        prov = self.prov if n == self.n_max else self.prov[:n].copy()
        raw = None
        if self.keep_raw:  # full patches are unresized already: views of pixels
            raw = [pixels[i] if r is None else r for i, r in enumerate(self.raw)]
        self.pix = self.prov = None
        self.raw = []
        self.fill = 0
        return PatchBatch(pixels=pixels, provenance=prov, raw=raw)


def _check_volume(volume):
    if not (hasattr(volume, "shape") and hasattr(volume, "dtype")):
        volume = np.asarray(volume)
    if np.dtype(volume.dtype) != np.uint8:
        raise TypeError(
            "Patches are cut from 8-bit (uint8) data, but this volume is "
            f"{np.dtype(volume.dtype)}; standardise it first (napari_cem.io.standardize)."
        )
    if len(volume.shape) not in (2, 3):
        raise ValueError(
            f"Expected a 2D image or a 3D volume, got shape {tuple(volume.shape)}; "
            "choose one channel/time point first."
        )
    return volume


def iter_patch_batches(
    volume,
    *,
    planes=("xy",),
    patch_size=224,
    min_fraction=0.5,
    max_batch_bytes=64 * 2**20,
    keep_raw=False,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[PatchBatch]:
    """Patches in batches, in the order: for plane in planes, for slice in range(n),
    for (y, x, h, w) in patch_grid.

    volume: uint8 numpy, dask or Zarr array (2D or 3D). It is read in slabs of consecutive
    slices (for xz/yz on a zyx volume: vol[:, y0:y1, :] / vol[:, :, x0:x1]) sized so a
    slab's patches take about max_batch_bytes; memory stays near one batch plus one
    slab (patches are written straight into the batch buffer). Every batch holds
    max_batch_bytes // patch_size**2 patches except the last.
    should_stop() is polled before each slab; True raises Cancelled.
    """
    volume = _check_volume(volume)
    _check_geometry(patch_size, min_fraction)
    patch_size = int(patch_size)
    plane_names = _plane_list(planes)
    n_max = max(1, int(max_batch_bytes) // (patch_size * patch_size))
    batcher = _Batcher(n_max, patch_size, keep_raw)
    for plane in plane_names:
        n, n_rows, n_cols = plane_shape(volume.shape, plane)
        rows = axis_starts(n_rows, patch_size, min_fraction)
        cols = axis_starts(n_cols, patch_size, min_fraction)
        if n == 0 or not rows or not cols:
            continue
        c_end = cols[-1][0] + cols[-1][1]
        chunk = _chunk_along(volume, _SLICE_AXIS[plane])
        for s0, s1, band_rows in _blocks(n, rows, cols, n_max, chunk):
            if should_stop is not None and should_stop():
                raise Cancelled("patching was cancelled")
            grid = _Grid(plane, band_rows, cols, patch_size)
            r1 = band_rows[-1][0] + band_rows[-1][1]
            block = _read_block(volume, plane, s0, s1, grid.r0, r1, 0, c_end)
            for i in range(s1 - s0):
                yield from batcher.add_slice(grid, block[i], s0 + i)
            del block
    yield from batcher.finish()
