"""Batched dHash, bit-identical to ``imagehash.dhash`` (hash size 8 by default).

``imagehash.dhash(img)`` converts to grayscale, resizes to ``(hash_size + 1, hash_size)``
with PIL's LANCZOS filter and sets bit ``(r, c)`` when ``pixels[r, c + 1] > pixels[r, c]``
(the right neighbour is brighter), row-major, most significant bit first.

For mode "L" images Pillow resizes with 8-bit fixed-point arithmetic
(``libImaging/Resample.c``), which is what this module reproduces exactly:

* one separable pass per axis; the horizontal pass runs first unless the height shrinks
  by more than twice as many pixels as the width (``H - oh > 2 * (W - ow)``), in which
  case the vertical pass runs first; a pass whose size does not change is skipped;
* per output index ``i``: ``scale = in / out``, ``filterscale = max(scale, 1)``,
  ``support = 3 * filterscale``, ``center = (i + 0.5) * scale``, taps
  ``x in [int(center - support + 0.5), int(center + support + 0.5))`` clipped to the
  input, weights ``lanczos((x - center + 0.5) / filterscale)`` normalised by their sum,
  then quantised to ``PRECISION_BITS = 22`` fractional bits, rounding half away from zero;
* each output pixel is ``clip((2**21 + sum(pixel * coeff)) >> 22, 0, 255)`` in 32-bit
  integers, after *each* pass (the intermediate image is uint8 too).

Everything here is exact integer arithmetic (int32 as in Pillow, or float64/float32 on
integers whose sums provably stay exact), so the results match Pillow bit for bit.

Speed: nearly all the work is the horizontal pass (224 rows x 9 outputs x windows of up
to 150 taps). With numba (optional, imported on first use, kernels cached on disk) the
hash_size-8 kernel keeps the nine int32 accumulators of a row in registers and streams
the row once against dense (9, W) coefficients: the loop vectorises into plain
multiply-adds (AVX2/AVX-512) with one reduction per output, instead of one short banded
dot product per output (2x slower: reduction and remainder overhead). The vertical pass
is done the same way with eight accumulators; patches run in parallel. Without numba a
float32 matrix product on coefficients split into two exactly representable halves does
the same work (about 3x slower); other hash sizes use a generic banded kernel.
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import warnings

import numpy as np

__all__ = ["dhash", "hamming", "hash_to_hex", "hashes_to_hex", "hex_to_hash"]

PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
_HALF = 1 << (PRECISION_BITS - 1)
_LANCZOS_SUPPORT = 3.0
_NUMPY_CHUNK = 32  # patches per matmul block in the numpy path

# ----------------------------------------------------------------------------------------
# Pillow's coefficients


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


@functools.lru_cache(maxsize=64)
def _pass_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-point coefficients of one resampling pass ``in_size -> out_size``.

    Returns ``(starts, lengths, coeffs)``: output ``i`` is the dot product of the input
    ``[starts[i], starts[i] + lengths[i])`` with ``coeffs[i, :lengths[i]]`` (int32, scaled
    by 2**22). When the size does not change Pillow skips the pass; the identity
    coefficients (a single 2**22 tap) reproduce that exactly.

    Scalar double arithmetic with ``math.sin`` (libm, as in Pillow's C), in Pillow's
    order of operations, so the quantised values are identical.
    """
    if in_size == out_size:
        starts = np.arange(out_size, dtype=np.int64)
        lengths = np.ones(out_size, dtype=np.int64)
        coeffs = np.full((out_size, 1), 1 << PRECISION_BITS, dtype=np.int32)
        return _frozen(starts), _frozen(lengths), _frozen(coeffs)
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    inv_filterscale = 1.0 / filterscale
    rows = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C (int) truncates toward zero
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos(((x + xmin) - center + 0.5) * inv_filterscale) for x in range(xmax)]
        total = 0.0
        for w in weights:  # left to right, like the C loop (no compensated summation)
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        fixed = [int((-0.5 if w < 0 else 0.5) + w * (1 << PRECISION_BITS)) for w in weights]
        rows.append((xmin, fixed))
    ksize = max(1, max(len(f) for _, f in rows))
    starts = np.array([s for s, _ in rows], dtype=np.int64)
    lengths = np.array([len(f) for _, f in rows], dtype=np.int64)
    coeffs = np.zeros((out_size, ksize), dtype=np.int32)
    for i, (_, fixed) in enumerate(rows):
        coeffs[i, : len(fixed)] = fixed
    return _frozen(starts), _frozen(lengths), _frozen(coeffs)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=64)
