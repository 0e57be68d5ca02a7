"""Measure how long napari's main thread stalls while a widget's job runs.

A QTimer asks to fire every ``interval_ms``; the longest gap between two firings, minus
the interval, is the longest time the Qt event loop could not process events (a freeze
the user would feel). Used by the widget benchmarks of each issue.
"""

from __future__ import annotations

import time


class StallProbe:
    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.gaps: list[float] = []
        self.ends: list[float] = []  # perf_counter() at the end of each gap
        self._last = None
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
            self.ends.append(now)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._tick()

    @property
    def longest_stall_ms(self) -> float:
        return max((g - self.interval for g in self.gaps), default=0.0) * 1000

    def longest_stall_ms_between(self, start: float, end: float) -> float:
        """Longest stall among the gaps that ended after *start* and at or before *end*
        (perf_counter() times): to tell a job's own stalls from those of showing its result."""
        return max((g - self.interval for g, e in zip(self.gaps, self.ends)
                    if start < e <= end), default=0.0) * 1000


def run_until(predicate, timeout_s: float) -> bool:
    """Spin the Qt event loop until *predicate()* is true (returns False on timeout)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.perf_counter() + timeout_s
    while time.perf_counter() < end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.002)
    return False
