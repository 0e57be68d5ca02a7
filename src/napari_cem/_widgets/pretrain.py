"""Dock widget "Pre-train encoder": MoCoV2 pre-training of an EM encoder on a folder of patches.

The training runs in a napari thread worker through the Qt-free core
(``napari_cem.pretrain.pretrain``); this widget only reads its controls, shows progress
(epochs and the iterations inside them), stops on request and, whenever a checkpoint has
been written, registers it in the viewer's shared state (``_state.state_for``) so that the
Fine-tune widget offers it in its Weights choice.

The encoder is a ResNet50 (the CEM500K recipe) or a CPU-sized ResNet34 / ResNet18 (the
Fine-tune U-Net builds the encoder of the weights it is given). ``extra_config`` overrides
other :class:`~napari_cem.pretrain.PretrainConfig` fields (e.g. ``{"crop": 64}`` for a
quick trial or a test).
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox

from ._common import (
    ProgressRow,
    notify_error,
    notify_info,
    preload_torch_stack_soon,
    scroll_inside,
    text_label,
    wait_for_torch_stack,
)
from ._device_line import DeviceLine
from ._jobs import USER_ERRORS, JobRunner, JobWidget, describe_user_error
from ._state import state_for

# the core's messages name its config fields; the widget's controls have other names
_FIELD_NAMES = {"batch_size": "Batch size", "queue_size": "Queue size", "resume": "Resume"}


def patch_folder_of(path) -> Path:
    """The folder of patches for *path*: its ``patches/`` when it is an export folder."""
    path = Path(path)
    return path / "patches" if (path / "patches").is_dir() else path


def default_output(patches: Path) -> Path:
    """Beside the patches: ``<export>/moco`` for an export's ``patches/``, else ``<name>-moco``."""
    patches = Path(patches)
    name = "moco" if patches.name == "patches" else f"{patches.name}-moco"
    return patches.parent / name


