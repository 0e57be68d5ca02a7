"""Near-duplicate grouping (SPEC section 2): greedy as in the CEM500K code, and connected
components, checked against literal reference implementations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from napari_cem._cancel import Cancelled
from napari_cem.dedup import _grouping as grouping
from napari_cem.dedup._grouping import Grouping, group_components, group_greedy, group_hashes

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_grouping.py"
_spec = importlib.util.spec_from_file_location("bench_grouping", _BENCH)
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
realistic_hashes = _bench.realistic_hashes

U64 = np.uint64


_POP8 = np.array([bin(i).count("1") for i in range(256)], np.int64)


def popcount(x):
    """Independent of the module's kernels: NumPy's own, or a byte lookup table."""
    x = np.ascontiguousarray(x, U64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return _POP8[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def distances(h):
    return popcount(h[:, None] ^ h[None, :])


def ref_greedy(h, cutoff, seed):
    """The CEM500K procedure, literally: shuffle, first remaining = exemplar, drop every
    remaining patch within the cutoff into its group, repeat."""
    n = h.size
    order = np.random.default_rng(seed).permutation(n)
    d = distances(h)
    remaining = np.ones(n, bool)
    group = np.full(n, -1, np.int64)
    exemplar = np.zeros(n, bool)
    g = 0
    pos = 0
    while remaining.any():
        while not remaining[order[pos]]:
            pos += 1
        e = order[pos]
        exemplar[e] = True
        members = remaining & (d[e] <= cutoff)
        group[members] = g
        remaining[members] = False
        g += 1
    return group, exemplar


def ref_components(h, cutoff, seed):
    n = h.size
    order = np.random.default_rng(seed).permutation(n)
    _, lab = connected_components(csr_matrix(distances(h) <= cutoff), directed=False)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    first = {}
    for i in order:  # first member of each component in the seeded order
        first.setdefault(lab[i], i)
    ex_sorted = sorted(first.values(), key=lambda i: rank[i])
    gid = {lab[e]: k for k, e in enumerate(ex_sorted)}
    group = np.array([gid[c] for c in lab], np.int64)
    exemplar = np.zeros(n, bool)
    exemplar[ex_sorted] = True
    return group, exemplar


def flip(h, bits):
    m = 0
    for b in bits:
        m |= 1 << int(b)
    return U64(int(h) ^ m)


def chain(rng, n, step=8):
    """A random walk with ``step`` flipped bits per step: neighbours close, ends far."""
    out = [U64(rng.integers(0, 2**64, dtype=U64))]
    for _ in range(n - 1):
        out.append(flip(out[-1], rng.choice(64, step, replace=False)))
    return np.array(out, U64)


def small_inputs():
    rng = np.random.default_rng(123)
    cases = []
    for k in range(6):
        cases.append(rng.integers(0, 2**64, size=rng.integers(2, 60), dtype=U64))  # random
        cases.append(realistic_hashes(int(rng.integers(20, 300)), seed=k))  # clustered
        base = rng.integers(0, 2**64, size=3, dtype=U64)  # dense: few centres, many flips
        cases.append(np.array([flip(base[rng.integers(3)], rng.choice(64, rng.integers(0, 14),
                                                                          replace=False))
                               for _ in range(rng.integers(30, 150))], U64))
        cases.append(chain(rng, int(rng.integers(5, 40)), step=int(rng.integers(4, 10))))
    with_dups = realistic_hashes(200, seed=99)
    cases.append(np.concatenate([with_dups, with_dups[:50], with_dups[:10]]))
    return cases


@pytest.fixture(params=["numba-serial", "numba-parallel", "numpy"])
def backend(request, monkeypatch):
    """Every code path, with several chunks even on small inputs."""
    if request.param.startswith("numba"):
        if not grouping._NUMBA:
            pytest.skip("numba is not installed")
        parallel = request.param.endswith("parallel")
        monkeypatch.setattr(grouping, "_PARALLEL_MIN_PAIRS", 0 if parallel else 1 << 62)
        monkeypatch.setattr(grouping, "_FIRST_CHUNK", 40 if parallel else 5)
    else:
        monkeypatch.setattr(grouping, "_NUMBA", False)
        monkeypatch.setattr(grouping, "_FIRST_CHUNK", 5)
    return request.param


def check(result, group, exemplar):
    assert isinstance(result, Grouping)
    assert result.group.dtype == np.int64 and result.exemplar.dtype == bool
    np.testing.assert_array_equal(result.group, group)
    np.testing.assert_array_equal(result.exemplar, exemplar)
    assert result.n_groups == result.n_kept == (group.max() + 1 if group.size else 0)


@pytest.mark.parametrize("cutoff", [0, 1, 12, 64])
def test_greedy_matches_reference(backend, cutoff):
    for h in small_inputs():
        for seed in (0, 1, 7):
            check(group_greedy(h, cutoff=cutoff, seed=seed), *ref_greedy(h, cutoff, seed))


@pytest.mark.parametrize("cutoff", [0, 1, 12, 64])
def test_components_match_scipy(backend, cutoff):
    for h in small_inputs():
        for seed in (0, 3):
            check(group_components(h, cutoff=cutoff, seed=seed), *ref_components(h, cutoff, seed))


@pytest.mark.parametrize("parallel_min", [0, None])
def test_medium_inputs_match_references(parallel_min, monkeypatch):
    """Thousands of hashes: many chunks, scans on one or two threads, rows resolved in a chunk."""
    if parallel_min is not None:
        monkeypatch.setattr(grouping, "_PARALLEL_MIN_PAIRS", parallel_min)
    inputs = [realistic_hashes(3000, seed=5),
              realistic_hashes(3000, seed=6, unique_fraction=0, mean_cluster=300, max_flips=9),
              np.concatenate([chain(np.random.default_rng(s), 300) for s in range(6)])]
    for seed, h in enumerate(inputs):
        check(group_greedy(h, seed=seed), *ref_greedy(h, 12, seed))
        check(group_components(h, seed=seed), *ref_components(h, 12, seed))


@pytest.mark.skipif(not grouping._NUMBA, reason="numba is not installed")
def test_row_roots_kernel():
    """The components scan's per-row kernel: distinct roots of all hits, whatever the order."""
    rng = np.random.default_rng(0)
    ref = realistic_hashes(5000, seed=2, unique_fraction=0, mean_cluster=500, max_flips=9)
    for trial in range(20):
        parent = rng.integers(0, 1 + trial % 12, ref.size)  # few labels: repeats within blocks
        h = ref[rng.integers(ref.size)]
        hits = popcount(ref ^ h) <= 12
        roots = np.empty(16, np.int64)
        n = grouping._row_roots(ref, h, U64(12), parent, roots)
        assert n > 0 and sorted(roots[:n].tolist()) == sorted(set(parent[hits].tolist()))
    roots = np.empty(2, np.int64)  # more distinct roots than room: -1
    assert grouping._row_roots(ref, ref[0], U64(64), np.arange(ref.size), roots) == -1


