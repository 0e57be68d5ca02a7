"""What several commands share: the --channel / --timepoint options, reading an input with
them, saving with the rescue fallback, and the --scheduler / --workers cluster."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .._argtypes import int_at_least
from . import CLIError


def _option_names(prefix: str = "") -> dict[str, str]:
    """How a choice of channel / time point is asked for on the command line."""
    return {"channel": f"--{prefix}channel ", "timepoint": f"--{prefix}timepoint "}


def _axis_options(p: argparse.ArgumentParser, prefix: str = "", what: str = "the input") -> None:
    """--channel / --timepoint (or --labels-channel ...) for a command that reads an image."""
    p.add_argument(f"--{prefix}timepoint", type=int_at_least(0), default=None, metavar="T",
                   help=f"index on the time axis of {what}, if it has one")
    p.add_argument(f"--{prefix}channel", type=int_at_least(0), default=None, metavar="C",
                   help=f"index on the channel axis of {what}, if it has one")


def _read(path, args, command: str, prefix: str = "", **options):
    """read_volume with the command's --channel / --timepoint; its notes go to stderr and
    an axis choice it asks for names this command's options."""
    from ..io import VolumeError, read_volume

    key = prefix.replace("-", "_")
    try:
        data, meta = read_volume(path, channel=getattr(args, f"{key}channel", None),
                                 timepoint=getattr(args, f"{key}timepoint", None), **options)
    except VolumeError as exc:
        raise CLIError(exc.message(_option_names(prefix))) from None
    for note in meta.warnings:
        print(f"napari-cem {command}: note: {Path(str(path)).name}: {note}", file=sys.stderr)
    return data, meta


def _save(save, path, command: str):
    """Save with the rescue fallback; (path written, exit code): 1 when it was rescued."""
    from .._outputs import save_or_rescue

    written, problem = save_or_rescue(save, path)
    if problem:
        print(f"napari-cem {command}: error: {problem}", file=sys.stderr)
    return written, (1 if problem else 0)


def _cluster_options(p, lead: str, tail: str, devices: bool = False) -> None:
    """--scheduler ADDRESS / --workers N (/ --devices LIST): work spread over a dask.distributed
    cluster."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help=f"{lead} the dask.distributed cluster at ADDRESS (tcp://host:8786); {tail}")
    group.add_argument("--workers", type=int_at_least(1), default=None, metavar="N",
                       help=f"{lead} a cluster of N worker processes made on this machine (one torch "
                            "thread each)")
    if devices:
        group.add_argument("--devices", default=None, metavar="LIST",
                           help=f"{lead} one worker per GPU of this machine: cuda:0,cuda:1,... (each worker "
                                "sees only its own card)")


@contextlib.contextmanager
def cli_cluster(args):
    """The client of --scheduler's cluster or of --workers' local one, with a line saying so."""
    from ..cluster import cluster_client

    try:
        with cluster_client(args.scheduler, args.workers, getattr(args, "devices", None)) as client:
            n = len(client.scheduler_info()["workers"])
            print(f"napari-cem {args.command}: {n} dask worker{'s' if n != 1 else ''} at "
                  f"{client.scheduler.address}")
            yield client
    except (ConnectionError, ValueError) as exc:
        raise CLIError(str(exc)) from None
