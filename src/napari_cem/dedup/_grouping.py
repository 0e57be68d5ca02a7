"""Group 64-bit dHash values into near-duplicate groups (SPEC section 2, "Grouping").

Two methods, both exact and deterministic for a seed:

``greedy`` -- the CEM500K code: shuffle the patches (``np.random.default_rng(seed)``), take
the first remaining patch as an exemplar, put every remaining patch within the cutoff
(Hamming distance <= cutoff, inclusive) in its group, repeat. Equivalently, walking the
shuffled order once: a patch is an exemplar iff no earlier exemplar lies within the
cutoff; otherwise it belongs to the *earliest* exemplar within the cutoff. (A patch stays
"remaining" until an exemplar within the cutoff is chosen; exemplars are chosen in walk
order, and a remaining patch is always chosen before any later one, so every exemplar
that claims or could claim a patch precedes it, and the first chosen of them -- the
earliest -- claims it.) This formulation is what the code computes: each patch scans the
exemplar list in order and stops at the first hit.

``components`` -- connected components of the graph "distance <= cutoff" (transitive);
the exemplar of a component is its first member in the shuffled order; groups are
numbered by exemplar order.

Exact duplicates are collapsed first (exact for both methods: a copy has distance 0 to
its first occurrence, so it always joins that occurrence's group).

Speed: with numba the pairwise test is xor + ``llvm.ctpop`` + compare, which LLVM
vectorises (AVX-512 VPOPCNTQ where the CPU has it; ~8e9 pair tests per second per core on
the benchmark machine). Rows are processed in chunks (~0.1 s each, so ``should_stop`` and
``progress`` are served at least every few tenths of a second): a scan against everything
before the chunk, parallel over rows, then a serial pass in walk order within the chunk.
Greedy costs about ``N * G / 2`` pair tests for ``G`` groups (a non-exemplar stops at its
first hit), components ``U**2 / 2`` for ``U`` distinct hashes. Memory is O(N), no N x N
arrays. A pigeonhole multi-index (4 x 16-bit blocks, per-block radii 3/2/2/2) was measured
as the alternative for greedy and lost: 48 s vs 14 s for 10^6 realistic hashes, because of
~1,100 bucket probes per query and scattered memory access. Without numba a blocked NumPy
path gives the same results, slower.

Progress is ``progress(done, total)`` with ``total = len(hashes)``: ``(0, total)`` first,
``(total, total)`` last. Cancelling raises :class:`napari_cem._cancel.Cancelled`.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._cancel import Cancelled

__all__ = ["Grouping", "group_greedy", "group_components", "group_hashes", "METHODS"]

METHODS = ("greedy", "components")

_REPORT_EVERY_S = 0.1  # progress at most this often; should_stop is polled every chunk (~0.1 s)
_CHUNK_TARGET_S = 0.1
_FIRST_CHUNK = 256  # rows in the first kernel call; then sized by the time a call takes


@dataclass
class Grouping:
    """Per-hash group id (0..G-1, numbered in the order exemplars were chosen) and exemplar flag."""

    group: np.ndarray  # (N,) int64
    exemplar: np.ndarray  # (N,) bool, exactly one True per group

    @property
    def n_groups(self) -> int:
        return int(np.count_nonzero(self.exemplar))

    @property
    def n_kept(self) -> int:
        return self.n_groups


# --------------------------------------------------------------------------------------
# numba kernels (optional; the NumPy path below gives identical results)
# --------------------------------------------------------------------------------------

try:  # pragma: no branch
    import numba as _nb
    from numba.core import types as _nbtypes
    from numba.extending import intrinsic as _intrinsic
except ImportError:  # pragma: no cover - exercised by forcing _NUMBA = False in the tests
    _nb = None

_NUMBA = _nb is not None
_BLOCK = 64  # lanes per unrolled/vectorised block in the scans
_PARALLEL_MIN_PAIRS = 1 << 22  # smaller scans run on one thread (waking threads costs ~ms)
_MAX_ROOTS = 16  # distinct components remembered per row in the parallel components pass
# numba's default "workqueue" threading layer must not run two parallel kernels at once;
# the kernels release the GIL (so a GUI stays responsive), hence this lock.
_KERNEL_LOCK = threading.Lock()

if _NUMBA:

    @_intrinsic
    def _popcount(typingctx, x):
        """llvm.ctpop.i64 (vectorises to VPOPCNTQ on AVX-512 VPOPCNTDQ CPUs)."""
        sig = _nbtypes.uint64(_nbtypes.uint64)

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

    # The scans take a slice and index it from 0 upwards: with a variable start, LLVM
    # cannot rule out numba's negative-index wraparound and does not vectorise (6x slower).

    @_nb.njit(cache=True, nogil=True)
    def _first_within(ref, h, r):  # pragma: no cover - compiled
        """Smallest k with popcount(ref[k] ^ h) <= r, else -1."""
        n = ref.size
        k0 = 0
        while k0 + _BLOCK <= n:
            c = 0
            for k in range(_BLOCK):  # branch-free reduction: vectorised
                c += _popcount(ref[k0 + k] ^ h) <= r
            if c:
                break
            k0 += _BLOCK
        for k in range(k0, n):
            if _popcount(ref[k] ^ h) <= r:
                return k
        return -1

    # Each chunk of rows: a scan against everything before the chunk (parallel over rows when
    # the chunk is big enough to pay for waking the threads, serial otherwise), then a serial
    # pass in walk order that resolves the rows against each other.

    @_nb.njit(cache=True, nogil=True)
    def _greedy_scan(s, i0, i1, ex, g0, r, leader):  # pragma: no cover - compiled
        for t in range(i1 - i0):
            leader[i0 + t] = _first_within(ex[:g0], s[i0 + t], r)

    @_nb.njit(cache=True, nogil=True, parallel=True)
    def _greedy_scan_par(s, i0, i1, ex, g0, r, leader):  # pragma: no cover - compiled
        for t in _nb.prange(i1 - i0):
            leader[i0 + t] = _first_within(ex[:g0], s[i0 + t], r)

    @_nb.njit(cache=True, nogil=True)
    def _greedy_resolve(s, i0, i1, ex, g0, r, leader, is_ex):  # pragma: no cover - compiled
        """Rows without an exemplar before the chunk, in order, against the chunk's new
        exemplars: a hit joins the earliest, a miss becomes the next exemplar."""
        g = g0
        for i in range(i0, i1):
            if leader[i] < 0:
                k = _first_within(ex[g0:g], s[i], r)
                if k < 0:
                    ex[g] = s[i]
                    is_ex[i] = True
                    leader[i] = g
                    g += 1
                else:
                    leader[i] = g0 + k
        return g

    @_nb.njit(cache=True, nogil=True)
    def _find(parent, a):  # pragma: no cover - compiled
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    @_nb.njit(cache=True, nogil=True)
    def _union(parent, a, b):  # pragma: no cover - compiled
        """Union by smallest index: a root is always its component's first member."""
        ra = _find(parent, a)
        rb = _find(parent, b)
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb

    @_nb.njit(cache=True, nogil=True)
    def _union_scan(ref, lo, h, i, r, parent):  # pragma: no cover - compiled
        """Union i with lo + k for every k with popcount(ref[k] ^ h) <= r (serial)."""
        n = ref.size
        k0 = 0
        while k0 + _BLOCK <= n:
            c = 0
            for k in range(_BLOCK):
                c += _popcount(ref[k0 + k] ^ h) <= r
            if c:
                for k in range(_BLOCK):
                    if _popcount(ref[k0 + k] ^ h) <= r:
                        _union(parent, i, lo + k0 + k)
            k0 += _BLOCK
        for k in range(k0, n):
            if _popcount(ref[k] ^ h) <= r:
                _union(parent, i, lo + k)

    @_nb.njit(cache=True, nogil=True)
    def _add_root(roots, n, root):  # pragma: no cover - compiled
        """Append root to roots[:n] unless present; -1 when roots is full."""
        for q in range(n):
            if roots[q] == root:
                return n
        if n == roots.size:
            return -1
        roots[n] = root
        return n + 1

    @_nb.njit(cache=True, nogil=True)
    def _row_roots(ref, h, r, parent, roots):  # pragma: no cover - compiled
        """Distinct parent[k] over k with popcount(ref[k] ^ h) <= r, into roots;
        returns their count, or -1 when there are more than roots.size."""
        hi = ref.size
        n = 0
        last = -1  # root of the latest hit: dense data hit one component over and over
        k0 = 0
        while k0 + _BLOCK <= hi:
            c = 0
            for k in range(_BLOCK):
                c += _popcount(ref[k0 + k] ^ h) <= r
            if c:
                c = 0
                for k in range(_BLOCK):  # still vectorised: any hit outside `last`?
                    c += (_popcount(ref[k0 + k] ^ h) <= r) & (parent[k0 + k] != last)
            if c:
                for k in range(_BLOCK):
                    if _popcount(ref[k0 + k] ^ h) <= r and parent[k0 + k] != last:
                        last = parent[k0 + k]
                        n = _add_root(roots, n, last)
                        if n < 0:
                            return -1
            k0 += _BLOCK
        for k in range(k0, hi):
            if _popcount(ref[k] ^ h) <= r and parent[k] != last:
                last = parent[k]
                n = _add_root(roots, n, last)
                if n < 0:
                    return -1
        return n

    @_nb.njit(cache=True, nogil=True)
    def _components_scan(s, i0, i1, parent, r, roots, nroots):  # pragma: no cover - compiled
        for t in range(i1 - i0):
            nroots[t] = _row_roots(s[:i0], s[i0 + t], r, parent, roots[t])

    @_nb.njit(cache=True, nogil=True, parallel=True)
    def _components_scan_par(s, i0, i1, parent, r, roots, nroots):  # pragma: no cover - compiled
        for t in _nb.prange(i1 - i0):
            nroots[t] = _row_roots(s[:i0], s[i0 + t], r, parent, roots[t])

    @_nb.njit(cache=True, nogil=True)
    def _components_resolve(s, i0, i1, parent, r, roots, nroots):  # pragma: no cover - compiled
        """Union each row with the roots its scan found (or rescan when it found too many),
        then with the rows before it in the chunk; finally compress ``parent[:i1]`` so the
        next scan reads roots directly."""
        for t in range(i1 - i0):
            i = i0 + t
            if nroots[t] < 0:
                _union_scan(s[:i0], 0, s[i], i, r, parent)
            else:
                for q in range(nroots[t]):
                    _union(parent, i, roots[t, q])
            _union_scan(s[i0:i], i0, s[i], i, r, parent)
        for j in range(i1):  # parent[j] <= j, so one ascending pass compresses fully
            parent[j] = parent[parent[j]]


