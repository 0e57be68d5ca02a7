"""Near-duplicate grouping of dHash values: greedy (CEM500K) and connected components.

Goal: greedy on 1,000,000 hashes of one source in under 60 s and under 2 GB peak memory on
the benchmark machine; scaling 10^4, 10^5, 10^6. Greedy costs about N x G / 2 pair tests
for G groups, so uniformly random hashes (G close to N) are also measured as the near-worst
case. Components test all pairs: quadratic in the number of distinct hashes.

The inputs imitate one source's patches: clusters of near-duplicates (a random 64-bit
centre, members with 0-10 random bit flips, geometric cluster sizes with mean ~5, like
neighbouring EM sections) plus ~20 % unique random hashes. Real dHash bits are not uniform;
that does not change the cost here: the scans are brute force (no bucketing by bit
patterns), so time depends only on the number of hashes and of groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _harness import Timer, emit, row, run_isolated  # noqa: E402

GREEDY_SIZES = (10_000, 100_000, 1_000_000)
COMPONENT_SIZES = (10_000, 100_000, 1_000_000)
WORST_N = 1_000_000
CUTOFF = 12


def realistic_hashes(n: int, seed: int = 0, unique_fraction: float = 0.2, mean_cluster: float = 5.0,
                     max_flips: int = 10) -> np.ndarray:
    """``n`` uint64 dHash-like values: near-duplicate clusters plus unique random hashes.

    Cluster sizes are geometric with mean ``mean_cluster``; each member is its cluster's
    random centre with 0..``max_flips`` (uniform) distinct random bits flipped.
    Deterministic for a seed; the result is shuffled.
    """
    rng = np.random.default_rng(seed)
    n_unique = int(round(n * unique_fraction))
    n_clustered = n - n_unique
    p = 1.0 / mean_cluster
    sizes = rng.geometric(p, size=max(1, int(n_clustered * p * 1.2) + 10))
    while sizes.sum() < n_clustered:
        sizes = np.concatenate([sizes, rng.geometric(p, size=sizes.size)])
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, n_clustered)) + 1
    sizes = sizes[:k]
    sizes[-1] -= ends[k - 1] - n_clustered
    sizes = sizes[sizes > 0]
    centres = rng.integers(0, 2**64, size=sizes.size, dtype=np.uint64, endpoint=False)
    members = np.repeat(centres, sizes)
    flips = rng.integers(0, max_flips + 1, size=members.size)
    mask = np.zeros(members.size, np.uint64)
    count = np.zeros(members.size, np.int64)
    need = np.flatnonzero(count < flips)
    while need.size:  # add random bits until each mask has exactly `flips` distinct bits set
        bit = np.left_shift(np.uint64(1), rng.integers(0, 64, need.size).astype(np.uint64))
        count[need] += (mask[need] & bit) == 0
        mask[need] |= bit
        need = need[count[need] < flips[need]]
    members ^= mask
    uniques = rng.integers(0, 2**64, size=n_unique, dtype=np.uint64, endpoint=False)
    out = np.concatenate([members, uniques])
    rng.shuffle(out)
    return out


def case_group(method: str, n: int, unique_fraction: float = 0.2) -> dict:
    from napari_cem.dedup._grouping import group_hashes

    hashes = realistic_hashes(n, seed=n, unique_fraction=unique_fraction)
    group_hashes(hashes[:2000], cutoff=CUTOFF, method=method)  # numba compile / cache load
    calls = []
    with Timer() as t:
        g = group_hashes(hashes, cutoff=CUTOFF, method=method,
                         progress=lambda done, total: calls.append(done))
    return {"seconds": round(t.seconds, 3), "n": n, "distinct": int(np.unique(hashes).size),
            "groups": g.n_groups, "progress_calls": len(calls)}


def case_baseline() -> dict:
    from napari_cem.dedup._grouping import group_hashes

    group_hashes(realistic_hashes(2000), cutoff=CUTOFF)
    return {}


def _fmt(res: dict, base: float) -> str:
    rate = res["n"] / res["seconds"] if res["seconds"] else float("inf")
    return (f"{res['seconds']} s ({rate:,.0f} hashes/s), {res['groups']:,} groups "
            f"({100 * (1 - res['groups'] / res['n']):.0f} % removed), peak RSS "
            f"{res['peak_rss_mib']:.0f} MiB (imports alone {base:.0f} MiB)")


def run_suite() -> list[str]:
    # All cases first, rows after: row() imports torch (for the GPU name) and a child started
    # by a big parent reports the parent's peak RSS (Linux keeps ru_maxrss across exec).
    base = run_isolated("bench_grouping", "baseline")["peak_rss_mib"]
    results = [(method, n, run_isolated("bench_grouping", method, "--n", str(n)))
               for method, sizes in (("greedy", GREEDY_SIZES), ("components", COMPONENT_SIZES))
               for n in sizes]
    worst = run_isolated("bench_grouping", "greedy", "--n", str(WORST_N), "--unique-fraction", "1")
    return [row(f"grouping: {method}, {n:,} realistic dHashes (clusters mean 5 + 20 % unique), "
                f"cutoff {CUTOFF}", _fmt(res, base)) for method, n, res in results] + [
        row(f"grouping: greedy near-worst case, {WORST_N:,} uniformly random dHashes (no planted "
            f"clusters, so ~90 % are groups), cutoff {CUTOFF}", _fmt(worst, base))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["greedy", "components", "baseline"], required=True)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--unique-fraction", type=float, default=0.2)
    args = parser.parse_args()
    emit(case_baseline() if args.case == "baseline"
         else case_group(args.case, args.n, args.unique_fraction))
