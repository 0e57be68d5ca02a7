"""A small bar plot of one score per slice (the Segment widget's mean uncertainty): a click
on a bar asks for that slice."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

_BACKGROUND = QColor(30, 30, 36)
_BAR = QColor(230, 140, 60)
_MARKED = QColor(250, 250, 250)
_TEXT = QColor(200, 200, 200)


class SliceScores(QWidget):
    """Bars of *scores* (0-1), one per z slice; the *marked* slice is drawn white. Clicking
    a bar calls *on_pick(z)*."""

    def __init__(self, on_pick: Callable[[int], None], tooltip: str = "", parent=None):
        super().__init__(parent)
        self.scores = np.zeros(0)
        self.marked: int | None = None
        self._on_pick = on_pick
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(tooltip)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_scores(self, scores) -> None:
        self.scores = np.asarray(scores, np.float64)
        self.marked = None
        self.update()

    def mark(self, z: int | None) -> None:
        self.marked = z
        self.update()

    def slice_at(self, x: float) -> int | None:
        """The slice whose bar lies under widget column *x* (None: no scores)."""
        n = len(self.scores)
        if n == 0:
            return None
        return int(min(n - 1, max(0, (x - 4) * n // max(1, self.width() - 8))))

    def mousePressEvent(self, event):  # noqa: N802
        z = self.slice_at(event.position().x() if hasattr(event, "position") else event.x())
        if z is not None:
            self._on_pick(z)

    def paintEvent(self, event):  # noqa: N802
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, _BACKGROUND)
        n = len(self.scores)
        top = float(self.scores.max()) if n else 0.0
        if n == 0 or top <= 0:
            p.setPen(_TEXT)
            p.drawText(8, h // 2, "no uncertainty yet")
            p.end()
            return
        step = (w - 8) / n
        for z, v in enumerate(self.scores):
            bar = (h - 18) * float(v) / top
            p.fillRect(QRectF(4 + z * step, h - 14 - bar, max(1.0, step - 1), bar),
                       _MARKED if z == self.marked else _BAR)
        p.setPen(_TEXT)
        label = f"uncertainty per slice, max {top:.3f}"
        if self.marked is not None:
            label = f"slice {self.marked}: {self.scores[self.marked]:.3f}, max {top:.3f}"
        p.drawText(6, h - 2, label)
        p.end()
