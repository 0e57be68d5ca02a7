"""dHash: bit-identical to imagehash.dhash (PIL LANCZOS fixed point), API shapes, hex, Hamming."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from napari_cem.dedup import _dhash, dhash, hamming, hash_to_hex, hashes_to_hex, hex_to_hash


def _reference(patches: np.ndarray, hash_size: int = 8) -> list[str]:
    return [str(imagehash.dhash(Image.fromarray(p), hash_size=hash_size)) for p in patches]


def _stress_patches(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random, constant, gradients, saturated and checkerboard patterns (clipping/rounding)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = [
        rng.integers(0, 256, (h, w)),
        rng.integers(0, 256, (h, w)),
        rng.integers(100, 140, (h, w)),  # low contrast: many near-ties after resizing
        np.zeros((h, w)),
        np.full((h, w), 255),
        np.full((h, w), 128),
        xx * 255 // max(w - 1, 1),  # horizontal gradient
        255 - yy * 255 // max(h - 1, 1),  # vertical gradient
        (xx + yy) * 255 // max(h + w - 2, 1),
        (rng.random((h, w)) > 0.5) * 255,  # saturated 0/255 noise
        ((xx + yy) % 2) * 255,  # 1-px checkerboard
        ((xx // 2 + yy // 2) % 2) * 255,
        ((xx // 7) % 2) * 255,  # stripes: ringing overshoots to <0 and >255
        np.where(xx < w // 2, 0, 255),  # a step edge
        np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 4) ** 2, 255, 0),
    ]
    return np.stack(out).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# agreement with imagehash


def test_224_patches_match_imagehash():
    noise = np.random.default_rng(2).integers(0, 256, (40, 224, 224), dtype=np.uint8)
    patches = np.concatenate([_stress_patches(224, 224, seed=1), noise])
    ours = dhash(patches)
    assert ours.dtype == np.uint64 and ours.shape == (len(patches),)
    assert list(hashes_to_hex(ours)) == _reference(patches)


@pytest.mark.parametrize("shape", [
    # (300, 112) and (1000, 24): Pillow runs the vertical pass first
    (150, 224), (112, 300), (224, 112), (300, 112),
    (9, 8), (8, 9), (10, 10), (224, 9), (8, 224), (1000, 24), (37, 41), (3, 5), (1, 1),
])
def test_odd_sizes_match_imagehash(shape):
    patches = _stress_patches(*shape, seed=sum(shape))
    assert list(hashes_to_hex(dhash(patches))) == _reference(patches)


@pytest.mark.parametrize("hash_size", [2, 4, 6, 8])
def test_other_hash_sizes_match_imagehash(hash_size):
    patches = _stress_patches(224, 224, seed=hash_size)[:8]
    ours = dhash(patches, hash_size=hash_size)
    assert [int(h) for h in ours] == [int(s, 16) for s in _reference(patches, hash_size)]


def test_numpy_fallback_matches_imagehash(monkeypatch):
    """Without numba (as if the import failed) the numpy path gives the same hashes."""
    monkeypatch.setattr(_dhash, "_kernels", False)
    for shape in [(224, 224), (300, 112), (150, 224), (8, 9)]:
        patches = _stress_patches(*shape, seed=7)
        assert list(hashes_to_hex(dhash(patches))) == _reference(patches), shape


def test_numba_and_numpy_resize_identical():
    if not _dhash._get_kernels():
        pytest.skip("numba is not available")
    rng = np.random.default_rng(3)
    for shape, hs in [((224, 224), 8), ((224, 224), 5), ((300, 112), 8), ((57, 224), 8)]:
        patches = rng.integers(0, 256, (12, *shape), dtype=np.uint8)
        a = _dhash._resize_numba(patches, hs, hs + 1)
        b = _dhash._resize_numpy(patches, hs, hs + 1)
        assert np.array_equal(a, b), (shape, hs)


def test_coefficients_are_pillows():
    """Resizing with our coefficients reproduces PIL's 9x8 image itself, not just the bits."""
    rng = np.random.default_rng(4)
    for shape in [(224, 224), (300, 112), (5, 3)]:
        p = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = _dhash._resize_numpy(p[None], 8, 9)[0]
        pil = np.asarray(Image.fromarray(p).resize((9, 8), Image.Resampling.LANCZOS))
        assert np.array_equal(ours, pil), shape


def test_real_em_patches_agree(vnc_dir):
    import tifffile

    stack = tifffile.imread(vnc_dir / "stack1_image.tif")
    assert stack.dtype == np.uint8 and stack.ndim == 3
    z, h, w = stack.shape
    patches = np.stack([stack[k, y:y + 224, x:x + 224] for k in range(z)
                        for y in range(0, h - 223, 224) for x in range(0, w - 223, 224)])
    ours = hashes_to_hex(dhash(patches))
    ref = _reference(patches)
    agree = int(sum(a == b for a, b in zip(ours, ref)))
    fraction = agree / len(ref)
    print(f"dhash vs imagehash on VNC stack1: {agree}/{len(ref)} = "
          f"{100 * fraction:.3f} % identical")
    assert fraction >= 0.999, f"only {agree}/{len(ref)} patches agree"


