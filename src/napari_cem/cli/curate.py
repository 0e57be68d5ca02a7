"""``napari-cem curate``: patches, near-duplicates by dHash, the kept exemplars exported."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._argtypes import float_in, int_at_least, int_in
from .._outputs import check_writable_folder
from . import CLIError, command, progress_bar, progress_callback
from ._common import _axis_options, _option_names


def _curate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="EM volumes or 2D images (any format napari-cem reads); each is one source")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="export folder: patches/ (kept exemplars as TIFF) and manifest.csv")
    p.add_argument("--patch-size", type=int_at_least(8), default=224, help="patch side in pixels (default 224)")
    p.add_argument("--cutoff", type=int_in(0, 64), default=12,
                   help="Hamming distance of near-duplicates, inclusive (default 12)")
    p.add_argument("--planes", choices=["auto", "xy", "all"], default="auto",
                   help="auto: xy, xz and yz for near-isotropic volumes, xy otherwise (default)")
    p.add_argument("--tolerance", type=float_in(0), default=0.2,
                   help="relative z/xy spacing difference still called isotropic (default 0.2)")
    p.add_argument("--grouping", choices=["greedy", "components"], default="greedy",
                   help="greedy: the original exemplar procedure (default); components: transitive groups")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the greedy shuffle (default 0)")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="parallel processes, one source each (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler address: spread the sources over that cluster "
                        "(its workers must see the same files)")
    _axis_options(p, what="every input")


@command("curate", "cut patches, find near-duplicates by dHash and export the kept exemplars",
         _curate_args)
def run_curate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..batch import CurateRequest, curate_files

    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise CLIError(f"input not found: {', '.join(missing)}")
    out = check_writable_folder(args.output)
    request = CurateRequest(patch_size=args.patch_size, cutoff=args.cutoff, planes=args.planes,
                            grouping=args.grouping, seed=args.seed, tolerance=args.tolerance,
                            channel=args.channel, timepoint=args.timepoint)
    single = len(args.inputs) == 1 and not args.scheduler
    bar = progress_bar(total=0 if single else len(args.inputs), unit="patch" if single else "source",
                       desc="curate")
    errors = []

    def on_done(summary, n_done, n_total):
        if "error" in summary:
            errors.append(summary)
            tqdm.write(f"napari-cem curate: error: {summary['source']}: {summary['error']}", file=sys.stderr)
        elif summary.get("skipped"):
            tqdm.write(f"{summary['source']}: already exported, skipped", file=sys.stderr)
        else:
            tqdm.write(f"{summary['source']}: {summary['n_patches']:,} patches "
                       f"({'/'.join(summary['planes'])}), {summary['n_groups']:,} groups, "
                       f"{summary['written']:,} exemplars written in {summary['seconds']:.1f} s",
                       file=sys.stderr)
        if not single:
            bar.update(1)

    progress = progress_callback(bar, "curate")

    try:
        results = curate_files(args.inputs, out, request, workers=args.workers,
                               scheduler=args.scheduler, on_done=on_done,
                               progress=progress if single else None, option_names=_option_names())
    finally:
        bar.close()
    done = [r for r in results if "error" not in r]
    kept = sum(r.get("n_kept", 0) for r in done if not r.get("skipped"))
    print(f"{len(done)} of {len(results)} sources curated into {out} "
          f"({kept:,} exemplars written this run); manifest: {out / 'manifest.csv'}")
    return 1 if errors else 0
