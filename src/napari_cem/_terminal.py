"""Progress on the command line: one tqdm bar shape for every command."""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "progress_callback"]


def progress_bar(**options):
    """A tqdm bar on stderr, drawn only on a terminal: in a log file (batch jobs, pipes) its
    carriage-return redraws would garble the lines; messages still go out via ``tqdm.write``."""
    from tqdm import tqdm

    disable = options.pop("disable", False) or not _is_terminal(sys.stderr)
    return tqdm(file=sys.stderr, dynamic_ncols=True, disable=disable, **options)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_callback(bar, command: str):
    """The core's ``progress(done, total, stage)`` drawn on *bar* as '<command> (<stage>)'."""

    def progress(done: int, total: int, stage: str) -> None:
        bar.set_description(f"{command} ({stage})", refresh=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress
