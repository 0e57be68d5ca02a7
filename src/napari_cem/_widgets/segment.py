"""Dock widget "Segment": the whole open volume (or the slice on screen) with the active model.

The model is the viewer's active one (set by the Fine-tune widget when training ends) or
a bundle file loaded here. The work runs in a napari thread worker through the Qt-free
core ``napari_cem.infer.segment``; this widget only reads layers, shows progress, and
adds or refreshes the result layers on the main thread. A ground-truth Labels layer can
be compared with the result: IoU per class (3D and mean of 2D slices) in a table.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton, SpinBox

from ..device import DEVICE_CHOICES
from ._common import (
    ProgressRow,
    notify_error,
    output_problem,
    notify_info,
    notify_warning,
    preload_labels_display,
    preload_torch_stack_soon,
    scroll_inside,
    short_name,
    text_label,
    wait_for_torch_stack,
)
from ._jobs import JobRunner, JobWidget
from ._layers import class_names_of, full_data, image_choices, slice_on_screen, units_of, voxel_size
from ._segment_outputs import export_job, save_labels_job, suggested_labels_path
from ._slice_plot import SliceScores
from ._state import state_for

_NO_GT = "none"
_UNCERTAINTY = "\x00uncertainty"  # its key among the probability layers (never a class name)


class SegmentWidget(JobWidget):
    """Segment an Image layer with the active U-Net into a Labels layer; compare with ground truth."""

    def __init__(self, napari_viewer):
        # seconds of imports, in background threads: the workers wait for torch, and the
        # first Labels layer appears without napari importing pandas on the UI thread
        preload_torch_stack_soon()
        preload_labels_display()
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)
        self._evaluate_after = False
        self._labels_layer = None  # the Labels layer this widget made (refreshed by later runs)
        self._prob_layers: dict[str, object] = {}  # probability / uncertainty layers by key
        self._unsure_order: list[int] = []  # slices, most uncertain first (last volume run)
        self._unsure_scores: list[float] = []
        self._unsure_next = 0
        self._unsure_layer = None
        self.result = None  # napari_cem.infer.Segmentation of the last whole-volume run
        self.evaluation = None  # napari_cem.metrics.Evaluation of the last comparison

        self.model_info = text_label("", lines=5)  # the model's file, U-Net, classes, encoder, iterations
        self.model_file = FileEdit(label="Model file", mode="r", filter="napari-cem model (*.pt *.pth *.zip);;All files (*)",
                                   tooltip="A model bundle saved by Fine-tune (or napari-cem finetune).")
        self.load_button = PushButton(text="Load model file")
        self.image = ComboBox(label="Image", choices=lambda _w=None: image_choices(self.viewer),
                              tooltip="The EM volume (or 2D image) to segment.")
        self.mode = ComboBox(label="Mode", choices=["stack", "orthoplane"], value="stack",
                             tooltip="stack: predict every xy slice. orthoplane: predict every xy, xz "
                                     "and yz slice and average (for near-isotropic volumes only).")
        self.mode_note = text_label("")
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.0, max=1.0, step=0.05,
                                      tooltip="One-structure models: a voxel whose probability is above "
                                              "this is the structure. Several classes use the most "
                                              "probable one.")
        self.paint = ComboBox(label="Paint", choices=self._gt_choices,
                              tooltip="The painted Labels layer (as for Fine-tune), for 'Threshold from "
                                      "paint'.")
        self.threshold_button = PushButton(
            text="Threshold from paint",
            tooltip="Set the threshold that gives the best IoU on the painted slices the model did not "
                    "train on (e.g. slices painted or corrected after the last training round).")
        self.device = ComboBox(label="Device", choices=list(DEVICE_CHOICES), value="auto",
                               tooltip="auto: CUDA GPU, then Apple MPS, then CPU.")
        self.tta = ComboBox(label="TTA", choices=["none", "flips", "d4"], value="none",
                            tooltip="Test-time augmentation: average the prediction over 4 flips or the 8 quarter turns and "
                                    "flips: smoother, 4x / 8x the time.")
        self.z_smooth = CheckBox(label="Smooth across slices", value=False,
                                 tooltip="Stack mode: threshold each slice's probabilities averaged with "
                                         "its two neighbours' (1/4, 1/2, 1/4), against flicker between "
                                         "thick sections.")
        self.min_size = SpinBox(label="Min. piece (voxels)", value=0, min=0, max=10**9, step=10,
                                tooltip="Clean-up: pieces of a class smaller than this become background "
                                        "(per slice in stack mode, in 3D in orthoplane mode). 0: keep all.")
        self.fill_holes = CheckBox(label="Fill holes", value=False,
                                   tooltip="Clean-up: background enclosed by one class becomes that class.")
        self.keep_probs = CheckBox(label="Show probabilities", value=False,
                                   tooltip="Also add the confidences as Image layer(s) (0-255 = 0-1).")
        self.segment_button = PushButton(text="Segment")
        self.slice_button = PushButton(text="Current slice only")
        self.keep_uncertainty = CheckBox(label="Show uncertainty", value=False,
                                         tooltip="Also add how unsure each voxel is as an Image layer "
                                                 "(bright = unsure), to see where a correction pays most.")
        self.uncertain_button = PushButton(text="Next most uncertain slice", enabled=False,
                                           tooltip="Jump to the slice the model is least sure about "
                                                   "(then the next one at each press).")
        self.progress = ProgressRow()
        self.ground_truth = ComboBox(label="Ground truth", choices=self._gt_choices,
                                     tooltip="A Labels layer to compare the segmentation with (IoU).")
        self.evaluate_button = PushButton(text="Compare (IoU)", enabled=False)
        self.iou_info = text_label("")
        self.labels_file = FileEdit(label="Labels file", mode="w", filter="OME-Zarr (*.zarr)",
                                    tooltip="Where to save the segmentation layer (with your corrections) as an "
                                            "OME-Zarr label image; filled in after a run: under labels/ of an "
                                            "OME-Zarr image, else beside the image file.")
        self.save_button = PushButton(text="Save labels (OME-Zarr)", enabled=False,
                                      tooltip="Pyramid, class names and colours, voxel size in nm; an older "
                                              "file there is replaced only once the new one is complete.")
        self.package_file = FileEdit(label="bioimage.io file", mode="w", filter="bioimage.io package (*.zip)",
                                     tooltip="Where to write the active model as a BioImage Model Zoo "
                                             "package (deepImageJ, ilastik, bioimageio.core run it).")
        self.export_button = PushButton(text="Export model (bioimage.io)",
                                        tooltip="Write the package (test slice from the chosen image) "
                                                "and run bioimageio.core's test of it.")
        super().__init__(widgets=[
            self.model_info, self.model_file, self.load_button, self.image, self.mode, self.mode_note,
            self.threshold, self.paint, self.threshold_button, self.device, self.tta, self.z_smooth, self.min_size, self.fill_holes,
            self.keep_probs, self.keep_uncertainty, self.segment_button,
            self.slice_button, self.uncertain_button,
            self.progress, self.ground_truth, self.evaluate_button, self.iou_info,
        ])
        self.slice_plot = SliceScores(self.go_to_slice, tooltip="Mean uncertainty of each xy slice of the "
                                                                "last segmentation: click a bar to go there.")
        self.slice_plot.setVisible(False)
        layout = self.native.layout()
        layout.insertWidget(layout.indexOf(self.uncertain_button.native) + 1, self.slice_plot)
        self.iou_table = _make_table()
        self.iou_table.setVisible(False)  # shown with the first comparison: no empty box before
        layout.addWidget(self.iou_table)
        outputs = Container(widgets=[self.labels_file, self.save_button, self.package_file, self.export_button])
        layout.addWidget(outputs.native)  # below the IoU table
        scroll_inside(self)
        self.jobs = JobRunner(self.progress, name="Segmentation", on_running=self._set_running)

        self.load_button.changed.connect(lambda: self.load_model_file())
        self.threshold_button.changed.connect(lambda: self.threshold_from_paint())
        self.segment_button.changed.connect(lambda: self.run())
        self.slice_button.changed.connect(lambda: self.run(current_slice=True))
        self.uncertain_button.changed.connect(lambda: self.next_uncertain_slice())
        self.evaluate_button.changed.connect(lambda: self.evaluate())
        self.export_button.changed.connect(lambda: self.export_model())
        self.save_button.changed.connect(lambda: self.save_labels())
        self.image.changed.connect(self._update_mode_note)
        self.mode.changed.connect(self._update_mode_note)
        self.ground_truth.changed.connect(lambda _v: self._set_running(self.jobs.running))
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.state.on_model_changed(self._on_model_changed)
        self._on_model_changed(self.state)
        self._update_mode_note()

    # -- choices --------------------------------------------------------------------------
    def _gt_choices(self, _widget=None):
        from napari.layers import Labels

        return [(_NO_GT, None)] + [(layer.name, layer) for layer in self.viewer.layers
                                   if isinstance(layer, Labels) and layer is not self._labels_layer]

    def _refresh_choices(self, _event=None) -> None:
        self.image.reset_choices()
        self.ground_truth.reset_choices()
        self.paint.reset_choices()
        self._update_mode_note()

    def _on_layer_removed(self, event) -> None:
        if event.value is self._labels_layer:
            self._labels_layer = None
            self._set_running(self.jobs.running)
        if event.value is self._unsure_layer:
            self._unsure_layer, self._unsure_order = None, []
            self.slice_plot.setVisible(False)
            self._set_running(self.jobs.running)
        for key, layer in list(self._prob_layers.items()):
            if layer is event.value:
                del self._prob_layers[key]
        self._refresh_choices()

    def _update_mode_note(self, _value=None) -> None:
        from ..patches import is_isotropic

        layer = self.image.value
        note = ""
        if layer is not None and layer.ndim == 2 and self.mode.value == "orthoplane":
            note = "A 2D image has no xz/yz planes: use stack."
        elif layer is not None and self.mode.value == "orthoplane":
            voxel = voxel_size(layer)
            if voxel is None:
                note = "Voxel size unknown: orthoplane assumes a near-isotropic volume."
            elif not is_isotropic(voxel):
                note = "Anisotropic voxels: orthoplane is not advised (stack is)."
        self.mode_note.value = note
        self.mode_note.visible = bool(note)

    # -- model ----------------------------------------------------------------------------
    def _on_model_changed(self, state) -> None:
        bundle = state.active_model
        if bundle is None:
            self.model_info.value = "No model yet: fine-tune one, or load a model file."
            return
        where = f" ({short_name(state.active_model_path.name)})" if state.active_model_path else ""
        describe = getattr(bundle, "describe", None)
        text = describe() if callable(describe) else f"classes {', '.join(map(str, bundle.classes))}"
        # a line per part: a wrapped label is laid out for a guessed width, so explicit short
        # lines keep all of it visible in a narrow dock
        self.model_info.value = f"Model{where}:\n" + text.replace("; ", ";\n")

    def load_model_file(self, path=None):
        """Load a bundle file in a thread worker and make it the viewer's active model."""
        if path is None:
            text = str(self.model_file.value).strip()
            if text in ("", "."):
                notify_error("Choose a model file first.")
                return None
            path = text
        return self.jobs.start(_load_job, path, message="Loading the model ...",
                               on_result=lambda bundle: self._on_model_loaded(bundle, path),
                               cancelled="Cancelled; the model is unchanged.")

    def export_model(self, path=None):
        """Write the active model as a bioimage.io package in a worker, then test it."""
        bundle = self.state.active_model
        text = str(path if path is not None else self.package_file.value).strip()
        problem = ("No model yet: fine-tune one, or load a model file." if bundle is None else
                   "Choose where to write the package (bioimage.io file)." if text in ("", ".") else
                   output_problem(text, "package file", file=True))
        if problem:
            notify_error(problem)
            return None
        layer = self.image.value
        image = full_data(layer) if layer is not None and np.dtype(layer.dtype) == np.uint8 else None
        if image is not None and min(image.shape[-2:]) < 256:
            image = None  # too small for the test slice: a synthetic one
        return self.jobs.start(export_job, bundle, self.state.active_model_path, text, image,
                               message="Writing the bioimage.io package ...",
                               on_result=lambda r: self.progress.finish(r),
                               cancelled="Cancelled; no package was written.")

    def save_labels(self, path=None):
        """Write the segmentation layer (as it is now, corrections included) as an OME-Zarr
        label image in a worker."""
        layer = self._labels_layer
        text = str(path if path is not None else self.labels_file.value).strip()
        problem = ("Segment the volume first: there is no segmentation layer to save."
                   if layer is None or layer not in self.viewer.layers else
                   "Choose where to save the labels (Labels file)." if text in ("", ".") else None)
        if problem:
            notify_error(problem)
            return None
        data = full_data(layer)
        snapshot = np.array(data) if isinstance(data, np.ndarray) else data  # painting may go on
        return self.jobs.start(save_labels_job, text, snapshot, voxel_size(layer), class_names_of(layer),
                               message="Saving the labels as OME-Zarr ...",
                               on_result=lambda r: self.progress.finish(r),
                               cancelled="Cancelled; nothing was saved (an older file there is unchanged).")

    def _on_model_loaded(self, bundle, path) -> None:
        self.state.set_active_model(bundle, path)
        self.progress.finish(f"Model loaded: {bundle.classes}")

    # -- threshold ------------------------------------------------------------------------
    def threshold_from_paint(self):
        """Estimate the threshold on the held-out painted slices in a thread worker."""
        bundle, layer, paint = self.state.active_model, self.image.value, self.paint.value
        problem = ("No model yet: fine-tune one, or load a model file." if bundle is None else
                   "Choose the image to segment." if layer is None else
                   "Choose the painted Labels layer (Paint)." if paint is None else
                   "The paint and the image differ in shape." if paint.data.shape != layer.data.shape else
                   "A threshold is estimated on painted slices of a volume." if layer.ndim != 3 else "")
        if problem:
            notify_error(problem)
            return None
        return self.jobs.start(_threshold_job, full_data(layer), full_data(paint), bundle, self.device.value,
                               message="Estimating the threshold on the held-out paint ...",
                               on_result=self._on_threshold,
                               cancelled="Cancelled; the threshold is unchanged.")

    def _on_threshold(self, estimate) -> None:
        self.threshold.value = estimate.threshold
        self.progress.finish(f"Estimated: {estimate.describe()}")

    # -- running --------------------------------------------------------------------------
    def run(self, current_slice: bool = False):
        """Segment the chosen layer (or the slice on screen) in a thread worker; returns the worker."""
        bundle = self.state.active_model
        layer = self.image.value
        if bundle is None:
            notify_error("No model: fine-tune one (Fine-tune widget) or load a model file.")
            return None
        if layer is None:
            notify_error("Open an EM image first (File > Open, or the Load EM volume widget).")
            return None
        data = full_data(layer)
        mode = self.mode.value
        screen = None  # the slice on screen, for "Current slice only" in a volume
        if current_slice:
            mode = "stack"
            if layer.ndim == 3:
                screen = slice_on_screen(self.viewer, layer)
                if screen is None:
                    notify_error("Show the volume in 2D (any plane) to segment the slice on screen.")
                    return None
                data = data[screen.key]
        if mode == "orthoplane" and layer.ndim == 2:
            notify_error("Orthoplane needs a 3D volume; this image is 2D. Use the stack mode.")
            return None
        options = {"mode": mode, "threshold": float(self.threshold.value), "device": self.device.value,
                   "tta": self.tta.value, "z_smooth": bool(self.z_smooth.value) and mode == "stack"
                   and screen is None and layer.ndim == 3,
                   "keep_probabilities": bool(self.keep_probs.value),
                   "keep_uncertainty": bool(self.keep_uncertainty.value), "voxel_size": voxel_size(layer)}
        what = f"{screen.describe()} of {layer.name}" if screen is not None else layer.name
        cleanup = (int(self.min_size.value), bool(self.fill_holes.value))
        return self.jobs.start(_segment_job, data, bundle, options, cleanup, message=f"Segmenting {what} ...",
                               on_result=lambda r: self._on_result(layer, r, screen),
                               then=self._evaluate_if_asked,
                               cancelled="Cancelled; the previous result is unchanged.")

    def _set_running(self, running: bool) -> None:
        self.segment_button.enabled = not running
        self.slice_button.enabled = not running
        self.threshold_button.enabled = not running
        self.uncertain_button.enabled = not running and bool(self._unsure_order)
        self.load_button.enabled = not running
        self.evaluate_button.enabled = (not running and self._labels_layer is not None
                                        and self.ground_truth.value is not None)
        self.save_button.enabled = not running and self._labels_layer is not None

    def _on_result(self, layer, result, screen) -> None:
        for message in result.metadata.get("warnings", []):
            notify_warning(message)
        labels = np.asarray(result.labels)
        meta = result.layer_metadata
        shape = full_data(layer).shape
        target = self._labels_layer
        if screen is not None:
            if target is not None and target in self.viewer.layers and target.data.shape == tuple(shape):
                target.data[screen.key] = labels
                target.refresh()
            else:
                full = np.zeros(shape, labels.dtype)
                full[screen.key] = labels
                self._show_labels(layer, full, meta)
        else:
            self.result = result
            self._show_labels(layer, labels, meta)
        if result.probabilities is not None:
            self._show_probabilities(layer, result, screen, shape)
        if result.uncertainty is not None:
            self._show_uncertainty(layer, result, screen, shape)
        seconds = result.metadata.get("seconds", 0)
        what = screen.describe() if screen is not None else "volume"
        fg = ", ".join(f"{name} {100 * float(np.mean(labels == i)):.1f} %"
                       for i, name in enumerate(result.classes) if i > 0)
        from ..cleanup import describe

        cleaned = describe(result.metadata.get("cleanup"))
        note = f" Clean-up: {cleaned}." if cleaned else ""
        self.progress.finish(f"{layer.name}: {what} segmented in {seconds:.1f} s "
                             f"({result.metadata.get('precision')}, {result.metadata.get('mode')}); {fg}.{note}")
        self._evaluate_after = screen is None and self.ground_truth.value is not None

    def _show_labels(self, layer, labels, meta) -> None:
        target = self._labels_layer
        kwargs = {"scale": layer.scale, "translate": layer.translate, **units_of(layer)}
        if target is not None and target in self.viewer.layers:
            target.data = labels
            target.scale = layer.scale
            target.translate = layer.translate
            if "units" in kwargs:
                target.units = kwargs["units"]
            target.metadata = meta
            return
        self._labels_layer = self.viewer.add_labels(labels, name=f"{layer.name} segmentation",
                                                    metadata=meta, **kwargs)
        if str(self.labels_file.value).strip() in ("", "."):
            self.labels_file.value = suggested_labels_path(layer, self._labels_layer.name)
        self.viewer.layers.selection.active = self._labels_layer
        self.ground_truth.reset_choices()

    def _show_probabilities(self, layer, result, screen, shape) -> None:
        probs = np.asarray(result.probabilities)
        if len(result.classes) == 2:
            per_class = {result.classes[1]: probs}
        else:
            per_class = {name: probs[i] for i, name in enumerate(result.classes) if i > 0}
        for name, p in per_class.items():
            self._show_image(name, f"{layer.name} P({name})", p, layer, screen, shape, "magma",
                             {"probability_of": name, "scale": "uint8, 255 = 1.0"})

    def _show_image(self, key, title, values, layer, screen, shape, colormap, meta) -> None:
        """A uint8 result (a class's probability, the uncertainty) as an Image layer over the
        image, refreshed by later runs; a slice run writes only its slice."""
        existing = self._prob_layers.get(key)
        values = np.asarray(values)
        if screen is not None:
            if existing is not None and existing in self.viewer.layers and existing.data.shape == tuple(shape):
                existing.data[screen.key] = values
                existing.refresh()
                return
            full = np.zeros(shape, np.uint8)
            full[screen.key] = values
            values = full
        if existing is not None and existing in self.viewer.layers:
            existing.data = values
        else:
            self._prob_layers[key] = self.viewer.add_image(
                values, name=title, scale=layer.scale, translate=layer.translate, **units_of(layer),
                colormap=colormap, contrast_limits=(0, 255), opacity=0.5, blending="additive",
                metadata={"napari_cem": meta})
        if self._labels_layer is not None:
            self.viewer.layers.selection.active = self._labels_layer

    def _show_uncertainty(self, layer, result, screen, shape) -> None:
        self._show_image(_UNCERTAINTY, f"{layer.name} uncertainty", result.uncertainty, layer, screen,
                         shape, "inferno", {"uncertainty": "uint8, 255 = most unsure"})
        scores = result.metadata.get("slice_uncertainty")
        if screen is None and scores and len(scores) > 1:
            self._unsure_order = [int(z) for z in np.argsort(-np.asarray(scores), kind="stable")]
            self._unsure_scores = list(scores)
            self._unsure_next = 0
            self._unsure_layer = layer
            self.slice_plot.set_scores(scores)
            self.slice_plot.setVisible(True)

    def next_uncertain_slice(self) -> int | None:
        """Show the xy slice of the last segmentation with the highest mean uncertainty, then
        the next one at each press."""
        order, layer = self._unsure_order, self._unsure_layer
        if not order or layer is None or layer not in self.viewer.layers:
            notify_error("Segment the volume with 'Show uncertainty' ticked first.")
            return None
        z = order[self._unsure_next % len(order)]
        self._unsure_next += 1
        self.go_to_slice(z)
        rank = (self._unsure_next - 1) % len(order) + 1
        self.progress.status.value = (f"Slice {z}: mean uncertainty {self._unsure_scores[z]:.3f} "
                                      f"({rank} of {len(order)}, most uncertain first).")
        return z

    def go_to_slice(self, z: int) -> None:
        """Show xy slice *z* of the layer the uncertainty was computed on (2D view)."""
        layer = self._unsure_layer
        if layer is None or layer not in self.viewer.layers:
            return
        offset = self.viewer.dims.ndim - layer.ndim
        if self.viewer.dims.ndisplay != 2:
            self.viewer.dims.ndisplay = 2
        self.viewer.dims.order = tuple(range(self.viewer.dims.ndim))
        self.viewer.dims.set_point(offset, float(layer.data_to_world((z, 0, 0))[0]))
        self.slice_plot.mark(z)

    def _evaluate_if_asked(self) -> None:
        if self._evaluate_after:
            self._evaluate_after = False
            self.evaluate()

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self):
        """IoU of the segmentation against the chosen ground-truth layer, in a thread worker."""
        from ..metrics import evaluate

        gt = self.ground_truth.value
        pred = self._labels_layer
        if pred is None or pred not in self.viewer.layers:
            notify_error("Segment first, then compare with the ground truth.")
            return None
        if gt is None:
            notify_error("Choose a ground-truth Labels layer to compare with.")
            return None
        classes = (pred.metadata.get("napari_cem", {}) or {}).get("classes")
        return self.jobs.start(evaluate, pred=pred.data, gt=gt.data, classes=classes,
                               message=f"Comparing with {gt.name} ...",
                               on_result=lambda e: self._on_evaluated(e, gt.name))

    def _on_evaluated(self, evaluation, gt_name) -> None:
        self.evaluation = evaluation
        _fill_table(self.iou_table, evaluation)
        self.iou_table.setVisible(True)
        mean = (f"mean IoU {evaluation.mean_iou_3d:.3f} (3D), {evaluation.mean_iou_2d:.3f} (2D)"
                if np.isfinite(evaluation.mean_iou_3d) else "no foreground in either")
        self.iou_info.value = f"Against {gt_name}: {mean}"
        self.progress.finish(f"Compared with {gt_name}.")
        notify_info(f"IoU against {gt_name}: {mean}")