def test_greedy_earliest_exemplar_formulation():
    """A non-exemplar belongs to the earliest exemplar (in order) within the cutoff, and no
    exemplar has an earlier exemplar within the cutoff."""
    h = realistic_hashes(800, seed=3)
    g = group_greedy(h, seed=4)
    order = np.random.default_rng(4).permutation(h.size)
    ex_in_order = [i for i in order if g.exemplar[i]]
    assert [g.group[i] for i in ex_in_order] == list(range(len(ex_in_order)))
    ex_h = h[ex_in_order]
    for i in range(h.size):
        within = np.flatnonzero(popcount(ex_h ^ h[i]) <= 12)
        assert within[0] == g.group[i]
        if g.exemplar[i]:
            assert ex_in_order[within[0]] == i


def test_component_overflowing_the_root_list(monkeypatch):
    """One hash, last in the order, joins 40 groups, 28 of them from earlier chunks (chunks
    of 4, 8, 16, 13 rows): more than the 16 roots a row remembers, so it is rescanned."""
    monkeypatch.setattr(grouping, "_FIRST_CHUNK", 4)
    rng = np.random.default_rng(8)
    centre = U64(rng.integers(0, 2**64, dtype=U64))
    leaves, sets = [], []
    while len(leaves) < 40:  # each leaf 12 bits from the centre, pairwise > 12 apart
        s = set(rng.choice(64, 12, replace=False).tolist())
        if all(len(s & t) < 6 for t in sets):
            sets.append(s)
            leaves.append(flip(centre, s))
    n = len(leaves) + 1
    last = np.random.default_rng(0).permutation(n)[-1]
    h = np.empty(n, U64)
    h[np.arange(n) != last] = leaves
    h[last] = centre
    comp = group_components(h, seed=0)
    assert comp.n_groups == 1 and comp.exemplar[last] == False  # noqa: E712
    check(comp, *ref_components(h, 12, 0))
    greedy = group_greedy(h, seed=0)
    assert greedy.n_groups == 40  # the centre joins the earliest leaf; leaves stay apart
    check(greedy, *ref_greedy(h, 12, 0))


