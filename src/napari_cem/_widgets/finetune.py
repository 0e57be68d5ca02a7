"""Dock widget "Fine-tune": train a U-Net on the ROIs painted in a Labels layer.

The training runs in a napari thread worker through the Qt-free core
(``napari_cem.train.finetune``); this widget reads the layers, shows the live loss curve
and progress, saves the bundle when training ends (also after Stop: the latest weights
are kept) and makes it the active model of the viewer (``_state.state_for``), which the
Segment widget uses. "Preview current slice" predicts the slice on screen with the
current weights, during or after training.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, SpinBox
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..augment import Augment  # light: no torch at import
from ..model import bin_words, pretty_encoder  # light: no torch at import
from ._common import (
    ProgressRow,
    notify_error,
    notify_info,
    output_problem,
    preload_labels_display,
    preload_torch_stack,
    preload_torch_stack_soon,
    scroll_inside,
    short_name,
    text_label,
    wait_for_torch_stack,
)
from ._device_line import DeviceLine
from ._jobs import USER_ERRORS, JobRunner, JobWidget
from ._layers import full_data, image_choices, layers_of, slice_on_screen, units_of, voxel_size
from ._state import state_for

WEIGHT_FILE = "local file ..."
START_FROM = ("a new model", "the active model", "a model file ...")
BINNING_CHOICES = [("none (full resolution)", 1), ("2 x 2", 2), ("4 x 4", 4)]  # model.BINS
PAINT_REFRESH_S = 10.0  # seconds of training between two looks at the paint
# seconds between two redraws of the curve and the status while training: each redraw of a
# window holding the OpenGL canvas costs tens of ms of CPU under Mesa, every iteration was
# 35 % of a 2-core CPU's training time (RESULTS.md)
SHOW_EVERY_S = 0.5
PAINT_NOTES = ("paint picked up", "all paint erased")
BACKGROUND_CHOICES = ["auto", "unpainted (0)"] + [str(v) for v in range(1, 21)]


class LossCurve(QWidget):
    """A small QPainter plot: training loss (smoothed, left scale) and train IoU (0-1)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.losses: list[float] = []
        self.ious: list[float | None] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss (white, smoothed) and train IoU on the batches (green, 0 to 1).")

    def clear(self) -> None:
        self.losses, self.ious = [], []
        self.update()

    def add(self, loss: float, iou: float | None, redraw: bool = True) -> None:
        self.losses.append(float(loss))
        self.ious.append(iou)
        if redraw:
            self.update()

    def paintEvent(self, event):  # noqa: N802
        from ..train import smooth

        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(30, 30, 36))
        n = len(self.losses)
        if n < 2:
            p.setPen(QColor(160, 160, 160))
            p.drawText(8, h // 2, "loss curve appears when training starts")
            p.end()
            return
        loss = np.asarray(smooth(self.losses, 0.2))
        top = float(np.nanmax(loss)) or 1.0
        xs = np.linspace(4, w - 4, n)

        def poly(values, scale):
            pts = QPolygonF()
            for x, v in zip(xs, values):
                if v is not None and np.isfinite(v):
                    pts.append(QPointF(float(x), float(h - 14 - (h - 22) * min(v / scale, 1.0))))
            return pts

        p.setPen(QPen(QColor(235, 235, 235), 1.5))
        p.drawPolyline(poly(loss, top))
        ious = smooth([v for v in self.ious], 0.2)
        p.setPen(QPen(QColor(90, 200, 120), 1.5))
        p.drawPolyline(poly(ious, 1.0))
        p.setPen(QColor(200, 200, 200))
        last_iou = next((v for v in reversed(ious) if v is not None and np.isfinite(v)), None)
        text = f"it {n}  loss {loss[-1]:.4f}" + (f"  IoU {last_iou:.3f}" if last_iou is not None else "")
        p.drawText(6, h - 2, text)
        p.end()


class FinetuneWidget(JobWidget):
    """Fine-tune a frozen-encoder U-Net on painted labels; the result becomes the active model."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)
        self.bundle = None
        self.bundle_path: Path | None = None
        self._preview_slice = None  # (layer, z, 2D array) waiting for the training thread
        self._training_layer = None
        self._training = False  # a training job (not a download) is running
        self._pretrained: dict[str, Path] = {}  # Weights label -> checkpoint of Pre-train encoder
        super().__init__(widgets=self._make_controls())
        self.curve = LossCurve()
        self._shown_at = -float("inf")  # when the curve and the status were last redrawn
        self.native.layout().addWidget(self.curve)
        scroll_inside(self)

        # RuntimeError too: what torch raises for a device out of memory or a broken CUDA set-up
        self.jobs = JobRunner(self.progress, name="Fine-tuning", on_running=self._set_running,
                              user_errors=USER_ERRORS + (RuntimeError,))
        self.previewing = JobRunner(name="The preview")  # after training: quick, no progress row
        self.start_button.changed.connect(lambda: self.start())
        self.use_segmentation_button.changed.connect(lambda: self.use_segmentation())
        self._live_timer = _timer(self._live_tick)
        self.live_preview.changed.connect(lambda _v: self._arm_live_preview())
        self.live_every.changed.connect(lambda _v: self._arm_live_preview())
        self.preview_button.changed.connect(lambda: self.preview())
        self.download_button.changed.connect(lambda: self.download())
        self.weights.changed.connect(self._on_weights)
        self.start_from.changed.connect(self._on_start_from)
        preload_torch_stack_soon()  # seconds of imports, off the UI thread
        preload_labels_display()  # the preview's Labels layer then appears without a stall
        self.state.on_pretrained_weights(self._on_pretrained)
        self._on_pretrained(self.state, select=False)
        self.viewer.layers.events.inserted.connect(self._refresh_choices)
        self.viewer.layers.events.removed.connect(self._refresh_choices)
        self.device_line = DeviceLine(self.device_info, self.device)
        self._on_weights()

    def _make_controls(self) -> list:
        """The widget's rows, top to bottom (also set as attributes of the same names)."""
        from ..device import DEVICE_CHOICES
        from ..train import ARCH_CHOICES, ENCODER_BN_CHOICES, FREEZE_CHOICES
        from ..weights import KNOWN_WEIGHTS

        self.image = ComboBox(label="Image", choices=lambda _w=None: image_choices(self.viewer),
                              tooltip="The EM image or volume (8-bit) to learn from.")
        self.labels_layer = ComboBox(label="Labels", choices=self._labels_choices,
                               tooltip="Painted labels of the same shape: 0 = not annotated, "
                                       "1, 2, ... = classes.")
        self.rois = ComboBox(label="ROIs", choices=self._shapes_choices,
                             tooltip="Optional Shapes layer of rectangles: with 'painted slices are "
                                     "complete', unpainted pixels inside them are background.")
        self.class_names = LineEdit(label="Class names", value="",
                                    tooltip="Names of the label values 1, 2, ... in order, comma "
                                            "separated (e.g. 'background, mito'). Empty: 'class 1', ...")
        self.background = ComboBox(label="Background", choices=BACKGROUND_CHOICES, value="auto",
                                   tooltip="Which painted value is background. auto: the class named "
                                           "'background'; else the unpainted pixels when slices are "
                                           "complete; else value 1.")
        self.complete = CheckBox(label="Painted slices are complete", value=False,
                                 tooltip="In every slice holding paint (or inside every ROI), "
                                         "unpainted pixels are background.")
        self.weights = ComboBox(label="Weights", choices=["none", *KNOWN_WEIGHTS, WEIGHT_FILE],
                                value="none",
                                tooltip="Pre-trained encoder: CEM500K MoCoV2, CEM1.5M SwAV (downloaded "
                                        "once), one pre-trained in this viewer (Pre-train encoder), "
                                        "a local checkpoint, or none (random init).")
        self.weights_file = FileEdit(label="Weights file", mode="r", visible=False)
        self.download_button = PushButton(text="Download weights", visible=False)
        self.arch = ComboBox(label="Model", choices=list(ARCH_CHOICES), value="auto",
                             tooltip="The U-Net's encoder (slim: a decoder half as wide). auto: the "
                                     "encoder of the weights or of the model continued from, else "
                                     "ResNet50. On a CPU without native bf16, resnet18-slim trains 2.4x "
                                     "faster (about 0.03 IoU lower on VNC mitochondria). Training says "
                                     "which model it uses and why.")
        self.binning = ComboBox(
            label="Binning", choices=BINNING_CHOICES, value=1,
            tooltip="The U-Net works on the image averaged over 2 x 2 (or 4 x 4) pixels and its "
                    "result is upsampled back: 4x (16x) less work per crop and per slice, for "
                    "structures many pixels wide (mitochondria at a few nm per pixel). The crop "
                    "size stays in image pixels (a multiple of 64, or 128). A model continued "
                    "from keeps its own binning. VNC mitochondria (4.6 nm pixels), resnet18-slim, "
                    "float32 CPU: 2 x 2 and 600 iterations gave IoU 0.785 in 2.5 min, full "
                    "resolution and 300 iterations 0.739 in 4.3 min.")
        self.start_from = ComboBox(
            label="Start from", choices=START_FROM, value=START_FROM[0],
            tooltip="a new model (from the Weights above), or continue from the active model or a "
                    "model file: its whole U-Net keeps learning on the current paint (same classes).")
        self.init_file = FileEdit(label="Model file", mode="r", filter="napari-cem model (*.pt)",
                                  visible=False)
        self.add_classes = CheckBox(label="New classes widen the model", value=False, visible=False,
                                    tooltip="A painted class the model lacks gets a new output, learned "
                                            "from scratch; the classes it knows keep what they learned.")
        self.iterations = SpinBox(label="Iterations", value=500, min=1, max=100_000, step=50,
                                  tooltip="On VNC, 500 iterations gave +0.02-0.04 IoU over 300 and 150 were "
                                          "not enough. On a 2-core CPU with native bf16, 500 iterations of "
                                          "batch 8, crop 256 take 11-16 min for the ResNet50 and 3-7 min for "
                                          "resnet18-slim; 2-4x that without bf16.")
        self.crop = SpinBox(label="Crop size", value=512, min=64, max=2048, step=32,
                            tooltip="Square training crops (multiple of 32); 224-256 for small images.")
        self.batch = SpinBox(label="Batch size", value=16, min=1, max=256,
                             tooltip="Halved automatically if the GPU runs out of memory.")
        self.augment = ComboBox(
            label="Augmentation", choices=list(Augment.PRESETS), value="default",
            tooltip="default: quarter turns, flips, +-10 % brightness/contrast (best for short runs). "
                    "cem500k: the paper's recipe (any angle, random resized crop, +-30 %), for long runs.")
        self.device = ComboBox(label="Device", choices=list(DEVICE_CHOICES), value="auto")
        self.device_info = text_label("")
        self.freeze = ComboBox(label="Freeze", choices=list(FREEZE_CHOICES), value="auto",
                               tooltip="auto: frozen encoder with pre-trained weights, everything "
                                       "trains without. layer4: the last encoder block trains too.")
        self.encoder_bn = ComboBox(label="Encoder BN", choices=list(ENCODER_BN_CHOICES), value="keep",
                                   tooltip="A frozen encoder's BatchNorm statistics: keep the "
                                           "checkpoint's, or adapt them to this data (its parameters "
                                           "stay frozen).")
        self.save_to = FileEdit(label="Save model to", mode="w", filter="*.pt",
                                tooltip="Model bundle file; empty: ~/napari-cem-models/<image>-<time>.pt")
        self.use_segmentation_button = PushButton(
            text="Use segmentation as paint (slice on screen)",
            tooltip="Copy the Segment widget's result on the slice on screen into the painted "
                    "Labels layer: the whole slice is then labelled, and what you repaint there "
                    "are the corrections (Ctrl-Z undoes the copy).")
        self.start_button = PushButton(text="Start training")
        self.progress = ProgressRow(stop_text="Stop")
        self.preview_button = PushButton(text="Preview current slice", enabled=False)
        self.live_preview = CheckBox(label="Live preview while training", value=True,
                                     tooltip="Re-predict the slice on screen with the current weights "
                                             "every few seconds while training; it follows you to "
                                             "other slices.")
        self.live_every = FloatSpinBox(label="Live preview every (s)", value=0.0, min=0.0, max=600.0,
                                       step=1.0, tooltip="0: 15 s on a CPU, 3 s on a GPU.")
        self.result = text_label("No model trained yet.", lines=4)  # the U-Net, time, classes, file
        return [
            self.image, self.labels_layer, self.rois, self.class_names, self.background, self.complete,
            self.weights, self.weights_file, self.download_button, self.arch, self.binning, self.start_from,
            self.init_file, self.add_classes, self.iterations, self.crop,
            self.batch, self.augment, self.device, self.device_info, self.freeze, self.encoder_bn,
            self.save_to,
            self.use_segmentation_button, self.start_button, self.progress, self.preview_button,
            self.live_preview, self.live_every, self.result,
        ]

    # -- choices ----------------------------------------------------------------------------
    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return layers_of(self.viewer, Labels)

    def _shapes_choices(self, _widget=None):
        from napari.layers import Shapes

        return [("none", None), *layers_of(self.viewer, Shapes)]

    def _refresh_choices(self, _event=None) -> None:
        self.image.reset_choices()
        self.labels_layer.reset_choices()
        self.rois.reset_choices()

    def _on_weights(self, _value=None) -> None:
        from ..weights import KNOWN_WEIGHTS, is_cached

        choice = self.weights.value
        self.weights_file.visible = choice == WEIGHT_FILE
        needs = choice in KNOWN_WEIGHTS and not is_cached(choice)
        self.download_button.visible = needs
        if choice in KNOWN_WEIGHTS:
            self.download_button.text = f"Download {choice}"

    def _on_pretrained(self, state, select: bool = True) -> None:
        """Offer each checkpoint of the Pre-train encoder widget as 'pretrained: <folder>'."""
        from ..weights import KNOWN_WEIGHTS

        new = None
        for path in state.pretrained_weights:
            if path in self._pretrained.values():
                continue
            label, n = f"pretrained: {path.parent.name}", 2
            while label in self._pretrained:
                label, n = f"pretrained: {path.parent.name} ({n})", n + 1
            self._pretrained[label] = path
            new = label
        if new is None:
            return
        self.weights.choices = ["none", *KNOWN_WEIGHTS, *self._pretrained, WEIGHT_FILE]
        if select:
            self.weights.value = new

    def _on_start_from(self, value) -> None:
        self.init_file.visible = value == START_FROM[2]
        self.add_classes.visible = value != START_FROM[0]

    def _init_spec(self):
        """What training starts from: None (a new model), the active bundle, or a file."""
        choice = self.start_from.value
        if choice == START_FROM[1]:
            if self.state.active_model is None:
                raise ValueError("There is no active model to continue from: train one, or load a "
                                 "model file in the Segment widget.")
            return self.state.active_model, self.state.active_model_path
        if choice == START_FROM[2]:
            text = str(self.init_file.value).strip()
            if text in ("", ".") or not Path(text).is_file():
                raise ValueError("Pick the model file (.pt) to continue from, or start from a new model.")
            return text
        return None

    def _weights_spec(self):
        choice = self.weights.value
        if choice in self._pretrained:
            path = self._pretrained[choice]
            if not path.is_file():
                raise ValueError(f"The pre-trained checkpoint '{path}' is gone; choose other weights.")
            return str(path)
        if choice == WEIGHT_FILE:
            path = Path(str(self.weights_file.value))
            if not str(self.weights_file.value) or not path.is_file():
                raise ValueError("Pick the weights file (a checkpoint .pth / .pth.tar), or choose 'none'.")
            return str(path)
        return choice

    # -- download ---------------------------------------------------------------------------
    def download(self):
        """Download the chosen released weights into the cache (Stop keeps the bytes so far)."""
        from ..weights import KNOWN_WEIGHTS, fetch_weights

        name = self.weights.value
        if name not in KNOWN_WEIGHTS:
            return None
        return self.jobs.start(fetch_weights, name, message=f"Downloading {name} (about 100-300 MB) ...",
                               on_progress=self._show_download_progress,
                               on_result=lambda path: self.progress.finish(f"{name} saved to {path}."),
                               then=self._on_weights,
                               cancelled="Download stopped; the bytes fetched so far are kept for "
                                         "the next try.")

    def _show_download_progress(self, done: int, total: int, _stage: str) -> None:
        if total:
            self.progress.bar.max = max(1, total >> 20)
            self.progress.step(done >> 20, f"Downloading: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB ...")
        else:
            self.progress.status.value = f"Downloading: {done / 1e6:,.0f} MB ..."

    # -- training ---------------------------------------------------------------------------
    def _read_inputs(self):
        image_layer, labels_layer = self.image.value, self.labels_layer.value
        if image_layer is None:
            raise ValueError("Open an EM image first (File > Open, or the Load EM volume widget).")
        if labels_layer is None:
            raise ValueError("Add a Labels layer and paint a few regions of each class "
                             "(0 = not annotated).")
        image = np.asarray(full_data(image_layer))
        if image.dtype != np.uint8:
            from ..io import standardize

            image, _info = standardize(image, rgb=False)
            image = np.asarray(image)
        labels = np.asarray(full_data(labels_layer))
        if labels.shape != image.shape:
            raise ValueError(f"The labels layer {labels_layer.name!r} (shape {labels.shape}) and the "
                             f"image {image_layer.name!r} (shape {image.shape}) must have the same shape.")
        rois = self._rois(image.ndim)
        return image_layer, labels_layer, image, labels.copy(), rois

    def _rois(self, ndim: int):
        layer = self.rois.value
        if layer is None:
            return None
        rois = []
        for data, kind in zip(layer.data, layer.shape_type):
            if kind != "rectangle":
                continue
            data = np.asarray(data)
            y0, x0 = data[:, -2:].min(0)
            y1, x1 = data[:, -2:].max(0)
            if ndim == 3:
                rois.append((int(round(data[0, -3])), int(y0), int(x0), int(np.ceil(y1)), int(np.ceil(x1))))
            else:
                rois.append((int(y0), int(x0), int(np.ceil(y1)), int(np.ceil(x1))))
        return rois or None

    def _output_path(self, image_layer) -> Path:
        value = str(self.save_to.value) if self.save_to.value is not None else ""
        if value and value != "." and not Path(value).is_dir():
            path = Path(value)
            return path if path.suffix else path.with_suffix(".pt")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(value) if value and Path(value).is_dir() else Path.home() / "napari-cem-models"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in image_layer.name)
        return folder / f"{safe}-{stamp}.pt"

    def start(self):
        """Start training in a thread worker; returns the worker (None on bad input)."""
        if self.jobs.running:
            return None
        try:
            image_layer, labels_layer, image, labels, rois = self._read_inputs()
            weights = self._weights_spec()
            init = self._init_spec()
            names = [n.strip() for n in self.class_names.value.split(",") if n.strip()] or None
            bg = self.background.value
            background = None if bg == "auto" else (0 if bg.startswith("unpainted") else int(bg))
        except ValueError as exc:
            notify_error(str(exc))
            return None
        out = self._output_path(image_layer)
        problem = output_problem(out, "model file", file=True)
        if problem:
            notify_error(f"{problem} (Save model to)")
            return None
        preload_torch_stack()  # the worker waits for it: the viewer never does
        from ..train import FinetuneConfig

        try:
            config = FinetuneConfig(
                init=init, add_classes=bool(self.add_classes.value) and init is not None, weights=weights,
                freeze=self.freeze.value, encoder_bn=self.encoder_bn.value, arch=self.arch.value,
                bin=int(self.binning.value), iterations=int(self.iterations.value),
                crop_size=int(self.crop.value), batch_size=int(self.batch.value),
                device=self.device.value, augment=Augment.preset(self.augment.value))
        except ValueError as exc:
            notify_error(str(exc))
            return None
        live = full_data(labels_layer)
        options = dict(
            live_labels=live if isinstance(live, np.ndarray) else None, refresh_s=PAINT_REFRESH_S,
            config=config, classes=names, background_label=background,
            complete_slices=bool(self.complete.value), rois=rois, voxel_size=voxel_size(image_layer),
            preview_request=self._take_preview_request,
            data_source=f"napari layers: image {image_layer.name!r}, labels {labels_layer.name!r}",
        )
        self._training_layer = image_layer
        self._training = True
        self._arm_live_preview()
        self.curve.clear()
        self._shown_at = -float("inf")
        return self.jobs.start(_train_job, image, labels, options, out,
                               message="Preparing the data and the model ...",
                               total=int(self.iterations.value), on_record=self._on_step,
                               on_result=self._on_trained, then=self._after_training,
                               cancelled="Stopped before the first iteration; nothing was saved.",
                               stopping="Stopping after this iteration (the model is kept) ...")

    def stop(self) -> None:
        """Stop after the current iteration; the weights trained so far are saved."""
        self.jobs.cancel()

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.download_button.enabled = not running
        self.preview_button.enabled = (running and self._training) or self.bundle is not None

    def _on_step(self, step) -> None:
        notes = [m for m in step.message.split("; ") if m]
        now = time.monotonic()
        show = bool(notes) or step.iteration >= step.total or now - self._shown_at >= SHOW_EVERY_S
        self.curve.add(step.loss, step.train_iou, redraw=show)
        if show:
            self._shown_at = now
            self._show_step(step, notes)
        for note in notes:
            if not note.startswith(PAINT_NOTES):  # paint pick-ups go in the status line, not in notifications
                notify_info(note)
        if step.preview is not None and self._pending_preview_target is not None:
            self._show_preview(self._pending_preview_target, step.preview)
            self._pending_preview_target = None

    def _show_step(self, step, notes) -> None:
        iou = f", IoU {step.train_iou:.3f}" if step.train_iou is not None else ""
        paint = [m for m in notes if m.startswith(PAINT_NOTES)]
        self.progress.step(step.iteration, f"Iteration {step.iteration} / {step.total}: loss "
                                           f"{step.loss:.4f}{iou}, lr {step.lr:.2e}, batch {step.batch_size}, "
                                           f"{step.painted:,} painted px" + "".join(f"; {m}" for m in paint))

    def _on_trained(self, payload) -> None:
        bundle, path, problem = payload
        self.bundle, self.bundle_path = bundle, path
        self.state.set_active_model(bundle, path)
        t = bundle.training
        verb = "Stopped after" if t.get("stopped_early") else "Trained"
        binned = f" {bin_words(bundle.model)}," if bundle.bin > 1 else ""
        self.result.value = (f"{verb} U-Net {pretty_encoder(bundle.arch)}{binned} {t['iterations']} iterations "
                             f"in {t['seconds']:.0f} s; classes "
                             f"{', '.join(bundle.classes)}. Saved to {short_name(path.name)}; active model.")
        self.progress.finish(f"Model saved to {path}")
        if problem:
            notify_error(f"Model: {problem}; it is now the active model for segmentation.")
        else:
            notify_info(f"Model saved to {path}; it is now the active model for segmentation.")

    def _after_training(self) -> None:
        self.curve.update()  # the points of the last, maybe unshown, steps
        self._live_timer.stop()
        self._training = False
        self._preview_slice = None
        self._pending_preview_target = None

    # -- corrections --------------------------------------------------------------------------
    def _segmentation_layer(self, paint):
        """The latest segmentation made by the Segment widget that fits the painted layer."""
        from napari.layers import Labels

        found = [layer for layer in self.viewer.layers
                 if isinstance(layer, Labels) and layer is not paint
                 and "segmentation" in (layer.metadata.get("napari_cem") or {})
                 and full_data(layer).shape == full_data(paint).shape]
        return found[-1] if found else None

    def use_segmentation(self) -> int | None:
        """Copy the segmentation of the slice on screen into the paint (undoable); returns the
        number of pixels written, None when there is nothing to copy."""
        paint = self.labels_layer.value
        seg = self._segmentation_layer(paint) if paint is not None else None
        if seg is None:
            notify_error("Segment the image first (Segment widget), with a Labels layer to paint "
                         "chosen here of the same shape.")
            return None
        screen = slice_on_screen(self.viewer, paint)
        if screen is None:
            notify_error("Show the image in 2D (any plane) to take the segmentation of that slice.")
            return None
        names = [n.strip() for n in self.class_names.value.split(",") if n.strip()]
        try:
            lut = paint_values(seg.metadata["napari_cem"]["classes"], names, bool(self.complete.value))
        except ValueError as exc:
            notify_error(str(exc))
            return None
        values = lut[np.asarray(full_data(seg)[screen.key])]
        grid = np.indices(values.shape)
        where = [np.full(values.size, screen.index) if isinstance(k, int) else None for k in screen.key]
        indices, rest = [], iter(g.ravel() for g in grid)
        for fixed in where:
            indices.append(fixed if fixed is not None else next(rest))
        paint.data_setitem(tuple(indices), values.ravel().astype(paint.data.dtype))
        self.progress.status.value = (f"{screen.describe()}: the segmentation is now paint; repaint "
                                      "what is wrong, then train (Ctrl-Z undoes the copy).")
        return int(values.size)

    # -- preview ----------------------------------------------------------------------------
    _pending_preview_target = None

    def _take_preview_request(self):
        request, self._preview_slice = self._preview_slice, None
        return request

    def _live_interval_ms(self) -> int:
        seconds = float(self.live_every.value)
        if seconds <= 0:
            seconds = 3.0 if self.device_line.device_type in ("cuda", "mps") else 15.0
        return int(seconds * 1000)

    def _arm_live_preview(self) -> None:
        """Start (or stop) the live preview timer of a running training."""
        if self._training and self.live_preview.value:
            self._live_timer.start(self._live_interval_ms())
        else:
            self._live_timer.stop()

    def _live_tick(self) -> None:
        """Ask the training thread for the slice on screen now (it follows the user), unless
        the last request is still waiting; says nothing when the view shows no slice."""
        if self._training and self._pending_preview_target is None:
            self.preview(quiet=True)

    def preview(self, quiet: bool = False):
        """Predict the slice on screen with the current weights (during or after training).
        *quiet*: a live preview tick: no message when there is nothing to preview."""
        say = (lambda _m: None) if quiet else notify_error
        training = self._training
        layer = self._training_layer if training else (self.image.value or self._training_layer)
        if layer is None:
            say("Open an EM image first.")
            return None
        screen = slice_on_screen(self.viewer, layer)
        if screen is None:
            say("Show the image in 2D (any plane) to preview the slice on screen.")
            return None
        plane = np.asarray(full_data(layer)[screen.key])
        if plane.dtype != np.uint8:
            say("The preview needs an 8-bit image; load it with the Load EM volume widget.")
            return None
        if training:  # the training thread predicts it between two iterations
            self._pending_preview_target = (layer, screen)
            self._preview_slice = plane
            if not quiet:
                self.progress.status.value = "Preview requested; it appears after this iteration."
            return None
        if self.bundle is None:
            notify_error("Train a model first.")
            return None
        from ..model import predict_slice

        return self.previewing.start(predict_slice, self.bundle, plane,
                                     on_result=lambda labels: self._show_preview((layer, screen), labels))

    def _show_preview(self, target, labels2d) -> None:
        layer, screen = target
        name = f"{layer.name} preview"
        shape = tuple(full_data(layer).shape)
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
            out = self.viewer.layers[name]
        else:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            out = self.viewer.add_labels(np.zeros(shape, np.uint8), name=name, scale=layer.scale,
                                         translate=layer.translate, opacity=0.5, **units_of(layer))
        out.data[screen.key] = labels2d
        out.refresh()


