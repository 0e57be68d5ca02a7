"""Deterministic synthetic EM-like volumes with ground truth.

The generator draws a small piece of a *world* that is defined in physical
space (nanometres) by the seed alone: neurites as a warped 3D Voronoi
tessellation, mitochondria as capsules with cristae inside the cells,
synaptic vesicle clusters next to the plasma membrane (with a postsynaptic
density opposite), single larger vesicles, resin-filled extracellular holes
and, now and then, the resin border of the section.  The volume samples the
world on its voxel grid, so

* the anisotropic (ssTEM-like) variant is the isotropic geometry sampled
  coarser in z (its label planes equal the isotropic planes at the same z),
* a smaller volume is a crop of a larger one with the same seed (labels),
* objects are continuous 3D objects across slices.

Image formation mimics TEM / FIB-SEM contrast of heavy-metal stained tissue:
membranes and organelles dark, cytoplasm mid-grey with a fine grainy texture,
resin bright; each z plane is a projection through a section of thickness
equal to the z voxel size (oblique membranes become wider and fainter), then
PSF blur, low-frequency illumination, section-to-section gain jitter and
Poisson-like noise.

Only ``numpy.random.default_rng`` (seeded per world tile and per purpose) and
an integer hash drive the randomness; big arrays use only IEEE-exact
arithmetic (+ - * / sqrt, no transcendental functions), so the bytes are
reproducible across runs and, as far as practical, across platforms.

Usage::

    from napari_cem.synthetic import make_em_volume
    vol = make_em_volume((32, 256, 256), seed=0)
    vol.image, vol.labels, vol.mito_instances, vol.voxel_size
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CLASS_NAMES", "SyntheticVolume", "make_em_volume"]

CLASS_NAMES: tuple[str, ...] = ("background", "membrane", "mitochondria", "vesicle")
BACKGROUND, MEMBRANE, MITOCHONDRIA, VESICLE = 0, 1, 2, 3

ISOTROPIC_VOXEL_NM = (8.0, 8.0, 8.0)
ANISOTROPIC_VOXEL_NM = (40.0, 8.0, 8.0)


@dataclass
class SyntheticVolume:
    """A synthetic EM volume (or 2D image) and its ground truth.

    ``image`` uint8; ``labels`` uint8 semantic classes (see ``class_names``);
    ``mito_instances`` uint32 instance ids of mitochondria (0 = none);
    ``voxel_size`` in nm, (z, y, x) or (y, x) for 2D; ``resin_mask`` bool,
    True where the section is empty resin (extracellular holes, section
    border; class 0 in ``labels``).
    """

    image: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    voxel_size: tuple[float, ...]
    mito_instances: np.ndarray = field(repr=False)
    resin_mask: np.ndarray | None = field(default=None, repr=False)
    class_names: tuple[str, ...] = CLASS_NAMES
    seed: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)

    @property
    def ndim(self) -> int:
        return self.image.ndim


# ----------------------------------------------------------------------------
# world parameters (nm)
# ----------------------------------------------------------------------------
_TILE = 1024.0  # world tile edge; randomness is drawn per tile
_CELL_RATE = 90.0  # candidate cell seeds per tile (thinned by a density field)
_DENS0, _DENS_K, _DENS_SPACING = 0.035, 1.5, 1000.0  # log-normal seed density
_WARP = ((800.0, 90.0), (320.0, 55.0), (130.0, 11.0))  # (spacing, amplitude)
_MEM_HALF = 7.5  # plasma membrane half thickness (label and dark line)
_GAP = 3.0  # membrane centre line offset from the cell outline
_ROUND = 55.0  # corner rounding of the cells (smooth minimum width)
_MITO_MARGIN = 14.0  # nm between a mitochondrion and the plasma membrane
_MITO_RATE = 4.0  # mean mitochondria per tissue cell of average size
_CLUSTER_P = 0.6  # probability that a tissue cell has a vesicle cluster
_MEAN_CELL_RADIUS = 330.0  # typical cell radius (for per-cell organelle counts)
_BIG_VESICLES = 0.4  # mean large single vesicles per average cell
_HOLE_P = 0.05  # probability that a cell is an empty (resin) hole
_DARK_P = 0.08  # probability that a tissue cell is a dark (glia-like) cell
_BORDER_THRESHOLD = 1.25  # resin border where the slow field exceeds this

# intensities on a 0..1 scale (standard EM contrast: stain = dark)
_I_CYTO = 0.70
_SPECK = 7.0  # nm, size of the dark cytoplasmic granules
_I_DARK_CELL = 0.47
_I_RESIN = 0.87
_I_MATRIX = 0.45
_I_LUMEN = 0.76

# textures (grey levels are 0-1 before the microscope; nm are physical sizes)
_GRAIN_NM = 5.5  # smoothing of the per-voxel fine grain
_GRAIN_TISSUE, _GRAIN_RESIN = 0.07, 0.006  # its amplitude in tissue / in resin
_MOTTLE_NM, _PATCH_NM, _PATCH_AMPLITUDE = 45.0, 160.0, 0.8  # smooth mottling and patchiness
_MOTTLE_TISSUE, _MOTTLE_RESIN = 0.03, 0.004
_SPECK_THRESHOLD, _SPECK_RAMP = 0.85, 0.75  # granule noise above this turns into dark specks
_SPECK_DEPTH, _SPECK_DARK_CELL = 0.5, 0.55  # how dark the specks are (in dark cells)
# microscope
_PSF_NM = 4.5  # in-plane blur (none along z for sections thicker than _SECTIONED_NM)
_SECTIONED_NM = 20  # z spacing from which the data is serial sections (ssTEM-like)
_ILLUMINATION_NM, _ILLUMINATION_AMPLITUDE = 2200.0, 0.035  # slow uneven illumination
_SECTION_GAIN = {False: 0.006, True: 0.025}  # per-slice gain jitter: block face / sections
_SECTION_OFFSET = {False: 0.003, True: 0.012}
_SHOT_NOISE, _DETECTOR_NOISE = 0.0012, 0.010  # variance per unit signal; detector std

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_OFF = 1 << 20  # keeps lattice / tile indices non-negative before hashing


# ----------------------------------------------------------------------------
# integer hashing and world-defined smooth noise
# ----------------------------------------------------------------------------
def _mix(*ints: int) -> int:
    """splitmix64-style mix of Python ints (exact, platform independent)."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 29
    return h