def _clusters(centres, sizes, radius, rng):
    h, label = [], []
    for k, (c, m) in enumerate(zip(centres, sizes)):
        for _ in range(m):
            h.append(flip(c, rng.choice(64, rng.integers(0, radius + 1), replace=False)))
            label.append(k)
    perm = rng.permutation(len(h))
    return np.array(h, U64)[perm], np.array(label)[perm]


def _same_partition(group, label):
    pairs = set(zip(group.tolist(), label.tolist()))
    return len(pairs) == len(set(group.tolist())) == len(set(label.tolist()))


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_known_clusters(method):
    rng = np.random.default_rng(2)
    # cutoff 12: four centres pairwise >= 42 apart (block code 000/110/101/011 over 21/21/22
    # bits, xored with a random mask), members within 6 bits of their centre
    blocks = [(0, 21), (21, 42), (42, 64)]
    words = [(), (0, 1), (0, 2), (1, 2)]
    mask = U64(rng.integers(0, 2**64, dtype=U64))
    centres = [flip(mask, [b for w in word for b in range(*blocks[w])]) for word in words]
    assert min(popcount(U64(a) ^ U64(b)) for a in centres for b in centres if a != b) > 36
    h, label = _clusters(centres, [40, 1, 17, 9], 6, rng)
    g = group_hashes(h, cutoff=12, method=method, seed=5)
    assert g.n_groups == 4 and _same_partition(g.group, label)
    # cutoff 4: thirty random centres pairwise > 12 apart, members within 2 bits
    centres = []
    while len(centres) < 30:
        c = U64(rng.integers(0, 2**64, dtype=U64))
        if all(popcount(c ^ d) > 12 for d in centres):
            centres.append(c)
    h, label = _clusters(centres, rng.integers(1, 12, 30), 2, rng)
    g = group_hashes(h, cutoff=4, method=method, seed=1)
    assert g.n_groups == 30 and _same_partition(g.group, label)
    order = np.random.default_rng(1).permutation(h.size)
    seen = set()
    for i in order:  # exemplar = first member in the seeded order; ids in exemplar order
        assert g.exemplar[i] == (label[i] not in seen)
        if g.exemplar[i]:
            assert g.group[i] == len(seen)
        seen.add(label[i])


