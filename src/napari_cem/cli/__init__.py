"""The ``napari-cem`` command: one module per subcommand (``cli/<command>.py``), each
registering itself with :func:`command`; this module holds the registry, the entry point and
the one progress bar every command draws. ``python -m napari_cem.cli`` is the same command
(and the torchrun entry point of multi-GPU pre-training).

Exit codes: 0 done; 1 done in part (``curate``: some sources failed; ``finetune`` /
``segment``: the result could not be saved where asked and was saved in the cache's
``rescued`` folder instead); 2 nothing done: a bad option, an unreadable input or an
output that cannot be written (one plain line, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

COMMANDS = ("demo", "info", "inspect", "curate", "segment", "instances", "evaluate", "finetune", "filter", "pretrain",
            "export-model")
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, Callable]] = {}


class CLIError(Exception):
    """A problem the user can fix; printed without traceback."""


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register the decorated ``run(args) -> exit code`` as subcommand *name*.

    *arguments* adds the subcommand's options to its parser.
    """

    def register(run: Callable):
        _COMMANDS[name] = (help, arguments, run)
        return run

    return register


def _load_commands() -> None:
    """Import every command module (each registers itself), in the order of ``--help``."""
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


# -- the progress bar ---------------------------------------------------------------------------
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


# -- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    _load_commands()

    parser = argparse.ArgumentParser(
        prog="napari-cem",
        description="CEM500K workflow for cellular EM: curate patches, fine-tune, segment.",
    )
    parser.add_argument("--version", action="version", version=f"napari-cem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if arguments is not None:
            arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a bad option (argparse said why, exit 2), or --help / --version
        return done.code if isinstance(done.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from .._outputs import OutputError, describe_os_error
    from ..io import VolumeError
    from ._common import _option_names

    try:
        return int(args._run(args) or 0)
    except VolumeError as exc:
        print(f"napari-cem {args.command}: error: {exc.message(_option_names())}", file=sys.stderr)
        return 2
    except (CLIError, OutputError) as exc:
        print(f"napari-cem {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only, permission denied, drive gone: say which
        print(f"napari-cem {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-cem {args.command}: interrupted", file=sys.stderr)
        return 130
