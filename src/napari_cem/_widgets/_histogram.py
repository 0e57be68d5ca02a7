"""A small histogram of one table column (object volumes, diameters) drawn with QPainter."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

_BACKGROUND = QColor(30, 30, 36)
_BAR = QColor(90, 170, 230)
_TEXT = QColor(200, 200, 200)
BINS = 20


class Histogram(QWidget):
    """Counts of *values* in :data:`BINS` bins between their min and max, titled *title*."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.title = title
        self.counts = np.zeros(0, np.int64)
        self.edges = np.zeros(0)
        self.setMinimumHeight(80)
        self.setMinimumWidth(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, values, title: str | None = None) -> None:
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        if title is not None:
            self.title = title
        if values.size:
            self.counts, self.edges = np.histogram(values, bins=BINS)
        else:
            self.counts, self.edges = np.zeros(0, np.int64), np.zeros(0)
        self.setToolTip(f"{self.title}: {values.size:,} objects" + (
            f", {self.edges[0]:.4g} to {self.edges[-1]:.4g}" if values.size else ""))
        self.update()

    def paintEvent(self, event):  # noqa: N802
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, _BACKGROUND)
        p.setPen(_TEXT)
        if self.counts.size == 0 or self.counts.max() == 0:
            p.drawText(6, h // 2, f"{self.title}: no objects")
            p.end()
            return
        step = (w - 8) / len(self.counts)
        top = float(self.counts.max())
        for i, c in enumerate(self.counts):
            bar = (h - 30) * c / top
            p.fillRect(QRectF(4 + i * step, h - 14 - bar, max(1.0, step - 1), bar), _BAR)
        p.drawText(6, 12, f"{self.title} (max {int(top)} per bin)")
        p.drawText(6, h - 2, f"{self.edges[0]:.3g}")
        right = f"{self.edges[-1]:.3g}"
        p.drawText(w - 6 - p.fontMetrics().horizontalAdvance(right), h - 2, right)
        p.end()
