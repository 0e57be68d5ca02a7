"""Checked number types for the command line: a bad value is refused by argparse, at once.

``napari-cem segment --batch-size 0`` must not start anything: each numeric option
declares its range here, and argparse answers ``argument --batch-size: must be 1 or more,
got 0`` with exit code 2 before any file is read.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["float_in", "int_at_least", "int_in", "workers"]


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        word = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int):
    """Whole numbers >= *low*."""

    def parse(text):
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def int_in(low: int, high: int):
    """Whole numbers from *low* to *high*, both included."""

    def parse(text):
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = f"int in {low}..{high}"
    return parse


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """Finite numbers in [low, high] (``low_open``: above *low*, not equal)."""
    if low is None:
        too_low = None
    elif high is None:
        too_low = f"above {low:g}" if low_open else f"{low:g} or more"
    else:
        too_low = f"above {low:g} and at most {high:g}" if low_open else f"between {low:g} and {high:g}"

    def parse(text):
        value = _number(text, float)
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {too_low}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def workers(text):
    """Worker processes: 1 or more, or -1 for every core."""
    value = _number(text, int)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (or -1 for all cores), got {value}")
    return value