def _timer(callback):
    """A stopped QTimer calling *callback* on the UI thread at each timeout."""
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(callback)
    return timer


def paint_values(seg_classes, names: list[str], complete: bool) -> np.ndarray:
    """Painted value of each segmentation value (a lookup table), in this widget's paint
    convention: a class named in *names* gets its position there (1, 2, ...); the background
    is 0 (unpainted) with complete slices, else the value named "background", else 1; without
    names class i is painted i + 1 (value 1 = background)."""
    lut = []
    for i, name in enumerate(seg_classes):
        if name in names:
            lut.append(names.index(name) + 1)
        elif i == 0:
            lut.append(0 if complete else 1)
        elif names:
            raise ValueError(f"The segmentation's class '{name}' is not among the class names "
                             f"({', '.join(names)}): add it there first.")
        else:
            lut.append(i + 1)
    return np.asarray(lut, np.int64)


def _train_job(image, labels, options, out_path, progress, should_stop):
    """Worker body: train (yielding a TrainStep per iteration), save the bundle atomically
    (into the rescue folder if its own place fails at the end), return (bundle, path,
    problem or None)."""
    wait_for_torch_stack(progress)
    from .._outputs import save_or_rescue
    from ..model import save_bundle
    from ..train import finetune

    bundle = yield from finetune(image, labels, should_stop=should_stop, **options)
    path, problem = save_or_rescue(lambda p: save_bundle(bundle, p), out_path)
    return bundle, path, problem