def _make_table():
    from qtpy.QtWidgets import QAbstractItemView, QTableWidget

    table = QTableWidget(0, 5)
    table.setHorizontalHeaderLabels(["class", "IoU 3D", "IoU 2D", "GT voxels", "pred voxels"])
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.setMinimumHeight(110)
    table.setToolTip("IoU per class, background excluded: 3D over the whole volume, 2D averaged "
                     "over the slices where the class occurs.")
    return table


def _fill_table(table, evaluation) -> None:
    from qtpy.QtWidgets import QTableWidgetItem

    rows = evaluation.rows()
    extra = len(evaluation.classes) > 2
    table.setRowCount(len(rows) + (1 if extra else 0))

    def fmt(v):
        return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"

    for r, row in enumerate(rows):
        for c, text in enumerate([row["class"], fmt(row["iou_3d"]), fmt(row["iou_2d_mean"]),
                                  f"{row['gt_voxels']:,}", f"{row['pred_voxels']:,}"]):
            table.setItem(r, c, QTableWidgetItem(text))
    if extra:
        for c, text in enumerate(["mean", fmt(evaluation.mean_iou_3d), fmt(evaluation.mean_iou_2d), "", ""]):
            table.setItem(len(rows), c, QTableWidgetItem(text))
    table.resizeColumnsToContents()


