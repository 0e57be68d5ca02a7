"""The one progress protocol of the core: ``progress(done, total, stage)``.

Every long core job (hashing, grouping, exporting, features, segmenting, evaluating,
downloading, fine-tuning, pre-training) calls it with a count that moves and a short stage
name, optionally followed by details after a comma ("hashing", "epoch 3 / 10, loss
3.210"). The command line draws it
with one tqdm adapter (``cli.progress_callback``), the dock widgets with one
progress row (``_widgets/_jobs``); :class:`Throttled` keeps either from being flooded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Progress", "Throttled", "report", "staged"]

Progress = Callable[[int, int, str], None]


def report(progress: Progress | None, done: int, total: int, stage: str) -> None:
    """Call *progress* when there is one (the core's jobs all take ``progress=None``)."""
    if progress is not None:
        progress(int(done), int(total), stage)


def staged(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback for a sub-step that reports as *stage*, or None."""
    if progress is None:
        return None
    return lambda done, total: progress(int(done), int(total), stage)


class Throttled:
    """Pass ``progress(done, total, stage)`` calls on at most every *interval* seconds.

    The first call, a new stage name (the text before any comma) or total, and the final
    count (``done >= total``) always go through, so a bar never stops short of its end and
    a stage is never skipped.
    """

    def __init__(self, callback: Progress, interval: float = 0.1):
        self.callback = callback
        self.interval = float(interval)
        self._last_time = -float("inf")
        self._last_key: tuple | None = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        now = time.perf_counter()
        key = (stage.split(",", 1)[0], total)
        if key == self._last_key and done < total and now - self._last_time < self.interval:
            return
        self._last_time, self._last_key = now, key
        self.callback(int(done), int(total), stage)