def _dense_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """The same pass as an ``(out_size, in_size)`` int32 matrix (zeros outside the band)."""
    starts, lengths, coeffs = _pass_coefficients(in_size, out_size)
    dense = np.zeros((out_size, in_size), dtype=np.int32)
    for i in range(out_size):
        dense[i, starts[i] : starts[i] + lengths[i]] = coeffs[i, : lengths[i]]
    return _frozen(dense)


def _horizontal_first(h: int, w: int, oh: int, ow: int) -> bool:
    """Pillow's pass order (ImagingResampleInner)."""
    return not ((h - oh) > 0 and (h - oh) > (w - ow) * 2)


# ----------------------------------------------------------------------------------------
# numpy path (always available; exact: float64 products and sums of integers < 2**53)


def _fixed_round_clip(acc: np.ndarray) -> np.ndarray:
    """``clip((acc + 2**21) >> 22, 0, 255)`` for exact integer-valued float64 ``acc``."""
    out = acc + _HALF
    out *= 1.0 / (1 << PRECISION_BITS)  # power of two: exact
    np.floor(out, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    return out


@functools.lru_cache(maxsize=64)
def _split_float32(in_size: int, out_size: int):
    """The pass as float32 ``(in_size, 2 * out_size)`` = [high | low] with
    ``coeff = high * 512 + low``, or None when float32 sums could be inexact.

    float32 represents integers exactly below 2**24; with 8-bit pixels every partial
    sum of ``pixel * high`` (or ``* low``) is bounded by ``255 * sum(|part|)``, so when
    that bound stays below 2**24 the matrix product is exact whatever BLAS's order.
    """
    dense = _dense_coefficients(in_size, out_size).astype(np.int64)
    high = (dense + 256) >> 9
    low = dense - (high << 9)  # in [-256, 256)
    bound = 255 * max(np.abs(high).sum(axis=1).max(), np.abs(low).sum(axis=1).max())
    if bound >= 1 << 24:
        return None
    return _frozen(np.ascontiguousarray(np.concatenate([high, low]).T.astype(np.float32)))


def _resize_numpy(patches: np.ndarray, oh: int, ow: int) -> np.ndarray:
    n, h, w = patches.shape
    kh = _dense_coefficients(w, ow).astype(np.float64).T  # (W, ow)
    kv = _dense_coefficients(h, oh).astype(np.float64)  # (oh, H)
    out = np.empty((n, oh, ow), dtype=np.uint8)
    hfirst = _horizontal_first(h, w, oh, ow)
    split = _split_float32(w, ow) if hfirst and w != ow else None
    for a in range(0, n, _NUMPY_CHUNK):
        if split is not None:  # float32 BLAS, exact (see _split_float32): 2-3x float64
            t = patches[a : a + _NUMPY_CHUNK].astype(np.float32) @ split  # (n, H, 2 ow)
            t = _fixed_round_clip(t[..., :ow].astype(np.float64) * 512.0 + t[..., ow:])
            r = _fixed_round_clip(kv @ t)
        elif hfirst:
            x = patches[a : a + _NUMPY_CHUNK].astype(np.float64)
            t = _fixed_round_clip(x @ kh)  # (n, H, ow)
            r = _fixed_round_clip(kv @ t)  # (n, oh, ow)
        else:
            x = patches[a : a + _NUMPY_CHUNK].astype(np.float64)
            t = _fixed_round_clip(kv @ x)  # (n, oh, W)
            r = _fixed_round_clip(t @ kh)
        out[a : a + _NUMPY_CHUNK] = r
    return out


# ----------------------------------------------------------------------------------------
# numba path. The kernels are plain functions here, compiled on first use (so importing
# this module does not import numba). The first pass runs along the last (contiguous) axis
# of ``p``; rows outside [r0, r1) are not needed by the second pass and are skipped (as
# Pillow does), which does not change any value.

_prange = range  # replaced by numba.prange before the kernels are compiled


def _kernel_9(P, K, r0, r1, KV, out):  # pragma: no cover - runs compiled
    """hash_size 8: 9 horizontal outputs, then 8 vertical ones. Each pass keeps all its
    accumulators (one per output) in registers and streams its input line once against
    dense coefficient rows, so the loops vectorise into plain multiply-adds with one
    horizontal reduction per output. K: (9, W) int32; KV: (8, r1 - r0) int32."""
    n_patches = P.shape[0]
    width = P.shape[2]
    half = np.int32(1 << 21)
    k0 = K[0]
    k1 = K[1]
    k2 = K[2]
    k3 = K[3]
    k4 = K[4]
    k5 = K[5]
    k6 = K[6]
    k7 = K[7]
    k8 = K[8]
    v0 = KV[0]
    v1 = KV[1]
    v2 = KV[2]
    v3 = KV[3]
    v4 = KV[4]
    v5 = KV[5]
    v6 = KV[6]
    v7 = KV[7]
    nrows = r1 - r0
    nchunks = min(n_patches, 64)
    for c in _prange(nchunks):
        tmp = np.empty((9, nrows), np.int32)
        for n in range(c * n_patches // nchunks, (c + 1) * n_patches // nchunks):
            p = P[n]
            for r in range(r0, r1):
                row = p[r]
                a0 = half
                a1 = half
                a2 = half
                a3 = half
                a4 = half
                a5 = half
                a6 = half
                a7 = half
                a8 = half
                for x in range(width):
                    v = np.int32(row[x])
                    a0 = np.int32(a0 + np.int32(v * k0[x]))
                    a1 = np.int32(a1 + np.int32(v * k1[x]))
                    a2 = np.int32(a2 + np.int32(v * k2[x]))
                    a3 = np.int32(a3 + np.int32(v * k3[x]))
                    a4 = np.int32(a4 + np.int32(v * k4[x]))
                    a5 = np.int32(a5 + np.int32(v * k5[x]))
                    a6 = np.int32(a6 + np.int32(v * k6[x]))
                    a7 = np.int32(a7 + np.int32(v * k7[x]))
                    a8 = np.int32(a8 + np.int32(v * k8[x]))
                q = r - r0
                tmp[0, q] = min(max(a0 >> 22, 0), 255)
                tmp[1, q] = min(max(a1 >> 22, 0), 255)
                tmp[2, q] = min(max(a2 >> 22, 0), 255)
                tmp[3, q] = min(max(a3 >> 22, 0), 255)
                tmp[4, q] = min(max(a4 >> 22, 0), 255)
                tmp[5, q] = min(max(a5 >> 22, 0), 255)
                tmp[6, q] = min(max(a6 >> 22, 0), 255)
                tmp[7, q] = min(max(a7 >> 22, 0), 255)
                tmp[8, q] = min(max(a8 >> 22, 0), 255)
            for j in range(9):
                col = tmp[j]
                b0 = half
                b1 = half
                b2 = half
                b3 = half
                b4 = half
                b5 = half
                b6 = half
                b7 = half
                for y in range(nrows):
                    v = col[y]
                    b0 = np.int32(b0 + np.int32(v * v0[y]))
                    b1 = np.int32(b1 + np.int32(v * v1[y]))
                    b2 = np.int32(b2 + np.int32(v * v2[y]))
                    b3 = np.int32(b3 + np.int32(v * v3[y]))
                    b4 = np.int32(b4 + np.int32(v * v4[y]))
                    b5 = np.int32(b5 + np.int32(v * v5[y]))
                    b6 = np.int32(b6 + np.int32(v * v6[y]))
                    b7 = np.int32(b7 + np.int32(v * v7[y]))
                out[n, 0, j] = min(max(b0 >> 22, 0), 255)
                out[n, 1, j] = min(max(b1 >> 22, 0), 255)
                out[n, 2, j] = min(max(b2 >> 22, 0), 255)
                out[n, 3, j] = min(max(b3 >> 22, 0), 255)
                out[n, 4, j] = min(max(b4 >> 22, 0), 255)
                out[n, 5, j] = min(max(b5 >> 22, 0), 255)
                out[n, 6, j] = min(max(b6 >> 22, 0), 255)
                out[n, 7, j] = min(max(b7 >> 22, 0), 255)


def _kernel_banded(P, hs, hl, hk, r0, r1, vs, vl, vk, out):  # pragma: no cover
    """Any output size: banded dot products (slices keep the loads contiguous)."""
    n_patches = P.shape[0]
    n1 = hk.shape[0]
    oh = vk.shape[0]
    half = np.int32(1 << 21)
    nchunks = min(n_patches, 64)
    for c in _prange(nchunks):
        tmp = np.empty((n1, r1 - r0), np.int32)
        for n in range(c * n_patches // nchunks, (c + 1) * n_patches // nchunks):
            p = P[n]
            for r in range(r0, r1):
                for j in range(n1):
                    length = hl[j]
                    seg = p[r, hs[j] : hs[j] + length]
                    kj = hk[j, :length]
                    s = half
                    for t in range(length):
                        s = np.int32(s + np.int32(np.int32(seg[t]) * kj[t]))
                    tmp[j, r - r0] = min(max(s >> 22, 0), 255)
            for i in range(oh):
                length = vl[i]
                ki = vk[i, :length]
                for j in range(n1):
                    seg = tmp[j, vs[i] : vs[i] + length]
                    s = half
                    for t in range(length):
                        s = np.int32(s + np.int32(seg[t] * ki[t]))
                    out[n, i, j] = min(max(s >> 22, 0), 255)


_kernels = None  # None: not tried yet; False: numba unavailable; else (numba, kernel_9, banded)
_kernel_lock = threading.Lock()  # numba's workqueue threading layer is not re-entrant


def _get_kernels():
    global _kernels, _prange
    if _kernels is None:
        if os.environ.get("NAPARI_CEM_NO_NUMBA"):
            _kernels = False
            return _kernels
        try:
            import numba
        except Exception:  # ImportError, or a numba that fails to initialise
            _kernels = False
            return _kernels
        _prange = numba.prange
        jit = numba.njit(parallel=True, cache=True, fastmath=False, boundscheck=False, nogil=True)
        _kernels = (numba, jit(_kernel_9), jit(_kernel_banded))
    return _kernels


def _resize_numba(patches: np.ndarray, oh: int, ow: int, kernels=None) -> np.ndarray:
    if kernels is None:
        kernels = _get_kernels()
    n, h, w = patches.shape
    if _horizontal_first(h, w, oh, ow):
        data, first, second = patches, (w, ow), (h, oh)
    else:  # first pass along the rows: run the same kernel on the transposed patches
        data, first, second = np.ascontiguousarray(patches.transpose(0, 2, 1)), (h, oh), (w, ow)
    vs, vl, vk = _pass_coefficients(*second)
    r0 = int(vs.min())
    r1 = int((vs + vl).max())
    vs = vs - r0
    out = np.empty((n, second[1], first[1]), dtype=np.uint8)
    numba, kernel_9, kernel_banded = kernels
    with _kernel_lock:
        # dynamic scheduling of the 64 chunks: a core busy with something else then
        # slows the batch down by its share only, not to its own pace
        old_chunksize = numba.set_parallel_chunksize(1)
        try:
            if first[1] == 9 and second[1] == 8:
                kv = _dense_coefficients(*second)[:, r0:r1]
                kernel_9(data, _dense_coefficients(*first), r0, r1, np.ascontiguousarray(kv), out)
            else:
                hs, hl, hk = _pass_coefficients(*first)
                kernel_banded(data, hs, hl, hk, r0, r1, vs, vl, vk, out)
        finally:
            numba.set_parallel_chunksize(old_chunksize)
    return out if data is patches else out.transpose(0, 2, 1)


def _resize(patches: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Pillow's LANCZOS resize of each (H, W) uint8 patch to (oh, ow), exactly."""
    global _kernels
    kernels = _get_kernels()
    if kernels:
        try:
            return _resize_numba(patches, oh, ow, kernels)
        except Exception as exc:  # a numba that cannot compile the kernels
            from numba.core.errors import NumbaError

            if not isinstance(exc, NumbaError):
                raise
            warnings.warn(f"dhash: numba kernels unavailable ({exc}); using numpy", stacklevel=3)
            _kernels = False
    return _resize_numpy(patches, oh, ow)


# ----------------------------------------------------------------------------------------
# public API


def dhash(patches: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """dHash of uint8 patches, bit-identical to ``imagehash.dhash(Image.fromarray(p))``.

    ``patches``: (N, H, W) or (H, W) uint8, any H and W (coefficients are computed per
    size and cached). Returns (N,) uint64, or a scalar ``np.uint64`` for a 2D input.
    Bit ``r * hash_size + c`` (counting from the most significant of the
    ``hash_size**2`` bits) is set when the resized pixel ``[r, c + 1]`` is brighter than
    ``[r, c]``, so ``hash_to_hex(h) == str(imagehash.dhash(...))`` for hash_size 8.
    ``hash_size`` may be 2..8 (the hash must fit in 64 bits).
    """
    if not isinstance(patches, np.ndarray):
        patches = np.asarray(patches)
    if patches.dtype != np.uint8:
        raise TypeError(f"dhash expects uint8 patches, got dtype {patches.dtype}")
    if patches.ndim not in (2, 3):
        raise ValueError(f"dhash expects (N, H, W) or (H, W) patches, got shape {patches.shape}")
    if isinstance(hash_size, bool) or not isinstance(hash_size, (int, np.integer)):
        raise TypeError(f"hash_size must be an integer, got {hash_size!r}")
    hash_size = int(hash_size)
    if not 2 <= hash_size <= 8:
        raise ValueError(f"hash_size must be between 2 and 8 (64 bits), got {hash_size}")
    single = patches.ndim == 2
    batch = patches[None] if single else patches
    n, h, w = batch.shape
    if h == 0 or w == 0:
        raise ValueError(f"dhash cannot hash empty patches of shape {(h, w)}")
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    small = _resize(np.ascontiguousarray(batch), hash_size, hash_size + 1)
    bits = small[:, :, 1:] > small[:, :, :-1]  # (N, hash_size, hash_size)
    nbits = hash_size * hash_size
    padded = np.zeros((n, 64), dtype=bool)
    padded[:, 64 - nbits :] = bits.reshape(n, nbits)
    hashes = np.packbits(padded, axis=1).view(">u8").reshape(n).astype(np.uint64)
    return hashes[0] if single else hashes


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint32)
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,16}")


def hash_to_hex(h) -> str:
    """16 lowercase hex digits, identical to ``str(imagehash.dhash(...))`` (hash size 8)."""
    if isinstance(h, np.ndarray):
        if h.ndim != 0:
            raise ValueError("hash_to_hex takes one hash; use hashes_to_hex for arrays")
        h = h[()]
    if isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, np.integer)):
        raise TypeError(f"hash_to_hex expects an integer hash, got {type(h).__name__}")
    value = int(h)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"hash out of the 64-bit range: {value}")
    return format(value, "016x")