def _load_job(path, progress):
    wait_for_torch_stack(progress)
    from ..model import load_bundle

    progress(0, 0, "reading the model file")
    return load_bundle(path)


def _eight_bit(data, progress):
    """The layer's data as the model reads it: 8-bit (standardised when it is not)."""
    if getattr(data, "dtype", None) == np.uint8:
        return data
    from ..io import standardize

    progress(0, 0, "standardising")
    return standardize(data, rgb=False)[0]


def _threshold_job(data, paint, bundle, device, progress, should_stop):
    wait_for_torch_stack(progress)
    from ..threshold import threshold_from_paint

    return threshold_from_paint(_eight_bit(data, progress), np.asarray(paint), bundle, device=device,
                                progress=progress, should_stop=should_stop)


def _segment_job(data, bundle, options: dict, cleanup: tuple, progress, should_stop):
    """Worker: standardise if needed, segment, clean up (min size, fill holes) when asked;
    returns the Segmentation."""
    import warnings

    wait_for_torch_stack(progress)
    from ..infer import segment

    volume = _eight_bit(data, progress)
    from ..cleanup import clean_segmentation

    min_size, holes = cleanup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # they are in result.metadata["warnings"]
        result = segment(volume=volume, bundle=bundle, progress=progress, should_stop=should_stop,
                         **options)
    if min_size or holes:
        progress(0, 0, "cleaning up the labels")
        clean_segmentation(result, min_size, holes)
    return result