def test_chain_greedy_splits_components_merge():
    h = chain(np.random.default_rng(4), 50, step=8)
    assert popcount(h[0] ^ h[-1]) > 12
    assert group_components(h).n_groups == 1
    assert group_greedy(h).n_groups > 1


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_cutoff_is_inclusive(method):
    a = U64(0x0123456789ABCDEF)
    b12, b13 = flip(a, range(12)), flip(a, range(13))
    assert group_hashes(np.array([a, b12]), cutoff=12, method=method).n_groups == 1
    assert group_hashes(np.array([a, b13]), cutoff=12, method=method).n_groups == 2
    assert group_hashes(np.array([a, b13]), cutoff=13, method=method).n_groups == 1
    opposite = np.array([a, ~a])  # distance 64
    assert group_hashes(opposite, cutoff=63, method=method).n_groups == 2
    assert group_hashes(opposite, cutoff=64, method=method).n_groups == 1
    assert group_hashes(opposite, cutoff=1000, method=method).n_groups == 1


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_deterministic_per_seed(method):
    h = realistic_hashes(2000, seed=11)
    a = group_hashes(h, method=method, seed=3)
    b = group_hashes(h, method=method, seed=3)
    np.testing.assert_array_equal(a.group, b.group)
    np.testing.assert_array_equal(a.exemplar, b.exemplar)
    c = group_hashes(h, method=method, seed=4)
    assert not np.array_equal(a.exemplar, c.exemplar)
    if method == "components":  # the partition itself does not depend on the order
        assert _same_partition(a.group, c.group)


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_blank_volume_is_one_group(method):
    h = np.full(10_000, 0xFFFF0000FFFF0000, U64)
    g = group_hashes(h, method=method, seed=2)
    assert g.n_groups == 1 and g.n_kept == 1
    assert np.all(g.group == 0)
    assert np.flatnonzero(g.exemplar).tolist() == [np.random.default_rng(2).permutation(h.size)[0]]


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_empty_and_single(method):
    calls = []
    g = group_hashes(np.array([], U64), method=method, progress=lambda d, t: calls.append((d, t)))
    assert g.group.shape == (0,) and g.exemplar.shape == (0,) and g.n_groups == 0
    assert calls[-1] == (0, 0)
    g = group_hashes(np.array([42], U64), method=method)
    assert g.group.tolist() == [0] and g.exemplar.tolist() == [True] and g.n_kept == 1
    g = group_hashes([], method=method)  # plain empty list is fine too
    assert g.n_groups == 0


def test_signed_int64_hashes_are_the_same_bits():
    h = realistic_hashes(500, seed=1)
    a = group_greedy(h)
    b = group_greedy(h.view(np.int64))
    np.testing.assert_array_equal(a.group, b.group)


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_progress_reaches_total(method):
    h = realistic_hashes(20_000, seed=6)
    calls = []
    group_hashes(h, method=method, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (h.size, h.size)
    assert all(t == h.size and 0 <= d <= t for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("method", ["greedy", "components"])
def test_should_stop_cancels(method, monkeypatch):
    h = realistic_hashes(20_000, seed=6)
    with pytest.raises(Cancelled):
        group_hashes(h, method=method, should_stop=lambda: True)
    monkeypatch.setattr(grouping, "_FIRST_CHUNK", 16)
    polls = []

    def stop_on_third():
        polls.append(1)
        return len(polls) >= 3

    progress = []
    with pytest.raises(Cancelled):
        group_hashes(h, method=method, should_stop=stop_on_third,
                     progress=lambda d, t: progress.append(d))
    assert len(polls) == 3  # stopped mid-run, at the third poll
    assert not progress or progress[-1] < h.size


def test_invalid_arguments():
    h = realistic_hashes(50)
    with pytest.raises(ValueError, match="method"):
        group_hashes(h, method="kmeans")
    for method in ("greedy", "components"):
        with pytest.raises(ValueError, match="cutoff"):
            group_hashes(h, cutoff=-1, method=method)
    with pytest.raises(ValueError):
        group_greedy(h.reshape(5, 10))
    with pytest.raises(ValueError):
        group_greedy(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="cutoff"):
        group_greedy(h, cutoff=2.5)


def test_realistic_generator():
    h = realistic_hashes(10_000, seed=1)
    assert h.dtype == U64 and h.size == 10_000
    np.testing.assert_array_equal(h, realistic_hashes(10_000, seed=1))
    g = group_greedy(h)
    assert 0.3 < g.n_groups / h.size < 0.7  # clusters of ~5 plus 20 % unique