# ----------------------------------------------------------------------------------------
# shapes and dtypes


def test_2d_gives_scalar_uint64():
    p = _stress_patches(224, 224)[0]
    h = dhash(p)
    assert isinstance(h, np.uint64)
    assert h == dhash(p[None])[0]
    assert hash_to_hex(h) == str(imagehash.dhash(Image.fromarray(p)))


def test_empty_batch():
    out = dhash(np.zeros((0, 224, 224), np.uint8))
    assert out.dtype == np.uint64 and out.shape == (0,)
    assert hashes_to_hex(out).shape == (0,)


def test_non_contiguous_input():
    vol = np.random.default_rng(5).integers(0, 256, (4, 300, 300), dtype=np.uint8)
    view = vol[:, 10:234, 20:244]
    assert not view.flags.c_contiguous
    assert np.array_equal(dhash(view), dhash(np.ascontiguousarray(view)))
    assert np.array_equal(dhash(vol[::2, :224, :224]), dhash(vol[[0, 2], :224, :224]))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.int8, bool])
def test_wrong_dtype_raises_type_error(dtype):
    with pytest.raises(TypeError, match="uint8"):
        dhash(np.zeros((2, 224, 224), dtype))


def test_bad_shapes_and_hash_size():
    with pytest.raises(ValueError, match="shape"):
        dhash(np.zeros(224, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        dhash(np.zeros((1, 1, 224, 224), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        dhash(np.zeros((2, 0, 224), np.uint8))
    for bad in (1, 9):
        with pytest.raises(ValueError, match="hash_size"):
            dhash(np.zeros((224, 224), np.uint8), hash_size=bad)


# ----------------------------------------------------------------------------------------
# hex and Hamming


def test_hex_round_trip():
    values = np.array([0, 1, 0xF0, 1 << 63, 2**64 - 1, 0x0123456789ABCDEF], dtype=np.uint64)
    hexes = hashes_to_hex(values)
    assert hexes.dtype == np.dtype("<U16")
    assert list(hexes) == ["0000000000000000", "0000000000000001", "00000000000000f0",
                           "8000000000000000", "ffffffffffffffff", "0123456789abcdef"]
    for v, s in zip(values, hexes):
        assert hash_to_hex(v) == s
        assert hash_to_hex(int(v)) == s
        r = hex_to_hash(s)
        assert isinstance(r, np.uint64) and r == v
    assert hex_to_hash("0123456789ABCDEF") == np.uint64(0x0123456789ABCDEF)
    grid = values.reshape(2, 3)
    assert hashes_to_hex(grid).shape == (2, 3)
    assert hashes_to_hex(grid)[1, 2] == "0123456789abcdef"


def test_hex_reads_imagehash_strings():
    patches = _stress_patches(224, 224, seed=11)
    for p, h in zip(patches, dhash(patches)):
        s = str(imagehash.dhash(Image.fromarray(p)))
        assert hex_to_hash(s) == h
        assert imagehash.hex_to_hash(hash_to_hex(h)) == imagehash.dhash(Image.fromarray(p))


def test_hex_rejects_bad_input():
    for bad in ("", "xyz", "0x12", "1" * 17, " 12", "1_0"):
        with pytest.raises(ValueError):
            hex_to_hash(bad)
    with pytest.raises(TypeError):
        hex_to_hash(12)
    with pytest.raises(ValueError):
        hash_to_hex(-1)
    with pytest.raises(ValueError):
        hash_to_hex(1 << 64)
    with pytest.raises(TypeError):
        hash_to_hex(1.5)


def test_hamming_values():
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(np.uint64(0b1011), np.uint64(0b0110)) == 3
    assert isinstance(hamming(np.uint64(5), np.uint64(3)), int)
    rng = np.random.default_rng(6)
    a = rng.integers(0, 2**64, 50, dtype=np.uint64)
    b = rng.integers(0, 2**64, 50, dtype=np.uint64)
    d = hamming(a, b)
    assert d.shape == (50,)
    assert [int(x) for x in d] == [(int(x) ^ int(y)).bit_count() for x, y in zip(a, b)]
    assert np.all(hamming(a, a) == 0)
    pairs = hamming(a[:, None], b[None, :])  # broadcasting: all pairs
    assert pairs.shape == (50, 50)
    assert pairs[3, 7] == (int(a[3]) ^ int(b[7])).bit_count()
    assert np.array_equal(hamming(a[0], b), hamming(np.full(50, a[0]), b))


def test_hamming_equals_imagehash_distance():
    patches = _stress_patches(224, 224, seed=12)
    ours = dhash(patches)
    ref = [imagehash.dhash(Image.fromarray(p)) for p in patches]
    for i in range(len(patches)):
        for j in range(len(patches)):
            assert hamming(ours[i], ours[j]) == ref[i] - ref[j]