# --------------------------------------------------------------------------------------
# NumPy fallback
# --------------------------------------------------------------------------------------

_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _np_popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


_NP_TILE = 1 << 22  # elements in one (rows x reference) tile: 32 MiB of uint64 temporaries


def _np_first_within(ref: np.ndarray, q: np.ndarray, r: int) -> np.ndarray:
    """For each q, the smallest k with popcount(ref[k] ^ q) <= r, else -1 (blocked)."""
    out = np.full(q.size, -1, np.int64)
    if ref.size == 0 or q.size == 0:
        return out
    active = np.arange(q.size)
    step = max(1, _NP_TILE // q.size)
    for k0 in range(0, ref.size, step):
        hit = _np_popcount(q[active, None] ^ ref[None, k0:k0 + step]) <= r
        rows = hit.any(1)
        if rows.any():
            out[active[rows]] = k0 + hit[rows].argmax(1)
            active = active[~rows]
            if active.size == 0:
                break
    return out


def _np_greedy_chunk(s, i0, i1, ex, g, r, leader, is_ex):
    g0 = g
    leader[i0:i1] = _np_first_within(ex[:g0], s[i0:i1], r)
    for i in np.flatnonzero(leader[i0:i1] < 0) + i0:  # O(rows) loop, each step vectorised
        hits = np.flatnonzero(_np_popcount(ex[g0:g] ^ s[i]) <= r)
        if hits.size:
            leader[i] = g0 + hits[0]
        else:
            ex[g] = s[i]
            is_ex[i] = True
            leader[i] = g
            g += 1
    return g


def _np_components_chunk(s, i0, i1, label, r):
    """``label[:i0]`` holds each processed row's component root (its first member); merge
    rows s[i0:i1] in, via a small graph over the chunk's rows and the roots they touch."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q = s[i0:i1]
    rows_l, cols_l = [np.arange(i0, i1)], [np.arange(i0, i1)]
    step = max(1, _NP_TILE // q.size)
    for k0 in range(0, i1, step):
        k1 = min(i1, k0 + step)
        rr, kk = np.nonzero(_np_popcount(q[:, None] ^ s[None, k0:k1]) <= r)
        kk = kk + k0
        keep = kk < rr + i0  # each pair once, earlier column
        rr, kk = rr[keep] + i0, kk[keep]
        old = kk < i0
        kk[old] = label[kk[old]]
        pair = np.unique(np.stack([rr, kk], 1), axis=0) if rr.size else np.empty((0, 2), np.int64)
        rows_l.append(pair[:, 0])
        cols_l.append(pair[:, 1])
    rows, cols = np.concatenate(rows_l), np.concatenate(cols_l)
    nodes, inv = np.unique(np.concatenate([rows, cols]), return_inverse=True)
    m = nodes.size
    a, b = inv[:rows.size], inv[rows.size:]
    _, comp = connected_components(coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(m, m)),
                                   directed=False)
    first = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, comp, nodes)  # nodes are sorted: min node = component's first member
    new_root = first[comp]
    label[i0:i1] = new_root[np.searchsorted(nodes, np.arange(i0, i1))]
    moved = nodes < i0
    if np.any(new_root[moved] != nodes[moved]):
        remap = np.arange(i0)
        remap[nodes[moved]] = new_root[moved]
        label[:i0] = remap[label[:i0]]


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def _check(hashes, cutoff) -> tuple[np.ndarray, int]:
    h = np.asarray(hashes)
    if h.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, got shape {h.shape}")
    if h.size and h.dtype.kind not in "iu":
        raise ValueError(f"hashes must be integers (64-bit dHash values), got {h.dtype}")
    if h.dtype.kind == "i" and h.dtype.itemsize == 8:
        h = h.view(np.uint64)  # same 64 bits
    h = h.astype(np.uint64, copy=False)
    try:
        cutoff = operator.index(cutoff)
    except TypeError:
        raise ValueError(f"cutoff must be an integer, got {cutoff!r}") from None
    if cutoff < 0:
        raise ValueError(f"cutoff must be >= 0, got {cutoff}")
    return h, min(cutoff, 64)


class _Pacer:
    """Chunk sizing (~0.1 s per kernel call), should_stop polling and progress reports."""

    def __init__(self, total, progress, should_stop, quadratic=False):
        self.total, self.progress, self.should_stop = total, progress, should_stop
        self.quadratic = quadratic
        self.size = _FIRST_CHUNK
        self.last = time.perf_counter()

    def start(self):
        self.poll()
        if self.progress is not None:
            self.progress(0, self.total)
        self.last = time.perf_counter()

    def poll(self):
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("grouping stopped")

    def step(self, seconds, done_frac):
        if seconds < 0.5 * _CHUNK_TARGET_S:
            self.size = min(self.size * 2, 1 << 20)
        elif seconds > 2 * _CHUNK_TARGET_S:
            self.size = max(self.size // 2, min(_FIRST_CHUNK, 16))
        now = time.perf_counter()
        if self.progress is not None and now - self.last >= _REPORT_EVERY_S:
            self.last = now
            f = done_frac * done_frac if self.quadratic else done_frac
            self.progress(min(self.total - 1, int(self.total * f)), self.total)

    def finish(self):
        if self.progress is not None:
            self.progress(self.total, self.total)


def _run(hashes, cutoff, seed, progress, should_stop, method) -> Grouping:
    h, r = _check(hashes, cutoff)
    n = h.size
    pacer = _Pacer(n, progress, should_stop, quadratic=(method == "components"))
    pacer.start()
    order = np.random.default_rng(seed).permutation(n)
    h_ord = h[order]
    # distinct values, their first position in the shuffled order, and the walk sequence
    uvals, first, inv = np.unique(h_ord, return_index=True, return_inverse=True)
    del h_ord
    seq_u = np.argsort(first, kind="stable")  # unique ids in walk order
    s = np.ascontiguousarray(uvals[seq_u])
    u = s.size
    del uvals
    if method == "greedy":
        label, is_ex = _walk_greedy(s, r, pacer)
    else:
        label, is_ex = _walk_components(s, r, pacer)
    pos = np.empty(u, np.int64)
    pos[seq_u] = np.arange(u)
    group = np.empty(n, np.int64)
    group[order] = label[pos[inv.reshape(-1)]]
    exemplar = np.zeros(n, bool)
    exemplar[order[first[seq_u[is_ex]]]] = True
    pacer.poll()
    pacer.finish()
    return Grouping(group=group, exemplar=exemplar)


def _walk_greedy(s, r, pacer) -> tuple[np.ndarray, np.ndarray]:
    u = s.size
    ex = np.empty(u, np.uint64)
    leader = np.empty(u, np.int64)  # = group id (index into ex) for each position
    is_ex = np.zeros(u, bool)
    rr = np.uint64(r)
    g, i = 0, 0
    while i < u:
        pacer.poll()
        i1 = min(u, i + pacer.size)
        t0 = time.perf_counter()
        if _NUMBA:
            scan = _greedy_scan_par if (i1 - i) * g >= _PARALLEL_MIN_PAIRS else _greedy_scan
            with _KERNEL_LOCK:
                scan(s, i, i1, ex, g, rr, leader)
                g = _greedy_resolve(s, i, i1, ex, g, rr, leader, is_ex)
        else:
            g = _np_greedy_chunk(s, i, i1, ex, g, r, leader, is_ex)
        i = i1
        pacer.step(time.perf_counter() - t0, i / u)
    return leader, is_ex


def _walk_components(s, r, pacer) -> tuple[np.ndarray, np.ndarray]:
    u = s.size
    parent = np.arange(u, dtype=np.int64)  # root = first member; compressed behind the front
    rr = np.uint64(r)
    i = 0
    while i < u:
        pacer.poll()
        i1 = min(u, i + pacer.size)
        t0 = time.perf_counter()
        if _NUMBA:
            roots = np.empty((i1 - i, _MAX_ROOTS), np.int64)
            nroots = np.empty(i1 - i, np.int64)
            scan = _components_scan_par if (i1 - i) * i >= _PARALLEL_MIN_PAIRS else _components_scan
            with _KERNEL_LOCK:
                scan(s, i, i1, parent, rr, roots, nroots)
                _components_resolve(s, i, i1, parent, rr, roots, nroots)
        else:
            _np_components_chunk(s, i, i1, parent, r)
        i = i1
        pacer.step(time.perf_counter() - t0, i / u)
    is_ex = parent == np.arange(u)
    gid = np.cumsum(is_ex) - 1  # groups numbered by exemplar (first member) order
    return gid[parent], is_ex


def group_greedy(hashes, cutoff: int = 12, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Grouping:
    """CEM500K's greedy grouping: shuffled walk, first remaining = exemplar, everything
    remaining within ``cutoff`` (inclusive) joins it. Raises Cancelled when should_stop()."""
    return _run(hashes, cutoff, seed, progress, should_stop, "greedy")


def group_components(hashes, cutoff: int = 12, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Grouping:
    """Connected components of "distance <= cutoff"; exemplar = first member in the shuffled
    order. Slower than greedy (all pairs are tested). Raises Cancelled when should_stop()."""
    return _run(hashes, cutoff, seed, progress, should_stop, "components")


def group_hashes(hashes, cutoff: int = 12, method: str = "greedy", seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Grouping:
    """Dispatch to :func:`group_greedy` or :func:`group_components`."""
    if method == "greedy":
        return group_greedy(hashes, cutoff, seed, progress, should_stop)
    if method == "components":
        return group_components(hashes, cutoff, seed, progress, should_stop)
    raise ValueError(f"unknown grouping method {method!r}; choose one of {', '.join(METHODS)}")
