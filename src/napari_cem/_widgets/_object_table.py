"""The table of objects in the Organelles widget: one row per object, sortable by any
column, filtered by size and class, rows selected from the viewer and the other way round.

A Qt model over the proofreader's numpy columns (no item per cell): a table of thousands of
objects is replaced after an edit in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QItemSelection, QItemSelectionModel, QModelIndex, \
    QSortFilterProxyModel, Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

_ALL = "all classes"


class ObjectColumns(QAbstractTableModel):
    """Columns (dict name -> numpy array, one row per object) as a Qt table model."""

    def __init__(self):
        super().__init__()
        self.columns: dict = {}
        self.names: list[str] = []
        self.rows = 0

    def set_columns(self, columns: dict) -> None:
        self.beginResetModel()
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.names = list(self.columns)
        self.rows = len(next(iter(self.columns.values()))) if self.columns else 0
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):  # noqa: N802, B008
        return 0 if parent.isValid() else self.rows

    def columnCount(self, parent=QModelIndex()):  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.names)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.columns[self.names[index.column()]][index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _shown(value)
        if role == Qt.ItemDataRole.UserRole:  # what sorting compares
            return value.item() if isinstance(value, np.generic) else value
        if role == Qt.ItemDataRole.TextAlignmentRole and not isinstance(value, str):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal and section < len(self.names):
            return self.names[section].replace("_", " ")
        return None

    def label_at(self, row: int) -> int:
        return int(self.columns["label"][row])


def _shown(value) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


class _SizeAndClass(QSortFilterProxyModel):
    """Rows of objects with at least ``min_voxels`` voxels and of class ``klass``."""

    def __init__(self):
        super().__init__()
        self.min_voxels = 0
        self.klass = _ALL
        self.setSortRole(Qt.ItemDataRole.UserRole)

    def set_filter(self, min_voxels: int, klass: str) -> None:
        self.min_voxels, self.klass = int(min_voxels), klass
        self.invalidateFilter()

    def filterAcceptsRow(self, row, parent):  # noqa: N802
        cols = self.sourceModel().columns
        if self.min_voxels and "voxels" in cols and cols["voxels"][row] < self.min_voxels:
            return False
        return self.klass == _ALL or "class" not in cols or cols["class"][row] == self.klass


class ObjectTable(QTableView):
    """The objects' table. *on_select(labels)* is called when the user selects rows (a click
    jumps to the object; Ctrl/Shift-click picks several, to merge or delete them)."""

    def __init__(self, on_select: Callable[[list[int]], None], parent=None):
        super().__init__(parent)
        self.model_ = ObjectColumns()
        self.proxy = _SizeAndClass()
        self.proxy.setSourceModel(self.model_)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setDefaultSectionSize(82)
        self.setMinimumHeight(180)
        self._on_select = on_select
        self._quiet = False
        self.selectionModel().selectionChanged.connect(self._selection_changed)

    # -- contents -------------------------------------------------------------------------
    def set_columns(self, columns: dict) -> None:
        """Show these columns, keeping the selected objects selected where they still exist."""
        kept = self.selected_labels()
        names = list(self.model_.names)
        self._quiet = True
        try:
            self.model_.set_columns(columns)
        finally:
            self._quiet = False
        if self.model_.names != names:  # new columns: each as wide as its title
            metrics = self.horizontalHeader().fontMetrics()
            for i, name in enumerate(self.model_.names):
                width = metrics.horizontalAdvance(name.replace("_", " ")) + 24
                self.setColumnWidth(i, max(56, width))
        self.select_labels(kept, scroll=False)

    def set_filter(self, min_voxels: int, klass: str) -> None:
        self.proxy.set_filter(min_voxels, klass)

    def visible_count(self) -> int:
        return self.proxy.rowCount()

    # -- selection ------------------------------------------------------------------------
    def selected_labels(self) -> list[int]:
        rows = {self.proxy.mapToSource(i).row() for i in self.selectionModel().selectedRows()}
        return sorted(self.model_.label_at(r) for r in rows if 0 <= r < self.model_.rows)

    def select_labels(self, labels, *, scroll: bool = True) -> None:
        """Select the rows of *labels* (from the viewer) without calling *on_select*."""
        ids = self.model_.columns.get("label")
        selection = QItemSelection()
        first = None
        if ids is not None and len(labels):
            for r in np.flatnonzero(np.isin(ids, list(labels))):
                index = self.proxy.mapFromSource(self.model_.index(int(r), 0))
                if index.isValid():
                    last = self.proxy.index(index.row(), self.proxy.columnCount() - 1)
                    selection.select(index, last)
                    first = first or index
        self._quiet = True
        try:
            self.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        finally:
            self._quiet = False
        if scroll and first is not None:
            self.scrollTo(first)

    def _selection_changed(self, *_args) -> None:
        if not self._quiet:
            self._on_select(self.selected_labels())


def class_filter_choices(columns: dict) -> list[str]:
    """'all classes' and each class in the table."""
    names = columns.get("class")
    return [_ALL] + ([] if names is None else sorted({str(n) for n in names}))
