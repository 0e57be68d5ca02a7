"""Dock widget "Organelles": objects (instances) from a segmentation, their table, and
proofreading.

*Find objects* runs ``napari_cem.instances.find_instances`` and measures every object in a
thread worker; the objects become a Labels layer whose ``features`` are the table (hover
an object: its measurements in the status bar). Any Labels layer of objects can be
measured and proofread the same way. The edits are ``napari_cem.proofread``'s: each
touches only the objects' boxes on the main thread, refreshes the table and the layer,
and is autosaved (labels TIFF + CSV, atomically) in a background thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox

from ._common import (
    ProgressRow,
    notify_error,
    notify_info,
    preload_labels_display,
    scroll_inside,
    text_label,
)
from ._histogram import Histogram
from ._jobs import JobRunner, JobWidget
from ._layers import camera_of, canvas_side, class_names_of, full_data, units_of, voxel_size
from ._object_table import ObjectTable, class_filter_choices
from ._proofread_panel import ProofreadPanel

_ALL_FOREGROUND = "all foreground"


class OrganellesWidget(JobWidget):
    """Find the objects of a segmentation, measure them, browse and proofread them."""

    def __init__(self, napari_viewer):
        preload_labels_display()
        self.viewer = napari_viewer
        self.proofreader = None  # napari_cem.proofread.Proofreader of the objects layer
        self.objects_layer = None  # the Labels layer being proofread
        self._syncing = False  # a selection set from one side: the other side does not echo it
        self._opened_layer = None  # the layer "Open objects file" just added (measured next)
        super().__init__(widgets=[*self._find_rows(), *self._object_rows()])
        self.edits = ProofreadPanel(self)
        layout = self.native.layout()  # one row per magicgui widget, in order
        layout.insertWidget(self.index(self.class_filter) + 1, self.table)
        layout.insertWidget(self.index(self.class_filter) + 2, self._histogram_row())
        layout.addWidget(self.edits.native)
        scroll_inside(self)
        self.jobs = JobRunner(self.progress, name="Finding objects", on_running=self._set_running)
        self._connect()
        self._on_segmentation()
        self._set_running(False)

    # -- rows -----------------------------------------------------------------------------
    def _find_rows(self) -> list:
        self.segmentation = ComboBox(label="Segmentation", choices=self._segmentation_choices,
                                     tooltip="A semantic Labels layer (e.g. Segment's result), or "
                                             "probabilities (a float Image layer, 0-1).")
        self.klass = ComboBox(label="Class", choices=self._class_choices,
                              tooltip="The class whose objects to find (all foreground: every class "
                                      "> 0, each object keeping its class).")
        self.mode = ComboBox(label="Objects", choices=[("3D, linked across slices", "3d"),
                                                       ("2D, per slice", "2d")], value="3d")
        self.split = CheckBox(label="Split touching objects", value=False,
                              tooltip="Cut objects joined by a narrow neck (distance-transform "
                                      "watershed). Off by default: on the synthetic volumes it "
                                      "lowered instance F1 (benchmarks/RESULTS.md).")
        self.split_depth = FloatSpinBox(label="Split depth", value=16.0, min=0.1, max=1e5, step=1.0,
                                        tooltip="How much narrower a neck must be than the objects "
                                                "it joins (h-maxima of the distance transform).")
        self.min_size = SpinBox(label="Min. size (voxels)", value=0, min=0, max=10**9, step=100,
                                tooltip="Objects with fewer voxels are dropped (specks, noise).")
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.0, max=1.0, step=0.05,
                                      tooltip="Probabilities: a voxel above this is foreground.")
        self.find_button = PushButton(text="Find objects")
        self.progress = ProgressRow()
        return [self.segmentation, self.klass, self.mode, self.split, self.split_depth, self.min_size,
                self.threshold, self.find_button, self.progress]

    def _object_rows(self) -> list:
        from napari.layers import Labels

        from ._layers import layers_of

        self.objects = ComboBox(label="Objects layer", choices=lambda _w=None: layers_of(self.viewer, Labels),
                                tooltip="The Labels layer of objects to measure and proofread.")
        self.measure_button = PushButton(text="Measure this layer",
                                         tooltip="Build the table of the chosen layer's objects (for "
                                                 "objects made elsewhere or opened from a file).")
        self.objects_file = FileEdit(label="Objects file", mode="r", filter="TIFF (*.tif *.tiff)",
                                     tooltip="A labels TIFF of objects: an autosave of this widget, or "
                                             "napari-cem instances' output.")
        self.open_button = PushButton(text="Open objects file",
                                      tooltip="Open it as a Labels layer (voxel size and classes as "
                                              "saved) and measure it: proofreading goes on from there.")
        self.summary = text_label("No objects yet: find them, or measure a Labels layer of objects.")
        self.min_voxels = SpinBox(label="Show from (voxels)", value=0, min=0, max=10**9, step=100)
        self.class_filter = ComboBox(label="Show class", choices=lambda _w=None: class_filter_choices(
            self.proofreader.table if self.proofreader is not None else {}))
        self.table = ObjectTable(self._on_rows_selected)
        self.table.setToolTip("Click a row to go to its object; Ctrl/Shift-click to pick several "
                              "(merge, delete). Click a column title to sort.")
        return [self.objects, self.measure_button, self.objects_file, self.open_button, self.summary,
                self.min_voxels, self.class_filter]

    def _histogram_row(self):
        from qtpy.QtWidgets import QHBoxLayout, QWidget

        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.volume_plot, self.diameter_plot = Histogram("volume"), Histogram("diameter")
        layout.addWidget(self.volume_plot)
        layout.addWidget(self.diameter_plot)
        return row

    def _connect(self) -> None:
        self.find_button.changed.connect(lambda _v=None: self.find_objects())
        self.measure_button.changed.connect(lambda _v=None: self.measure_layer())
        self.open_button.changed.connect(lambda _v=None: self.open_objects_file())
        self.segmentation.changed.connect(self._on_segmentation)
        self.min_voxels.changed.connect(self._apply_filter)
        self.class_filter.changed.connect(self._apply_filter)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    # -- choices --------------------------------------------------------------------------
    def _segmentation_choices(self, _widget=None):
        from napari.layers import Image, Labels

        return [(layer.name, layer) for layer in self.viewer.layers
                if layer.ndim in (2, 3) and layer is not self.objects_layer and (
                    isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb
                                                  and np.dtype(layer.dtype).kind == "f"))]

    def _class_choices(self, _widget=None) -> list[str]:
        layer = getattr(self, "segmentation", None)
        layer = None if layer is None else layer.value
        return [_ALL_FOREGROUND] + (class_names_of(layer)[1:] if layer is not None else [])

    def _refresh_choices(self, _event=None) -> None:
        self.segmentation.reset_choices()
        self.objects.reset_choices()

    def _on_layer_removed(self, event) -> None:
        if event.value is self.objects_layer:
            self._end_session("The objects layer was removed; its table is closed.")
        self._refresh_choices()

    def _on_segmentation(self, _value=None) -> None:
        layer = self.segmentation.value
        self.klass.reset_choices()
        is_probability = layer is not None and np.dtype(layer.dtype).kind == "f"
        self.threshold.visible = is_probability
        self.split_depth.native.setSuffix(" nm" if layer is not None and voxel_size(layer) else " px")

    # -- find -----------------------------------------------------------------------------
    def find_objects(self):
        """Find, in a thread worker, the objects of the chosen segmentation; returns the worker."""
        layer = self.segmentation.value
        if layer is None:
            notify_error("Choose a segmentation: a Labels layer (e.g. Segment's result).")
            return None
        names = class_names_of(layer)
        value = None if self.klass.value == _ALL_FOREGROUND else names.index(self.klass.value)
        voxel = voxel_size(layer)
        options = dict(value=value, threshold=float(self.threshold.value), mode=self.mode.value,
                       split=bool(self.split.value), split_depth=float(self.split_depth.value),
                       min_size=int(self.min_size.value), unit="nm" if voxel else "voxels",
                       size_unit="voxels", voxel_size=voxel, class_names=names)
        image = self._image_for(layer)
        return self.jobs.start(_find_job, full_data(layer), options, image,
                               message=f"Finding the objects of {layer.name} ...",
                               on_result=lambda result: self._on_found(layer, *result),
                               cancelled="Cancelled; no objects layer was made.")

    def _image_for(self, layer):
        """The EM image under *layer* (same shape), for the intensity columns, or None."""
        from ._layers import image_choices

        shape = full_data(layer).shape
        for _name, image in image_choices(self.viewer):
            if image is not layer and np.dtype(image.dtype).kind != "f" and full_data(image).shape == shape:
                return full_data(image)
        return None

    def _on_found(self, layer, instances, proofreader) -> None:
        meta = {"napari_cem": {"instances": instances.info, "classes": list(instances.class_names),
                               "object_class": instances.object_class.tolist(),
                               "voxel_size": instances.info.get("voxel_size")}}
        name = f"{layer.name} objects"
        kwargs = {"scale": layer.scale, "translate": layer.translate, **units_of(layer)}
        self.objects_layer = self.viewer.add_labels(proofreader.labels, name=name, metadata=meta, **kwargs)
        layer.visible = False
        self.objects.reset_choices()
        self.objects.value = self.objects_layer
        self._start_session(self.objects_layer, proofreader)
        self.progress.finish(instances.describe())
        if instances.count == 0:
            notify_info(instances.describe())

    # -- measure an existing layer --------------------------------------------------------
    def measure_layer(self):
        """Measure the chosen objects layer in a worker and proofread it; returns the worker."""
        layer = self.objects.value
        if layer is None:
            notify_error("Choose a Labels layer of objects.")
            return None
        data = full_data(layer)
        if not isinstance(data, np.ndarray):
            notify_error(f"{layer.name} is not held in memory (it is read from disk as needed): "
                         "proofreading edits it in place. Open it into memory first.")
            return None
        meta = layer.metadata.get("napari_cem", {}) if isinstance(layer.metadata, dict) else {}
        classes = meta.get("object_class")
        names = class_names_of(layer)
        if classes is not None and len(classes) < int(data.max()) + 1:
            classes = None  # from before an edit made elsewhere: not to be trusted
        return self.jobs.start(_measure_job, data, classes, names, voxel_size(layer), self._image_for(layer),
                               message=f"Measuring the objects of {layer.name} ...",
                               on_result=lambda p: self._measured(layer, p),
                               cancelled="Cancelled; the table is unchanged.")

    def open_objects_file(self, path=None):
        """Read a labels TIFF in a worker, show it as a Labels layer, then measure it."""
        from ..io.labels import read_labels_tiff

        text = str(path if path is not None else self.objects_file.value).strip()
        if text in ("", "."):
            notify_error("Choose the objects file (a labels TIFF) first.")
            return None
        if not Path(text).is_file():
            notify_error(f"No such file: {text}")
            return None
        self._opened_layer = None
        return self.jobs.start(read_labels_tiff, text, message=f"Reading {Path(text).name} ...",
                               on_result=lambda read: self._opened(Path(text), *read),
                               then=self._measure_opened, cancelled="Cancelled; nothing was opened.")

    def _measure_opened(self) -> None:
        if self._opened_layer is not None:  # read and shown: measure it (a job of its own)
            self._opened_layer = None
            self.measure_layer()

    def _opened(self, path: Path, labels, voxel, info) -> None:
        meta = {"napari_cem": {"classes": info.get("classes") or [], "object_class": info.get("object_class"),
                               "instances": info.get("instances"), "voxel_size": voxel, "source": str(path)}}
        kwargs = {"scale": voxel, "units": ("nm",) * labels.ndim} if voxel else {}
        self._opened_layer = self.viewer.add_labels(labels, name=path.stem, metadata=meta, **kwargs)
        self.objects.reset_choices()
        self.objects.value = self._opened_layer

    def _measured(self, layer, proofreader) -> None:
        self.objects_layer = layer
        self._start_session(layer, proofreader)
        self.progress.finish(f"{layer.name}: {proofreader.count:,} objects measured.")

    # -- the proofreading session -----------------------------------------------------------
    def _start_session(self, layer, proofreader) -> None:
        self._end_session("")
        self.proofreader = proofreader
        self.objects_layer = layer
        proofreader.on_change.append(self._on_edit)
        layer.events.selected_label.connect(self._on_label_picked)
        layer.events.paint.connect(self._on_painted)
        self.class_filter.reset_choices()
        self._show_table()
        self.edits.edit_status.value = ""
        if str(self.edits.autosave_file.value) not in ("", "."):
            self.edits.start_autosave()
        self._set_running(False)

    def _end_session(self, message: str) -> None:
        layer = self.objects_layer
        if layer is not None:
            for event, slot in ((layer.events.selected_label, self._on_label_picked),
                                (layer.events.paint, self._on_painted)):
                event.disconnect(slot)
        self.edits.close_autosave()
        self.proofreader, self.objects_layer = None, None
        self.table.set_columns({})
        self._show_plots({})
        if message:
            self.summary.value = message
        self._set_running(self.jobs.running)

    def _show_table(self) -> None:
        p = self.proofreader
        table = p.table
        self.table.set_columns(table)
        self._apply_filter()
        self._show_plots(table)
        features = {"index": np.asarray(table["label"]), **{k: v for k, v in table.items() if k != "label"}}
        self.objects_layer.features = features
        unit = "nm" if p.voxel_size is not None else "px"
        sizes = np.asarray(table.get("voxels", []))
        self.summary.value = (f"{p.count:,} objects in {self.objects_layer.name}" + (
            f"; median {np.median(sizes):,.0f} voxels" if sizes.size else "") +
            f"; sizes in {unit}." + ("" if p.count else " No objects: the segmentation is empty here."))

    def _show_plots(self, table: dict) -> None:
        volume = next((k for k in table if k.startswith(("volume_", "area_"))), None)
        diameter = next((k for k in table if k.startswith("equivalent_diameter")), None)
        self.volume_plot.set_values(table.get(volume, []), title=(volume or "volume").replace("_", " "))
        self.diameter_plot.set_values(table.get(diameter, []),
                                      title=(diameter or "diameter").replace("equivalent_", "").replace("_", " "))

    def _apply_filter(self, _value=None) -> None:
        self.table.set_filter(int(self.min_voxels.value), str(self.class_filter.value))

    # -- selection, both ways -------------------------------------------------------------
    def _on_rows_selected(self, labels: list[int]) -> None:
        if self.objects_layer is None or not labels or self._syncing:
            return
        self._syncing = True
        try:
            self.objects_layer.selected_label = labels[-1]
        finally:
            self._syncing = False
        if len(labels) == 1:
            self.go_to(labels[0])

    def _on_label_picked(self, _event=None) -> None:
        if self._syncing or self.proofreader is None:
            return
        label = int(self.objects_layer.selected_label)
        self._syncing = True
        try:
            self.table.select_labels([label] if label in self.proofreader.boxes else [])
        finally:
            self._syncing = False

    def selected(self) -> list[int]:
        """The objects picked in the table, else the layer's selected label (if an object)."""
        labels = self.table.selected_labels()
        if not labels and self.objects_layer is not None and self.proofreader is not None:
            label = int(self.objects_layer.selected_label)
            labels = [label] if label in self.proofreader.boxes else []
        return labels

    def go_to(self, label: int) -> None:
        """Centre the view on object *label*: its middle slice, zoomed so that the canvas
        shows about 2.5 times its size."""
        box = self.proofreader.box_of(label)
        layer = self.objects_layer
        centre = [(s.start + s.stop - 1) / 2 for s in box]
        world = np.asarray(layer.data_to_world(centre))
        offset = self.viewer.dims.ndim - layer.ndim
        displayed = list(self.viewer.dims.displayed)
        for axis in range(layer.ndim):
            if axis + offset not in displayed:
                self.viewer.dims.set_point(axis + offset, world[axis])
        camera_of(self.viewer).center = tuple(world[[a - offset for a in displayed if a >= offset]])
        if self.viewer.dims.ndisplay == 2:
            extent = max((s.stop - s.start) * float(layer.scale[a - offset])
                         for a, s in zip(displayed, [box[a - offset] for a in displayed]))
            camera_of(self.viewer).zoom = canvas_side(self.viewer) / max(2.5 * extent, 1e-9)

    def _on_edit(self, edit) -> None:
        if edit.name != "painted":
            self.objects_layer.refresh()
        self._show_table()
        self.edits.edit_status.value = edit.message or edit.name
        self.edits.request_save()

    def _on_painted(self, event) -> None:
        if self.proofreader is not None:
            self.proofreader.painted(event.value)

    def _set_running(self, running: bool) -> None:
        has = self.proofreader is not None and not running
        self.find_button.enabled = not running
        self.measure_button.enabled = not running
        self.open_button.enabled = not running
        self.edits.set_enabled(has)


# -- worker bodies (no Qt, no layers) ----------------------------------------------------------
def _find_job(data, options, image, progress=None, should_stop=None):
    from ..instances import find_instances
    from ..proofread import Proofreader

    result = find_instances(np.asarray(data), progress=progress, should_stop=should_stop, **options)
    if progress is not None:
        progress(0, 0, f"measuring {result.count:,} objects")
    proofreader = Proofreader(np.asarray(result.labels), object_class=result.object_class,
                              class_names=list(result.class_names), voxel_size=options["voxel_size"],
                              image=None if image is None else np.asarray(image), should_stop=should_stop)
    return result, proofreader


def _measure_job(labels, classes, names, voxel, image, progress=None, should_stop=None):
    from ..proofread import Proofreader

    if progress is not None:
        progress(0, 0, "measuring the objects")
    return Proofreader(labels, object_class=classes, class_names=names, voxel_size=voxel,
                       image=None if image is None else np.asarray(image), should_stop=should_stop)