def hashes_to_hex(hs: np.ndarray) -> np.ndarray:
    """Vectorised :func:`hash_to_hex`: an array of the same shape with dtype '<U16'."""
    hs = np.asarray(hs)
    if hs.dtype != np.uint64:
        if hs.dtype.kind not in "ui":
            raise TypeError(f"hashes_to_hex expects integer hashes, got dtype {hs.dtype}")
        if hs.size and hs.min() < 0:
            raise ValueError("hashes must be non-negative")
        hs = hs.astype(np.uint64)
    flat = hs.reshape(-1).astype(">u8").view(np.uint8).reshape(-1, 8)  # big-endian bytes
    nibbles = np.empty((flat.shape[0], 16), dtype=np.uint8)
    nibbles[:, 0::2] = flat >> 4
    nibbles[:, 1::2] = flat & 0x0F
    return np.ascontiguousarray(_HEX_DIGITS[nibbles]).view("<U16").reshape(hs.shape)


def hex_to_hash(s: str) -> np.uint64:
    """Inverse of :func:`hash_to_hex` (also reads ``str(imagehash.dhash(...))``)."""
    if not isinstance(s, str):
        raise TypeError(f"hex_to_hash expects a str, got {type(s).__name__}")
    if not _HEX_RE.fullmatch(s):
        raise ValueError(f"not a 64-bit hex hash: {s!r}")
    return np.uint64(int(s, 16))


def _as_hash_array(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "ui":
        raise TypeError(f"hamming expects integer hashes, got dtype {a.dtype}")
    return a.astype(np.uint64, copy=False)  # signed input: its two's-complement bits


if hasattr(np, "bitwise_count"):
    _popcount = np.bitwise_count
else:  # numpy < 2.0
    _POP8 = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.uint64)
        return _POP8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def hamming(a, b) -> np.ndarray | int:
    """Hamming distance ``popcount(a ^ b)`` of 64-bit hashes, broadcasting.

    Two scalars give an ``int``; otherwise a uint8 array of the broadcast shape
    (e.g. ``hamming(h[:, None], h[None, :])`` for all pairs).
    """
    d = _popcount(np.bitwise_xor(_as_hash_array(a), _as_hash_array(b)))
    if np.ndim(d) == 0:
        return int(d)
    return d