class PretrainWidget(JobWidget):
    """Pre-train a 1-channel ResNet with MoCoV2 on 2D patches; checkpoints go to Fine-tune."""

    def __init__(self, napari_viewer):
        from ..device import DEVICE_CHOICES
        from ..model import ENCODERS
        from ..pretrain import PretrainConfig

        d = PretrainConfig()
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)
        self.extra_config: dict = {}
        self.checkpoint: Path | None = None  # the last checkpoint this widget wrote or resumed
        self.last_log = None  # the EpochLog of the last finished epoch
        self._auto_output: str | None = None
        self._run: dict = {}

        self.patches = FileEdit(label="Patches", mode="d",
                                tooltip="A folder of 2D images (tif, png, jpg, bmp; subfolders too): "
                                        "an export's patches/ folder, or the export folder itself.")
        self.output = FileEdit(label="Output folder", mode="d",
                               tooltip="Where checkpoint.pth.tar (every epoch) and log.csv go. "
                                       "Empty: beside the patches (<export>/moco).")
        self.arch = ComboBox(label="Encoder", choices=list(ENCODERS), value=d.arch,
                             tooltip="ResNet50 as CEM500K; ResNet18/34 train several times faster on a "
                                     "CPU (Fine-tune then builds a U-Net of the same encoder).")
        self.epochs = SpinBox(label="Epochs", value=d.epochs, min=1, max=10_000,
                              tooltip="200 as CEM500K; the learning rate drops x0.1 at 60 % and 80 %.")
        self.batch = SpinBox(label="Batch size", value=d.batch_size, min=2, max=4096,
                             tooltip="128 (CEM500K) is for a GPU; on a CPU use a small batch (8-32). "
                                     "Must not exceed the number of images.")
        self.queue = SpinBox(label="Queue size", value=d.queue_size, min=2, max=1_048_576, step=1024,
                             tooltip="Negative keys kept (65536 as CEM500K); must be a multiple of "
                                     "the batch size.")
        self.batch_note = text_label("")
        self.lr = FloatSpinBox(label="Learning rate", value=d.lr, min=0.0001, max=1.0, step=0.0005,
                               tooltip="SGD learning rate (0.015 for batch 128).")
        self.max_minutes = FloatSpinBox(label="Time budget (min)", value=0.0, min=0.0, max=100_000.0,
                                        step=10.0,
                                        tooltip="0: no limit. Else stop after the epoch that passes "
                                                "this many minutes (its checkpoint is kept).")
        self.device = ComboBox(label="Device", choices=list(DEVICE_CHOICES), value="auto",
                               tooltip="auto: CUDA GPU, then Apple MPS, then CPU.")
        self.device_info = text_label("")
        self.resume = CheckBox(label="Resume", value=False,
                               tooltip="Continue from the checkpoint in the output folder (same "
                                       "queue size); without it, a folder holding one is refused.")
        self.start_button = PushButton(text="Start pre-training")
        self.progress = ProgressRow(stop_text="Stop")
        self.result = text_label("No encoder pre-trained yet.")
        super().__init__(widgets=[
            self.patches, self.output, self.arch, self.epochs, self.batch, self.queue, self.batch_note, self.lr,
            self.max_minutes, self.device, self.device_info, self.resume, self.start_button,
            self.progress, self.result,
        ])
        scroll_inside(self)

        # RuntimeError too: what torch raises for a device out of memory or a broken CUDA set-up
        self.jobs = JobRunner(self.progress, name="Pre-training", on_running=self._set_running,
                              user_errors=USER_ERRORS + (RuntimeError,))
        self.start_button.changed.connect(lambda: self.start())
        self.patches.changed.connect(self._on_patches)
        self.batch.changed.connect(self._update_note)
        self.queue.changed.connect(self._update_note)
        preload_torch_stack_soon()  # seconds of imports, off the UI thread
        self.device_line = DeviceLine(self.device_info, self.device, on_found=self._update_note)

    # -- controls ---------------------------------------------------------------------------
    @staticmethod
    def _text(edit) -> str:
        value = edit.value
        text = str(value).strip() if value is not None else ""
        return "" if text in ("", ".") else text

    def _on_patches(self, _value=None) -> None:
        text = self._text(self.patches)
        current = self._text(self.output)
        if not text or (current and current != self._auto_output):
            return  # the user chose the output folder: keep it
        self._auto_output = str(default_output(patch_folder_of(text)))
        self.output.value = self._auto_output

    def _update_note(self, _value=None) -> None:
        batch, queue = int(self.batch.value), int(self.queue.value)
        note = ""
        if queue % batch:
            note = (f"The queue size must be a multiple of the batch size: "
                    f"{_nearest_multiple(queue, batch)}, for instance.")
        elif self.device_line.device_type == "cpu" and batch > 32:
            note = f"On the CPU a batch of 8-32 is practical; {batch} is a GPU setting."
        self.batch_note.value = note
        self.batch_note.visible = bool(note)

    # -- running ----------------------------------------------------------------------------
    def _read_inputs(self):
        from .._outputs import check_writable_folder
        from ..pretrain import CHECKPOINT_NAME, IMAGE_SUFFIXES, PretrainConfig

        text = self._text(self.patches)
        if not text:
            raise ValueError("Choose the folder of patches (an export's patches/ folder, or any "
                             "folder of 2D images).")
        folder = patch_folder_of(text)
        if not folder.is_dir():
            raise ValueError(f"'{folder}' is not a folder.")
        if not any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.rglob("*")):
            raise ValueError(f"'{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}): export "
                             "curated patches there first (Near-duplicates widget or napari-cem curate).")
        out = Path(self._text(self.output) or default_output(folder))
        if out.exists() and not out.is_dir():
            raise ValueError(f"The output '{out}' is a file; choose a folder.")
        if out.resolve() == folder.resolve():
            raise ValueError("Choose an output folder other than the patches folder.")
        check_writable_folder(out)  # OutputError (a ValueError): before reading any patch
        has_checkpoint = (out / CHECKPOINT_NAME).is_file()
        if self.resume.value and not has_checkpoint:
            raise ValueError(f"Resume: there is no checkpoint in '{out}' to continue from.")
        if not self.resume.value and has_checkpoint:
            raise ValueError(f"'{out}' already holds a checkpoint: tick Resume to continue it, or "
                             "choose another output folder.")
        batch, queue = int(self.batch.value), int(self.queue.value)
        if queue % batch:
            raise ValueError(f"The queue size ({queue}) must be a multiple of the batch size ({batch}); "
                             f"use {_nearest_multiple(queue, batch)}, for instance.")
        minutes = float(self.max_minutes.value)
        options = dict(arch=self.arch.value, epochs=int(self.epochs.value), batch_size=batch, queue_size=queue,
                       lr=float(self.lr.value), max_minutes=minutes if minutes > 0 else None)
        options.update(self.extra_config)
        config = PretrainConfig(**options)
        if self.device_line.ready and self.device_line.device_type is None:
            raise ValueError(f"Device: {self.device_info.value}")  # absent (the worker checks too)
        return folder, out, config

    def start(self):
        """Start pre-training in a thread worker; returns the worker (None on bad input)."""
        if self.jobs.running:
            return None
        try:
            folder, out, config = self._read_inputs()
        except (ValueError, TypeError, OSError) as exc:
            notify_error(str(exc))
            return None
        resume = bool(self.resume.value)
        self._run = {"out": out, "config": config, "resume": resume, "epochs_run": 0}
        self.last_log = None
        return self.jobs.start(_pretrain_job, folder, out, config, self.device.value, resume,
                               message=f"Reading the patches in {folder} ...",
                               on_record=self._on_epoch, on_result=self._on_done,
                               on_error=self._explain, then=self._register,
                               stopping="Stopping after this iteration (the last checkpoint is "
                                        "kept) ...")

    def stop(self) -> None:
        """Stop after the current iteration; the last finished epoch's checkpoint is kept."""
        self.jobs.cancel()

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        for w in (self.patches, self.output, self.epochs, self.batch, self.queue, self.lr,
                  self.max_minutes, self.device, self.resume):
            w.enabled = not running

    def _on_epoch(self, log) -> None:
        """An epoch ended and its checkpoint is written: say so, offer it to Fine-tune."""
        self.last_log = log
        self._run["epochs_run"] += 1
        self.progress.status.value = (
            f"Epoch {log.epoch} / {self._run['config'].epochs}: loss {log.loss:.4f}, accuracy "
            f"{log.accuracy:.3f}, {log.images_per_s:.1f} images/s, lr {log.lr:.3g}")
        self._register()

    def _register(self) -> bool:
        """Offer the checkpoint of the output folder to the Fine-tune widget (if there is one)."""
        from ..pretrain import CHECKPOINT_NAME

        if "out" not in self._run:
            return False
        path = self._run["out"] / CHECKPOINT_NAME
        if not path.is_file():
            return False
        self.checkpoint = path
        self.state.add_pretrained_weights(path)
        return True

    def _on_done(self, summary) -> None:
        config, out = self._run["config"], self._run["out"]
        log = self.last_log
        if summary["stopped"]:
            saved = self._run["epochs_run"] > 0 or self._run["resume"]
            if saved and self._register():
                where = f"epoch {log.epoch}" if log is not None else "the resumed checkpoint"
                message = (f"Stopped; the checkpoint of {where} is kept in {out} (offered in "
                           "Fine-tune's Weights).")
            else:
                message = "Stopped before the first epoch ended; nothing was saved."
            self.result.value = message
            self.progress.finish(message)
            return
        self._register()
        if log is None:  # resumed a checkpoint that already has the requested epochs
            message = (f"Nothing to do: the checkpoint in {out} already has {config.epochs} or more "
                       "epochs; raise Epochs to continue it.")
        else:
            budget = "" if log.epoch >= config.epochs else (
                f" (time budget of {config.max_minutes:g} min reached)")
            message = (f"Pre-trained to epoch {log.epoch} / {config.epochs}{budget}: loss "
                       f"{log.loss:.4f}, accuracy {log.accuracy:.3f}. Checkpoint in {out}, offered "
                       f"in Fine-tune's Weights as 'pretrained: {out.name}'.")
        self.result.value = message
        self.progress.finish(message)
        notify_info(message)

    def _explain(self, exc: BaseException) -> str:
        """A failure in the widget's words: its option names, what to change, what is kept."""
        from ..pretrain import in_words

        message = in_words(describe_user_error(exc), _FIELD_NAMES)
        if "out of memory" in message.lower():
            message = f"The device ran out of memory: use a smaller Batch size. ({message})"
        if self._run.get("epochs_run") and self._register():
            message += f" The checkpoint of epoch {self.last_log.epoch} is kept in {self._run['out']}."
        self.result.value = "Failed: " + message
        return message


def _nearest_multiple(value: int, step: int) -> int:
    return max(step, round(value / step) * step)


def _pretrain_job(folder, out, config, device, resume, progress, should_stop):
    """Worker: yield an EpochLog per finished epoch; return {"stopped": bool}."""
    from .. import pretrain as core
    from .._cancel import Cancelled

    wait_for_torch_stack(progress)  # imported in the background since the widget opened
    try:
        yield from core.pretrain(folder, out, config, device=device, resume=resume,
                                 progress=progress, should_stop=should_stop)
    except Cancelled:
        return {"stopped": True}
    return {"stopped": False}
