"""The proofreading part of the Organelles widget: the edit buttons, the autosave and the
CSV export. Each button runs one ``napari_cem.proofread`` edit on the objects the widget
has selected; a refused edit is a message, never an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton, SpinBox

from ._common import notify_error, notify_warning, output_problem, text_label
from ._layers import units_of

_POINTS_NAME = "split points"


class ProofreadPanel(Container):
    """Edit buttons, autosave and export for *session*, the Organelles widget (it holds the
    ``proofreader``, the ``objects_layer``, the ``viewer`` and says what is ``selected()``)."""

    def __init__(self, session):
        self.session = session
        self.autosave = None  # napari_cem.autosave.Autosave, once a file is chosen
        super().__init__(widgets=self._edit_rows())
        self._relay = _relay(self._autosave_failed)
        self.export_button.changed.connect(lambda _v=None: self.export_csv())
        self.autosave_file.changed.connect(lambda _v=None: self.start_autosave())

    @property
    def proofreader(self):
        return self.session.proofreader

    @property
    def viewer(self):
        return self.session.viewer

    def selected(self) -> list[int]:
        return self.session.selected()

    def set_enabled(self, enabled: bool) -> None:
        for b in (self.merge_button, self.delete_button, self.split_button, self.fill_button,
                  self.dilate_button, self.erode_button, self.relabel_button, self.undo_button,
                  self.export_button):
            b.enabled = enabled

    # -- rows ---------------------------------------------------------------------------
    def _edit_rows(self) -> list:
        def button(text, tip, action):
            b = PushButton(text=text, tooltip=tip)
            b.changed.connect(lambda _v=None: self._edit(action))
            return b

        self.merge_button = button("Merge", "Join the selected objects (rows) into one.", self.merge)
        self.delete_button = button("Delete", "Remove the selected objects.", self.delete)
        self.split_button = button("Split with points", "First press: add points on one object (one per "
                                   "piece). Second press: cut it there.", self.split_at_points)
        self.fill_button = button("Fill holes", "Background enclosed by the selected object (per "
                                  "xy slice) becomes it.", lambda: self._each(self.proofreader.fill_holes))
        self.dilate_button = button("Dilate", "Grow the selected object by the steps, into the "
                                    "background.", lambda: self._each(self._dilate))
        self.erode_button = button("Erode", "Shrink the selected object by the steps.",
                                   lambda: self._each(self._erode))
        self.steps = SpinBox(label="Steps (voxels)", value=1, min=1, max=50)
        self.relabel_button = button("Relabel 1..N", "Give the objects consecutive ids.",
                                     lambda: self.proofreader.relabel())
        self.undo_button = button("Undo", "Take back the last edit of this widget.", lambda: self.proofreader.undo())
        self.edit_status = text_label("")
        self.autosave_file = FileEdit(label="Autosave to", mode="w", filter="TIFF (*.tif)",
                                      tooltip="Every edit writes the objects (TIFF) and their table "
                                              "(CSV beside it), atomically.")
        self.csv_file = FileEdit(label="Table CSV", mode="w", filter="CSV (*.csv)")
        self.export_button = PushButton(text="Export CSV")

        def pair(*widgets):
            return Container(widgets=list(widgets), layout="horizontal", labels=False)

        return [pair(self.merge_button, self.delete_button, self.split_button),
                pair(self.fill_button, self.dilate_button, self.erode_button), self.steps,
                pair(self.relabel_button, self.undo_button), self.edit_status,
                self.autosave_file, self.csv_file, self.export_button]

    # -- edits ----------------------------------------------------------------------------
    def _edit(self, action) -> None:
        """Run one edit; a refused one (bad choice, nothing to split) is a message, not an error."""
        if self.proofreader is None:
            notify_error("Find objects, or measure a Labels layer of objects, first.")
            return
        try:
            edit = action()
        except ValueError as exc:
            self.edit_status.value = str(exc)
            notify_warning(str(exc))
            return
        if edit is None:
            self.edit_status.value = "Nothing changed."

    def _each(self, edit_one):
        labels = self.selected()
        if len(labels) != 1:
            raise ValueError("Select one object (a row of the table, or click it with the picker).")
        return edit_one(labels[0])

    def _dilate(self, label):
        return self.proofreader.dilate(label, int(self.steps.value))

    def _erode(self, label):
        return self.proofreader.erode(label, int(self.steps.value))

    def merge(self):
        return self.proofreader.merge(self.selected())

    def delete(self):
        return self.proofreader.delete(self.selected())

    def split_at_points(self):
        """First call: a Points layer to click the pieces' seeds into. Once it holds two or more
        points on one object: that object is cut there and the points are cleared."""
        points = self._split_points()
        if len(points.data) < 2:
            self.viewer.layers.selection.active = points
            points.mode = "add"
            self.edit_status.value = ("Click one point in each piece of the object to split "
                                      "(in 'split points'), then press Split with points again.")
            return None
        layer = self.session.objects_layer
        coords = np.array([layer.world_to_data(points.data_to_world(p)) for p in points.data])
        first = np.round(coords[0]).astype(int)
        if not all(0 <= v < n for v, n in zip(first, layer.data.shape)) or layer.data[tuple(first)] == 0:
            raise ValueError("The first split point is not on an object: move it onto the object.")
        edit = self.proofreader.split(int(layer.data[tuple(first)]), coords)
        points.data = np.zeros((0, points.ndim))
        self.viewer.layers.selection.active = layer
        return edit

    def _split_points(self):
        for layer in self.viewer.layers:
            if layer.name == _POINTS_NAME and layer.__class__.__name__ == "Points":
                return layer
        layer = self.session.objects_layer
        return self.viewer.add_points(np.zeros((0, layer.ndim)), name=_POINTS_NAME, scale=layer.scale,
                                      translate=layer.translate, size=8 * float(layer.scale[-1]),
                                      face_color="yellow", **units_of(layer))

    # -- saving ---------------------------------------------------------------------------
    def start_autosave(self) -> None:
        """Save the objects to the chosen file now and after every edit."""
        from ..autosave import Autosave

        text = str(self.autosave_file.value).strip()
        if self.proofreader is None or text in ("", "."):
            return
        problem = output_problem(text, "autosave file", file=True)
        if problem:
            notify_error(problem)
            return
        if self.autosave is not None:
            self.autosave.close()
        meta = self.session.objects_layer.metadata.get("napari_cem", {})
        self.autosave = Autosave(self.proofreader, text, info={"instances": meta.get("instances")},
                                 on_error=self._relay.failed.emit)
        self.autosave.request()
        self.edit_status.value = f"Every edit is saved to {self.autosave.path} (+ .csv)."

    def request_save(self) -> None:
        if self.autosave is not None:
            self.autosave.request()

    def close_autosave(self) -> None:
        if self.autosave is not None:
            self.autosave.close()
            self.autosave = None

    def _autosave_failed(self, message: str) -> None:
        self.edit_status.value = message
        notify_error(message)

    def export_csv(self) -> Path | None:
        from .._atomic import write_text_atomic

        text = str(self.csv_file.value).strip()
        if self.proofreader is None:
            notify_error("No objects to export yet.")
            return None
        if text in ("", "."):
            notify_error("Choose the CSV file to write (Table CSV).")
            return None
        path = Path(text).with_suffix(".csv")
        problem = output_problem(path, "table file", file=True)
        if problem:
            notify_error(problem)
            return None
        try:
            write_text_atomic(path, self.proofreader.csv())
        except OSError as exc:
            from .._outputs import describe_os_error

            notify_error(describe_os_error(exc))
            return None
        self.edit_status.value = f"Table of {self.proofreader.count:,} objects written to {path}."
        return path


def _relay(slot):
    """A Qt object whose ``failed`` signal, emitted from the autosave thread, runs *slot* on
    the UI thread."""
    from qtpy.QtCore import QObject, Signal

    class _Relay(QObject):
        failed = Signal(str)

    relay = _Relay()
    relay.failed.connect(slot)
    return relay