def _hash_u01(key: int, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 from integer lattice coordinates (vectorised)."""
    with np.errstate(over="ignore"):
        x = (
            (np.asarray(i, np.int64) + _OFF).astype(_U64) * _U64(0x9E3779B185EBCA87)
            ^ (np.asarray(j, np.int64) + _OFF).astype(_U64) * _U64(0xC2B2AE3D27D4EB4F)
            ^ (np.asarray(k, np.int64) + _OFF).astype(_U64) * _U64(0x165667B19E3779F9)
            ^ _U64(key)
        )
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        x = x ^ (x >> _U64(31))
    return (x >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# value noise with a cubic B-spline kernel, scaled to unit-ish std
_NOISE_GAIN = 5.0


def _bspline_weights(t: np.ndarray) -> tuple[np.ndarray, ...]:
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    return (
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    )


def _axis_taps(coords: np.ndarray, spacing: float):
    x = np.asarray(coords, np.float64) / spacing
    i = np.floor(x).astype(np.int64)
    w = _bspline_weights(x - i)
    lo = int(i.min()) - 1
    n = int(i.max()) + 3 - lo
    return i - 1 - lo, w, lo, n


def _noise_grid(key: int, cz, cy, cx, spacing: float, dtype=np.float32, out=None, scale=1.0):
    """Smooth noise evaluated on the tensor grid cz x cy x cx (nm).

    Separable 4-tap contraction with a fixed summation order, so the value at
    a grid point depends only on its coordinates (not on the grid extent).
    With ``out``, ``scale * noise`` is added to it.
    """
    iz, wz, lz, nz = _axis_taps(cz, spacing)
    iy, wy, ly, ny = _axis_taps(cy, spacing)
    ix, wx, lx, nx = _axis_taps(cx, spacing)
    a = np.arange(nz)[:, None, None] + lz
    b = np.arange(ny)[None, :, None] + ly
    c = np.arange(nx)[None, None, :] + lx
    v = ((_hash_u01(key, a, b, c) - 0.5) * (2.0 * _NOISE_GAIN * scale)).astype(dtype)
    g = wx[0].astype(dtype) * v[:, :, ix]
    for t in range(1, 4):
        g += wx[t].astype(dtype) * v[:, :, ix + t]
    h = wy[0].astype(dtype)[None, :, None] * g[:, iy, :]
    for t in range(1, 4):
        h += wy[t].astype(dtype)[None, :, None] * g[:, iy + t, :]
    if out is None:
        out = np.zeros((len(iz), h.shape[1], h.shape[2]), dtype)
    # last axis slice by slice (cache friendly); fixed order: ((((out + t0) + t1) + t2) + t3)
    w = [wz[t].astype(dtype) for t in range(4)]
    tmp = np.empty(h.shape[1:], dtype)
    for z in range(len(iz)):
        o = out[z]
        for t in range(4):
            np.multiply(h[iz[z] + t], w[t][z], out=tmp)
            o += tmp
    return out


def _noise_points(key: int, pts: np.ndarray, spacing: float) -> np.ndarray:
    """The same smooth noise evaluated at scattered points (N, 3) in nm."""
    pts = np.asarray(pts, np.float64).reshape(-1, 3)
    if len(pts) == 0:
        return np.zeros(0)
    x = pts / spacing
    i = np.floor(x).astype(np.int64)
    w = [np.stack(_bspline_weights(x[:, d] - i[:, d]), axis=1) for d in range(3)]
    lo = i.min(0) - 1
    n = i.max(0) + 3 - lo
    if int(np.prod(n)) <= 8 * len(pts) + 4096:
        # lattice block over the points' bounding box, then gather
        blk = _hash_u01(
            key,
            np.arange(n[0])[:, None, None] + lo[0],
            np.arange(n[1])[None, :, None] + lo[1],
            np.arange(n[2])[None, None, :] + lo[2],
        )
        j = i - lo
        t = np.arange(-1, 3)
        v = blk[
            (j[:, 0, None] + t)[:, :, None, None],
            (j[:, 1, None] + t)[:, None, :, None],
            (j[:, 2, None] + t)[:, None, None, :],
        ]
    else:
        t = np.arange(-1, 3)
        v = _hash_u01(
            key,
            (i[:, 0, None] + t)[:, :, None, None],
            (i[:, 1, None] + t)[:, None, :, None],
            (i[:, 2, None] + t)[:, None, None, :],
        )
    wz, wy, wx = w
    v = v[..., 0] * wx[:, None, None, 0] + v[..., 1] * wx[:, None, None, 1] + (
        v[..., 2] * wx[:, None, None, 2] + v[..., 3] * wx[:, None, None, 3]
    )
    v = v[..., 0] * wy[:, None, 0] + v[..., 1] * wy[:, None, 1] + (
        v[..., 2] * wy[:, None, 2] + v[..., 3] * wy[:, None, 3]
    )
    v = v[:, 0] * wz[:, 0] + v[:, 1] * wz[:, 1] + (v[:, 2] * wz[:, 2] + v[:, 3] * wz[:, 3])
    return (v - 0.5) * (2.0 * _NOISE_GAIN)


def _warp_points(seed_key: int, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 3)
    q = pts.copy()
    for o, (spacing, amp) in enumerate(_WARP):
        for d in range(3):
            q[:, d] += amp * _noise_points(_mix(seed_key, 10 + o, d), pts, spacing)
    return q


def _bump(x):
    """Smooth compact bump (1 - x^2)^3 on |x| < 1 (polynomial, IEEE exact)."""
    y = np.clip(1.0 - x * x, 0.0, None)
    return y * y * y


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ----------------------------------------------------------------------------
# the world: cells, mitochondria, vesicles
# ----------------------------------------------------------------------------
class _World:
    """Objects of the world near a physical box [0, extent) (nm).

    Randomness is drawn per world tile (cells) and per cell (organelles) from
    ``default_rng([seed, purpose, tile..., cell])`` streams, so an object only
    depends on the seed and on its neighbourhood, not on the volume's extent.
    """

    def __init__(self, seed: int, extent, mito_density: float):
        from scipy.spatial import cKDTree

        self.seed = int(seed) & _MASK64
        self.key = _mix(self.seed, 0x5EED)
        ext = np.asarray(extent, np.float64)
        t_lo = np.zeros(3, int)
        t_hi = np.maximum(np.floor((ext - 1e-6) / _TILE).astype(int), 0)
        self._make_cells(t_lo - 2, t_hi + 2)
        # Voronoi in warped space: voxels are warped, seeds are not
        self.tree = cKDTree(self.seeds)
        # cells whose organelles may reach into the volume (a per-cell, world-
        # consistent criterion: seed close enough to the box for its size)
        d7, _ = self.tree.query(self.seeds, k=7)
        self.size = 0.5 * d7[:, 1:].mean(1)  # rough cell radius
        gap = np.maximum(np.maximum(-self.seeds, self.seeds - ext), 0.0)
        near = np.sqrt((gap * gap).sum(1)) <= 2.0 * self.size + 300.0
        inner = np.all((self.tile >= t_lo - 1) & (self.tile <= t_hi + 1), axis=1)
        self.inner = inner & near
        self.mitos = self._make_mitos(mito_density)
        self.vesicles, self.psds = self._make_vesicles()

    def _rng(self, purpose: int, c: int) -> np.random.Generator:
        t = self.tile[c]
        tile = [int(v) + _OFF for v in t]
        return np.random.default_rng([self.seed, purpose, *tile, int(self.local[c])])

    # -- cells ---------------------------------------------------------------
    def _make_cells(self, lo, hi):
        seeds, tiles, base, kind, local = [], [], [], [], []
        dens_key = _mix(self.key, 1)
        for tz in range(lo[0], hi[0] + 1):
            for ty in range(lo[1], hi[1] + 1):
                for tx in range(lo[2], hi[2] + 1):
                    rng = np.random.default_rng([self.seed, 1, tz + _OFF, ty + _OFF, tx + _OFF])
                    n = int(rng.poisson(_CELL_RATE))
                    p = (np.array([tz, ty, tx], np.float64) + rng.random((n, 3))) * _TILE
                    u = rng.random(n)
                    b = rng.normal(0.0, 1.0, n)
                    r = rng.random(n)
                    # log-normal local cell density: bundles of thin neurites
                    # next to large profiles
                    dn = np.clip(_noise_points(dens_key, p, _DENS_SPACING), -1.0, 3.0)
                    keep = u < np.minimum(1.0, _DENS0 * np.exp(_DENS_K * dn))
                    k = int(keep.sum())
                    seeds.append(p[keep])
                    tiles.append(np.repeat(np.array([[tz, ty, tx]]), k, axis=0))
                    base.append(b[keep])
                    kind.append(r[keep])
                    local.append(np.arange(k))
        self.seeds = np.concatenate(seeds).reshape(-1, 3)
        self.tile = np.concatenate(tiles).reshape(-1, 3)
        self.local = np.concatenate(local)
        b = np.concatenate(base)
        r = np.concatenate(kind)
        border = _noise_points(_mix(self.key, 2), self.seeds, 2600.0) > _BORDER_THRESHOLD
        self.resin = border | (r < _HOLE_P)
        self.dark = (~self.resin) & (r > 1.0 - _DARK_P)
        self.base = np.where(
            self.resin, _I_RESIN, np.where(self.dark, _I_DARK_CELL, _I_CYTO)
        ) + np.where(self.resin, 0.004, 0.03) * np.clip(b, -2.5, 2.5)

    def locate(self, pts: np.ndarray, k: int = 6):
        """Host cell, distance (nm, approx.) to its boundary and the boundary's
        outward normal, for points (N, 3)."""
        pts = np.asarray(pts, np.float64).reshape(-1, 3)
        if len(pts) == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3))
        q = _warp_points(self.key, pts)
        d, i = self.tree.query(q, k=k)
        s1 = self.seeds[i[:, 0]]
        best = np.full(len(pts), np.inf)
        normal = np.zeros((len(pts), 3))
        for j in range(1, k):
            diff = self.seeds[i[:, j]] - s1
            dist = np.sqrt((diff * diff).sum(1))
            f = (d[:, j] ** 2 - d[:, 0] ** 2) / (2.0 * dist)
            better = f < best
            best = np.where(better, f, best)
            normal[better] = diff[better] / dist[better, None]
        return i[:, 0], best, normal

    # -- mitochondria ----------------------------------------------------------
    def _make_mitos(self, mito_density):
        """Capsules inside the cells: the centre is the roomiest of a few random
        points of the cell, the radius is limited by the room there and the axis
        is the candidate direction with the longest room (up to the drawn
        length), so mitochondria fill thin neurites and never cross membranes."""
        cells = np.flatnonzero(self.inner & ~self.resin)
        if mito_density <= 0 or len(cells) == 0:
            return []
        n_c, n_a, n_s = 10, 8, 6  # centre candidates, axes, samples per half axis
        draws = self._mito_draws(cells, mito_density, n_c, n_a)
        if not draws:
            return []
        picks = self._mito_centres(draws, n_c)
        if not picks:
            return []
        return self._mito_axes(picks, n_a, n_s)

    def _mito_draws(self, cells, mito_density, n_c: int, n_a: int) -> list:
        """Per cell (its own random stream): how many mitochondria, their candidate centres,
        radii, wanted half lengths and candidate axes."""
        size = self.size[cells]
        mean_v = _MEAN_CELL_RADIUS**3
        draws = []
        for c, sz in zip(cells, size):
            rng = self._rng(2, c)
            lam = mito_density * _MITO_RATE * min(sz**3 / mean_v, 10.0)
            if self.dark[c]:
                lam *= 0.4
            n = int(rng.poisson(lam))
            if n == 0:
                continue
            off = rng.normal(size=(n, n_c, 3))
            off *= (sz * rng.uniform(0.0, 1.0, (n, n_c)) / np.sqrt((off * off).sum(-1)))[..., None]
            rad = rng.uniform(75.0, 165.0, n)
            length = rad * rng.uniform(0.3, 4.5, n) ** 1.2  # wanted half length
            ax = rng.normal(size=(n, n_a, 3))
            ax /= np.sqrt((ax * ax).sum(-1, keepdims=True))
            draws.append((int(c), self.seeds[c] + off, rad, length, ax))
        return draws

    def _mito_centres(self, draws, n_c: int) -> list:
        """Phase 1: per cell, in turn, the roomiest centre candidate that keeps clear of the
        mitochondria already chosen."""
        host, f, _ = self.locate(np.concatenate([d[1].reshape(-1, 3) for d in draws]))
        pos = 0
        picks = []
        for c, cen, rad, length, ax in draws:
            n = len(rad)
            h = host[pos : pos + n * n_c].reshape(n, n_c)
            ff = np.where(h == c, f[pos : pos + n * n_c].reshape(n, n_c), -np.inf)
            pos += n * n_c
            # squeezed where the neurite is thin (see the renderer)
            rr = np.minimum(rad[:, None], 1.6 * (ff - 12.0))
            chosen_c, chosen_r = [], []
            sel = np.zeros(n, bool)
            best_c = np.zeros((n, 3))
            best_r = np.zeros(n)
            for i in range(n):
                for j in np.argsort(-rr[i], kind="stable"):
                    if not rr[i, j] >= 55.0:
                        break
                    p = cen[i, j]
                    if all(np.sqrt(((p - q) ** 2).sum()) >= rr[i, j] + rq + 15.0
                           for q, rq in zip(chosen_c, chosen_r)):
                        chosen_c.append(p)
                        chosen_r.append(rr[i, j])
                        sel[i] = True
                        best_c[i] = p
                        best_r[i] = rr[i, j]
                        break
            if sel.any():
                picks.append((c, best_c[sel], best_r[sel], length[sel], ax[sel]))
        return picks

    def _mito_axes(self, picks, n_a: int, n_s: int) -> list:
        """Phase 2: the axis with the most room along it, shortened until it clears the
        mitochondria already placed."""
        ts = np.arange(1, n_s + 1) / n_s
        pts = []
        for c, cen, r, length, ax in picks:
            steps = length[:, None, None] * np.concatenate([ts, -ts])[None, None, :]  # (n, 1, 2ns)
            pts.append((cen[:, None, None, :] + steps[..., None] * ax[:, :, None, :]).reshape(-1, 3))
        host, f, _ = self.locate(np.concatenate(pts))
        pos = 0
        mitos = []
        for c, cen, r, length, ax in picks:
            n = len(r)
            m = n * n_a * 2 * n_s
            ok = (host[pos : pos + m] == c).reshape(n, n_a, 2, n_s)
            ok &= f[pos : pos + m].reshape(n, n_a, 2, n_s) >= 0.5 * r[:, None, None, None] + 12.0
            pos += m
            ext = np.cumprod(ok[:, :, 0] & ok[:, :, 1], axis=-1).sum(-1)  # (n, n_a)
            placed = []
            for i in range(n):
                j = int(np.argmax(ext[i]))
                # as long as there is room and no clash with the others
                for e in range(int(ext[i, j]), -1, -1):
                    hl = float(length[i] * e / n_s)
                    segs = cen[i] + (hl * np.linspace(-1.0, 1.0, 7))[:, None] * ax[i, j]
                    if not any(
                        np.sqrt(((segs[:, None, :] - ps[None]) ** 2).sum(-1)).min() < r[i] + pr + 15.0
                        for ps, pr in placed
                    ):
                        break
                else:
                    continue
                placed.append((segs, float(r[i])))
                mitos.append(dict(cell=c, c=cen[i].copy(), a=ax[i, j].copy(), h=hl,
                                  r=float(r[i]), stream=(c, i)))
        return mitos

    # -- vesicles --------------------------------------------------------------
    def _make_vesicles(self):
        """Synaptic vesicle clusters next to the plasma membrane (with a
        postsynaptic density across it) and single larger vesicles."""
        cells = np.flatnonzero(self.inner & ~self.resin & ~self.dark)
        mitos_of: dict[int, list] = {}
        for m in self.mitos:
            mitos_of.setdefault(m["cell"], []).append(m)
        n_cc = 16
        draws = self._vesicle_draws(cells, n_cc)
        centres, psds = self._cluster_centres(draws, n_cc)
        cand_c, cand_r, owner = [], [], []
        for c, _, _, _, vr, vd, bp, br in draws:
            if c in centres:
                cand_c.append(centres[c] + vd)
                cand_r.append(vr)
                owner.append(np.full(len(vr), c))
            cand_c.append(bp)
            cand_r.append(br)
            owner.append(np.full(len(br), c))
        empty = (np.zeros((0, 3)), np.zeros(0))
        if not cand_c:
            return empty, psds
        pts = np.concatenate(cand_c)
        rad = np.concatenate(cand_r)
        own = np.concatenate(owner)
        if len(pts) == 0:
            return empty, psds
        host, f, _ = self.locate(pts)
        ok = (host == own) & (f >= rad + 10.0)
        for c, ms in mitos_of.items():
            sel = np.flatnonzero(own == c)
            for m in ms:
                rel = pts[sel] - m["c"]
                u = np.clip(rel @ m["a"], -m["h"], m["h"])
                dd = np.sqrt(((rel - u[:, None] * m["a"]) ** 2).sum(1))
                ok[sel] &= dd >= m["r"] + rad[sel] + 15.0
        keep = _first_without_overlap(pts, rad, own, ok)
        return (pts[keep], rad[keep]), psds

    def _vesicle_draws(self, cells, n_cc: int) -> list:
        """Per cell (its own random stream): whether it has a cluster, candidate cluster
        centres, the cluster's radius and vesicles, and its single large vesicles."""
        draws = []
        for c in cells:
            rng = self._rng(4, c)
            sz = self.size[c]
            has_cluster = bool(rng.random() < _CLUSTER_P) and sz > 150.0
            pc = rng.normal(size=(n_cc, 3))
            pc *= (sz * rng.uniform(0.5, 1.5, n_cc) / np.sqrt((pc * pc).sum(1)))[:, None]
            pc += self.seeds[c]
            rc = rng.uniform(140.0, 270.0)
            nv = int(1.2 * (rc / 23.5) ** 3)
            vr = rng.uniform(19.0, 28.0, nv)
            vd = rng.normal(size=(nv, 3))
            vd *= (rc * rng.random(nv) ** (1 / 3) / np.sqrt((vd * vd).sum(1)))[:, None]
            nb = int(rng.poisson(_BIG_VESICLES * min((sz / _MEAN_CELL_RADIUS) ** 3, 4.0)))
            bp = rng.normal(size=(nb, 3))
            bp *= (sz * rng.uniform(0.0, 1.3, nb) / np.sqrt((bp * bp).sum(1)))[:, None]
            bp += self.seeds[c]
            br = rng.uniform(32.0, 58.0, nb)
            draws.append((int(c), has_cluster, pc, rc, vr, vd, bp, br))
        return draws

    def _cluster_centres(self, draws, n_cc: int):
        """({cell: cluster centre}, postsynaptic densities): the first candidate inside the
        cell, close to its plasma membrane, and the density across the membrane from it."""
        cl = [d for d in draws if d[1]]
        centres, psds = {}, []
        if cl:
            host, f, nrm = self.locate(np.concatenate([d[2] for d in cl]))
            for j, d in enumerate(cl):
                sl = slice(n_cc * j, n_cc * (j + 1))
                good = np.flatnonzero((host[sl] == d[0]) & (f[sl] > 0.45 * d[3]) & (f[sl] < 0.8 * d[3]))
                if len(good):
                    g = good[0]
                    centres[d[0]] = d[2][g]
                    psds.append(dict(cell=d[0], p=d[2][g] + nrm[sl][g] * f[sl][g], r=0.6 * d[3]))
        return centres, psds


def _first_without_overlap(pts, rad, own, ok) -> np.ndarray:
    """Greedy non-overlap in candidate order (per cell, via a pair search): the vesicles
    kept among those *ok*."""
    from scipy.spatial import cKDTree

    idx = np.flatnonzero(ok)
    keep = np.zeros(len(pts), bool)
    if len(idx):
        sub, srad, sown = pts[idx], rad[idx], own[idx]
        pairs = cKDTree(sub).query_pairs(2.0 * float(srad.max()) + 4.0, output_type="ndarray")
        if len(pairs):
            i0, i1 = pairs.min(1), pairs.max(1)
            dd = np.sqrt(((sub[i0] - sub[i1]) ** 2).sum(1))
            bad = (dd < srad[i0] + srad[i1] + 4.0) & (sown[i0] == sown[i1])
            i0, i1 = i0[bad], i1[bad]
            order = np.lexsort((i0, i1))
            i0, i1 = i0[order], i1[order]
        else:
            i0 = i1 = np.zeros(0, np.int64)
        starts = np.searchsorted(i1, np.arange(len(idx) + 1))
        kept = np.zeros(len(idx), bool)
        for i in range(len(idx)):
            s0, s1 = starts[i], starts[i + 1]
            if s0 == s1 or not kept[i0[s0:s1]].any():
                kept[i] = True
        keep[idx[kept]] = True
    return keep


# ----------------------------------------------------------------------------
# rendering on the voxel grid
# ----------------------------------------------------------------------------
def _box(center, half, coords):
    """Index slices of the grid box around ``center`` +- ``half`` (nm)."""
    sl = []
    for d in range(3):
        c = coords[d]
        lo = int(np.searchsorted(c, center[d] - half[d], side="left"))
        hi = int(np.searchsorted(c, center[d] + half[d], side="right"))
        if hi <= lo:
            return None
        sl.append(slice(lo, hi))
    return tuple(sl)


def _filtered_noise_gain(sigmas, truncate: float) -> float:
    """1 / std of unit white noise after scipy's gaussian_filter (exact, scalar math)."""
    import math

    var = 1.0
    for sigma in sigmas:
        radius = int(truncate * float(sigma) + 0.5)
        if sigma <= 0 or radius == 0:
            continue
        k = [math.exp(-0.5 * (x / sigma) ** 2) for x in range(-radius, radius + 1)]
        tot = math.fsum(k)
        var *= math.fsum((v / tot) ** 2 for v in k)
    return 1.0 / math.sqrt(var)


def _render(world: _World, shape, voxel, rng, noise: float):
    """(uint8 image, labels, mitochondrion instances, resin mask) of *world* sampled on a
    grid of *shape* voxels of *voxel* nm: cells, textures, cytoplasm, membranes, organelles,
    then the microscope. The stages draw from *rng* in this order."""
    nz, ny, nx = shape
    vz, vy, vx = voxel
    cz = (np.arange(nz) + 0.5) * vz
    cy = (np.arange(ny) + 0.5) * vy
    cx = (np.arange(nx) + 0.5) * vx
    coords = (cz, cy, cx)
    thick = float(vz)  # section thickness = z sampling
    cell, bdist, mem_nz, other = _cells(world, shape, coords)
    resin_cell = world.resin[cell]
    has_mem = ~(resin_cell & world.resin[other])
    del other
    fine, gran, mott = _textures(world.key, shape, voxel, coords, rng)
    img, gspk, gran_gap = _cytoplasm(world, cell, resin_cell, fine, gran, mott, thick)
    del gran
    labels = np.zeros(shape, np.uint8)
    _membranes(world, shape, coords, thick, cell, bdist, mem_nz, has_mem, resin_cell, fine,
               mott, gran_gap, img, labels)
    del mem_nz, gran_gap
    inst = _mitochondria(world, shape, coords, thick, cell, bdist, fine, mott, gspk, img, labels)
    _vesicles(world, coords, thick, fine, img, labels)
    del fine, mott, bdist, has_mem, gspk
    resin_mask = resin_cell & (labels == BACKGROUND)
    del resin_cell, cell
    return _microscope(img, shape, voxel, coords, world.key, rng, noise), labels, inst, resin_mask


def _cells(world: _World, shape, coords):
    """Warped Voronoi cells with rounded corners, in slabs of about a million voxels: (cell
    id, distance to the rounded outline, |z| of the outline normal, the cell across the
    nearest face)."""
    nz, ny, nx = shape
    cz, cy, cx = coords
    key = world.key
    cell = np.empty(shape, np.int32)
    bdist = np.empty(shape, np.float32)  # distance to the rounded cell outline
    mem_nz = np.empty(shape, np.float32)  # |z component| of the outline normal
    other = np.empty(shape, np.int32)  # cell across the nearest face
    chunk = max(1, int(1_000_000 // (ny * nx)))
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        zc = cz[z0:z1]
        q = np.empty((z1 - z0, ny, nx, 3), np.float64)
        q[..., 0] = zc[:, None, None]
        q[..., 1] = yy
        q[..., 2] = xx
        warp = np.zeros((z1 - z0, ny, nx), np.float32)
        for d in range(3):
            warp[...] = 0.0
            for o, (spacing, amp) in enumerate(_WARP):
                _noise_grid(_mix(key, 10 + o, d), zc, cy, cx, spacing, out=warp, scale=amp)
            q[..., d] += warp
        del warp
        q = q.reshape(-1, 3)
        d, i = world.tree.query(q, k=3, workers=-1)
        del q
        d0 = d[:, 0] * d[:, 0]
        sz0, sy0, sx0 = (world.seeds[:, a][i[:, 0]] for a in range(3))
        fs, ns = [], []
        for j in (1, 2):
            dz = world.seeds[:, 0][i[:, j]] - sz0
            dy = world.seeds[:, 1][i[:, j]] - sy0
            dx = world.seeds[:, 2][i[:, j]] - sx0
            dist = np.sqrt(dz * dz + dy * dy + dx * dx)
            dj = d[:, j]
            fs.append((dj * dj - d0) / (2.0 * dist))
            ns.append(np.abs(dz) / dist)
            del dz, dy, dx, dist, dj
        del sz0, sy0, sx0
        first = fs[0] <= fs[1]
        # polynomial smooth minimum of the two nearest faces: rounded corners,
        # leaving small extracellular gaps where three cells meet
        hk = np.clip(_ROUND - np.abs(fs[0] - fs[1]), 0.0, None) * (1.0 / _ROUND)
        g = np.minimum(fs[0], fs[1]) - hk * hk * (_ROUND / 4.0)
        sl = slice(z0, z1)
        sh = (z1 - z0, ny, nx)
        cell[sl] = i[:, 0].reshape(sh)
        bdist[sl] = g.reshape(sh)
        mem_nz[sl] = np.where(first, ns[0], ns[1]).reshape(sh)
        other[sl] = np.where(first, i[:, 1], i[:, 2]).reshape(sh)
        del d, i, d0, fs, ns, first, hk, g
    return cell, bdist, mem_nz, other


def _textures(key, shape, voxel, coords, rng):
    """(fine grain, coarse granules, mottling): the noise the cytoplasm is made of."""
    from scipy import ndimage as ndi

    cz, cy, cx = coords
    f32 = np.float32
    # fine grain (ribosomes, stain granules): per voxel, so sections differ
    fine = rng.standard_normal(shape, dtype=np.float32)
    # (no smoothing along singleton axes, e.g. the z of a 2D image)
    sig_f = tuple(_GRAIN_NM / v if n > 1 else 0.0 for v, n in zip(voxel, shape))
    fine = ndi.gaussian_filter(fine, sig_f, mode="reflect", truncate=3.0)
    # granules: a coarser version of the same noise (cascaded filter)
    sig_s = tuple(_SPECK / v if n > 1 else 0.0 for v, n in zip(voxel, shape))
    sig_g = tuple(float(np.sqrt(max(a * a - b * b, 0.0))) for a, b in zip(sig_s, sig_f))
    gran = ndi.gaussian_filter(fine, sig_g, mode="reflect", truncate=3.0)
    gran *= f32(_filtered_noise_gain(sig_s, 3.0))
    fine *= f32(_filtered_noise_gain(sig_f, 3.0))
    # mottling and patchiness: world-defined smooth noise
    mott = _noise_grid(_mix(key, 21), cz, cy, cx, _MOTTLE_NM)
    _noise_grid(_mix(key, 22), cz, cy, cx, _PATCH_NM, out=mott, scale=_PATCH_AMPLITUDE)
    return fine, gran, mott


def _cytoplasm(world: _World, cell, resin_cell, fine, gran, mott, thick: float):
    """(image of cytoplasm and resin, dark specks, the granules before the specks were cut
    from them): cell grey levels with grain, mottling and specks."""
    f32 = np.float32
    dark = world.dark[cell]
    tissue = ~resin_cell
    img = world.base.astype(f32)[cell]
    # thick sections average the granules of several layers: less contrast
    proj = f32(min(1.0, (8.0 / thick) ** 0.3))
    img += np.where(tissue, f32(_GRAIN_TISSUE) * proj, f32(_GRAIN_RESIN)) * fine
    img += np.where(tissue, f32(_MOTTLE_TISSUE), f32(_MOTTLE_RESIN)) * mott
    # dark specks (ribosomes, stain granules)
    gran_gap = gran.copy()
    gran -= f32(_SPECK_THRESHOLD)
    gran *= f32(1.0 / _SPECK_RAMP)
    gran = _smoothstep(gran)
    gran *= np.where(tissue, np.where(dark, f32(_SPECK_DARK_CELL), f32(_SPECK_DEPTH)) * proj, f32(0.0))
    img -= gran
    gspk = gran
    del gran
    return img, gspk, gran_gap


def _membranes(world: _World, shape, coords, thick: float, cell, bdist, mem_nz, has_mem,
               resin_cell, fine, mott, gran_gap, img, labels) -> None:
    """Darken the plasma membranes, the extracellular gaps and the postsynaptic densities
    into *img* and label the membranes, in place."""
    cz, cy, cx = coords
    key = world.key
    f32 = np.float32
    t_half = _noise_grid(_mix(key, 20), cz, cy, cx, 300.0)
    np.clip(t_half, -3.0, 3.0, out=t_half)
    t_half *= f32(0.08 * _MEM_HALF)
    t_half += f32(_MEM_HALF)
    mem_lab = has_mem & (bdist < f32(_GAP) + t_half)
    # projection through the section widens and fades oblique membranes
    tn = f32(thick) * mem_nz
    t_eff = np.sqrt(t_half * t_half + tn * tn * f32(1.0 / 3.0))
    del tn
    amp = f32(0.86) * t_half / t_eff
    dgap = bdist - f32(_GAP)
    darkening = amp * _bump(dgap / (f32(1.5) * t_eff))
    # extracellular gaps where cells meet: dark, fibrous
    gapd = f32(0.45) + f32(0.08) * fine + f32(0.05) * mott + f32(0.12) * np.clip(gran_gap, -1.5, 1.5)
    darkening = np.where(dgap < 0, np.maximum(darkening, gapd), darkening)
    darkening *= has_mem
    del t_eff, amp, dgap, t_half, gapd

    # postsynaptic densities: a thick dark band on the partner side
    for psd in world.psds:
        sl = _box(psd["p"], (psd["r"] + 40.0,) * 3, coords)
        if sl is None:
            continue
        pz, py, px = (coords[d][sl[d]] - psd["p"][d] for d in range(3))
        rr = np.sqrt(pz[:, None, None] ** 2 + py[None, :, None] ** 2 + px[None, None, :] ** 2)
        w = _bump(rr / psd["r"]).astype(f32)
        side = (cell[sl] != psd["cell"]) & has_mem[sl] & ~resin_cell[sl]
        md = bdist[sl]
        dens = w * side * _bump(md / f32(32.0)) * f32(0.6)
        darkening[sl] = np.maximum(darkening[sl], dens)
        mem_lab[sl] |= side & (w > 0.3) & (md < 24.0)
    labels[mem_lab] = MEMBRANE
    img *= f32(1.0) - darkening
    del darkening, mem_lab



def _mitochondria(world: _World, shape, coords, thick: float, cell, bdist, fine, mott, gspk, img,
                  labels):
    """Draw each mitochondrion (matrix, cristae, double membrane) into *img* and *labels*
    in place; returns the instance ids (1..N, consecutive)."""
    f32 = np.float32
    inst = np.zeros(shape, np.uint32)
    n = 0  # consecutive instance ids 1..N for the mitochondria in the volume
    for m in world.mitos:
        half = np.abs(m["a"]) * m["h"] + m["r"] + 12.0
        sl = _box(m["c"], half, coords)
        if sl is None:
            continue
        host = cell[sl] == m["cell"]
        rz, ry, rx = (coords[d][sl[d]] - m["c"][d] for d in range(3))
        rz, ry, rx = rz[:, None, None], ry[None, :, None], rx[None, None, :]
        a = m["a"]
        u = a[0] * rz + a[1] * ry + a[2] * rx
        uc = np.clip(u, -m["h"], m["h"])
        pz, py, px = rz - uc * a[0], ry - uc * a[1], rx - uc * a[2]
        rho = np.sqrt(pz * pz + py * py + px * px)
        # capsule intersected with the cell interior: pressed against the
        # plasma membrane, the outline follows it
        sd = np.maximum(rho - m["r"], (_GAP + _MITO_MARGIN) - bdist[sl])
        inside = (sd < 0) & host
        if not inside.any():
            continue
        n += 1
        gz = np.abs(pz) / np.maximum(rho, 1e-6)  # |z| of the surface normal
        mrng = world._rng(3, m["stream"][0])
        mrng = np.random.default_rng([int(mrng.integers(0, 2**62)), m["stream"][1]])
        # cristae: lamellae roughly across the long axis, tilted, curved,
        # irregular, most spanning the matrix from one side
        perp = np.cross(a, [0.0, 0.0, 1.0] if abs(a[2]) < 0.9 else [0.0, 1.0, 0.0])
        perp /= np.linalg.norm(perp)
        perp2 = np.cross(a, perp)
        ang = mrng.uniform(0.0, 2.0)
        e1 = perp * (1.0 - ang * ang / 8.0) + perp2 * (ang / 2.0)
        e1 /= np.linalg.norm(e1)
        ncr = a + mrng.uniform(-1.0, 1.0) * e1
        ncr /= np.linalg.norm(ncr)
        lat_dir = np.cross(ncr, e1)
        lat_dir /= np.linalg.norm(lat_dir)
        period = mrng.uniform(30.0, 44.0)
        phase0 = mrng.uniform(0.0, 1.0)
        bend = mrng.uniform(-0.6, 0.6)
        kmax = int((m["h"] + m["r"]) / period) + 4
        lo = mrng.uniform(-1.5, -0.2, 2 * kmax + 1)
        hi = lo + mrng.uniform(1.2, 2.8, 2 * kmax + 1)
        uu = ncr[0] * rz + ncr[1] * ry + ncr[2] * rx
        lat = (lat_dir[0] * rz + lat_dir[1] * ry + lat_dir[2] * rx) / m["r"]
        ph = (uu + bend * rho * rho / m["r"] + 9.0 * mott[sl] + 3.0 * fine[sl]) / period + phase0
        k = np.floor(ph)
        fr = (ph - k - 0.5) * period  # nm from the crista centre plane
        ki = np.clip(k.astype(np.int64) + kmax, 0, 2 * kmax)
        present = ((lat >= lo[ki]) & (lat <= hi[ki])) * mrng.uniform(0.6, 1.0, 2 * kmax + 1)[ki]
        cw = 5.0
        az = 0.6 * abs(ncr[0]) * thick  # cristae are not flat: partial wash-out
        cw_eff = np.sqrt(cw * cw + az * az / 3.0)
        c_amp = 0.75 * cw / cw_eff * max(0.0, 1.0 - az / (2.5 * period))
        cristae = c_amp * _bump(fr / (2.0 * cw_eff)) * present * np.clip(-sd / 8.0, 0.0, 1.0)
        matrix = _I_MATRIX + 0.05 * fine[sl] + 0.02 * mott[sl] - 0.15 * gspk[sl]
        matrix = matrix * (1.0 - cristae)
        # soft inside/outside blend: anti-aliasing and projection of the edge
        edge = np.sqrt(9.0 + (gz * thick) ** 2 / 3.0)
        wgt = _smoothstep(0.5 - sd / (2.0 * edge)) * host
        sub = img[sl] * (1.0 - wgt) + matrix * wgt
        # outer and inner membrane: a dark double outline
        tm = np.sqrt(3.0 * 3.0 + (gz * thick) ** 2 / 3.0)
        rim = np.maximum(_bump((sd + 3.0) / (2.0 * tm)), _bump((sd + 11.0) / (2.0 * tm)))
        rim = rim + 0.45 * _bump((sd + 7.0) / (2.0 * tm))
        sub = sub * (1.0 - np.clip(0.72 * (3.0 / tm) * rim, 0.0, 0.85) * (sd > -20.0))
        img[sl] = sub.astype(f32)
        labels[sl][inside] = MITOCHONDRIA
        inst[sl][inside] = n
    return inst


def _vesicles(world: _World, coords, thick: float, fine, img, labels) -> None:
    """Draw the vesicles (bright lumen, dark membrane) into *img* and *labels*, in place."""
    f32 = np.float32
    vc, vr = world.vesicles
    for c, r in zip(vc, vr):
        sl = _box(c, (r + 10.0,) * 3, coords)
        if sl is None:
            continue
        rz, ry, rx = (coords[d][sl[d]] - c[d] for d in range(3))
        rz, ry, rx = rz[:, None, None], ry[None, :, None], rx[None, None, :]
        rho = np.sqrt(rz * rz + ry * ry + rx * rx)
        sd = rho - r
        gz = np.abs(rz) / np.maximum(rho, 1e-6)
        edge = np.sqrt(6.0 + (gz * thick) ** 2 / 3.0)
        wgt = _smoothstep(0.5 - sd / (2.0 * edge))
        lumen = _I_LUMEN + 0.012 * fine[sl]
        sub = img[sl] * (1.0 - wgt) + lumen * wgt
        tm = np.sqrt(3.5 * 3.5 + (gz * thick) ** 2 / 3.0)
        sub = sub * (1.0 - 0.75 * (3.5 / tm) * _bump((sd + 3.0) / (2.2 * tm)))
        img[sl] = sub.astype(f32)
        labels[sl][sd < 0] = VESICLE


def _microscope(img, shape, voxel, coords, key, rng, noise: float):
    """The microscope: PSF blur, uneven illumination, per-section gain and offset, shot and
    detector noise; then 8 bits."""
    from scipy import ndimage as ndi

    nz = shape[0]
    vz = voxel[0]
    cz, cy, cx = coords
    f32 = np.float32
    psf = tuple(_PSF_NM / v if v < _SECTIONED_NM else 0.0 for v in voxel)
    img = ndi.gaussian_filter(img, psf, mode="nearest", truncate=3.0)
    illum = _noise_grid(_mix(key, 30), cz, cy, cx, _ILLUMINATION_NM)
    np.clip(illum, -3.0, 3.0, out=illum)
    illum *= f32(_ILLUMINATION_AMPLITUDE)
    illum += f32(1.0)
    img *= illum
    del illum
    if nz > 1:
        aniso = vz >= _SECTIONED_NM
        gain = 1.0 + (_SECTION_GAIN[aniso]) * rng.standard_normal(nz)
        offs = (_SECTION_OFFSET[aniso]) * rng.standard_normal(nz)
        img *= gain.astype(f32)[:, None, None]
        img += offs.astype(f32)[:, None, None]
    if noise > 0:
        # shot noise (variance grows with the signal) plus detector noise
        sig = np.clip(img, 0.0, None)
        sig *= f32(_SHOT_NOISE)
        sig += f32(_DETECTOR_NOISE**2)
        np.sqrt(sig, out=sig)
        sig *= rng.standard_normal(shape, dtype=f32)
        sig *= f32(noise)
        img += sig
        del sig
    img *= f32(255.0)
    img += f32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
def make_em_volume(
    shape=(32, 256, 256),
    *,
    isotropic: bool = True,
    voxel_size=None,
    seed: int = 0,
    mito_density: float = 1.0,
    noise: float = 1.0,
) -> SyntheticVolume:
    """Generate a deterministic synthetic EM volume with ground truth.

    Parameters
    ----------
    shape : (z, y, x) or (y, x)
        Voxels.  A 2-tuple gives a single 2D image (one section at z = 0).
    isotropic : bool
        True: FIB-SEM-like 8 nm isotropic voxels; False: ssTEM-like
        (40, 8, 8) nm voxels (z planes are 40 nm thick sections).
    voxel_size : tuple of float, optional
        Override the voxel size in nm, (z, y, x); for 2D, (y, x) or (z, y, x)
        where z is the section thickness.
    seed : int
        Same seed, same bytes.  Different seeds, different worlds.
    mito_density : float
        Scales the number of mitochondria (0 = none).
    noise : float
        Scales the noise level (0 = noiseless, still blurred and textured).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (z, y, x) or (y, x) with positive sizes, got {shape}")
    if mito_density < 0 or noise < 0:
        raise ValueError("mito_density and noise must be >= 0")
    is2d = len(shape) == 2
    default = ISOTROPIC_VOXEL_NM if isotropic else ANISOTROPIC_VOXEL_NM
    if voxel_size is None:
        voxel = default
    else:
        vs = tuple(float(v) for v in voxel_size)
        if len(vs) == 2 and is2d:
            voxel = (default[0], *vs)
        elif len(vs) == 3:
            voxel = vs
        else:
            raise ValueError(f"voxel_size must have {len(shape)} entries, got {voxel_size}")
        if min(voxel) <= 0:
            raise ValueError("voxel_size must be positive")
    shape3 = (1, *shape) if is2d else shape
    seed = int(seed)
    extent = tuple(n * v for n, v in zip(shape3, voxel))
    world = _World(seed, extent, float(mito_density))
    rng = np.random.default_rng([seed & _MASK64, 99, int(is2d)])
    image, labels, inst, resin = _render(world, shape3, voxel, rng, float(noise))
    if is2d:
        image, labels, inst, resin = image[0], labels[0], inst[0], resin[0]
        voxel = voxel[1:]
    return SyntheticVolume(
        image=image,
        labels=labels,
        voxel_size=tuple(float(v) for v in voxel),
        mito_instances=inst,
        resin_mask=resin,
        class_names=CLASS_NAMES,
        seed=seed,
    )
