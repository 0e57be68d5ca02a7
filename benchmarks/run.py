"""Benchmark runner: ``python benchmarks/run.py io [--record]``.

Each suite runs its cases in fresh processes (so peak memory is per case), prints the
RESULTS.md rows, and with ``--record`` appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SUITES = {
    "io": "bench_io",
    "grouping": "bench_grouping",
    "dhash": "bench_dhash",
    "curate": "bench_curate",
    "pretrain": "bench_pretrain",
    "finetune": "bench_finetune",
    "infer": "bench_infer",
    "quality": "bench_quality",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--record", action="store_true", help="append the rows to RESULTS.md")
    args = parser.parse_args(argv)
    module = importlib.import_module(SUITES[args.suite])
    rows = module.run_suite()
    print("\n".join(rows))
    if args.record:
        from _harness import record

        record(rows)
        print("recorded in benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
