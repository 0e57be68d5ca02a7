"""What several commands share: the --channel / --timepoint options, reading an input with
them, and saving with the rescue fallback."""

from __future__ import annotations

import argparse
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
