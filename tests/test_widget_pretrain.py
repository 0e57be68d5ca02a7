"""The "Pre-train encoder" dock widget in a real viewer: run, checkpoint offered to Fine-tune,
stop, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

torch = pytest.importorskip("torch")

from napari_cem._widgets._state import state_for  # noqa: E402
from napari_cem._widgets.finetune import FinetuneWidget  # noqa: E402
from napari_cem._widgets.pretrain import PretrainWidget  # noqa: E402
from napari_cem.pretrain import CHECKPOINT_NAME, load_pretrain_checkpoint  # noqa: E402

TINY = {"crop": 32, "dim": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _export(folder: Path, n: int = 8) -> Path:
    """An export-like folder: ``patches/`` of random 64 x 64 uint8 TIFFs (2 batches of 4)."""
    patches = folder / "patches"
    patches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        tifffile.imwrite(patches / f"p{i:02d}.tif", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    return folder


def _widget(viewer, patches, epochs=2) -> PretrainWidget:
    w = PretrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.extra_config = dict(TINY)
    w.arch.value = "resnet18"  # the Encoder field reaches the core (and keeps the test fast)
    w.patches.value = str(patches)
    w.epochs.value = epochs
    w.batch.value = 4
    w.queue.value = 16
    w.device.value = "cpu"
    return w


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


def test_run_writes_a_checkpoint_that_fine_tune_offers(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    import napari_cem._widgets.pretrain as pw

    viewer = make_napari_viewer()
    export = _export(tmp_path / "export")
    finetune = FinetuneWidget(viewer)  # open before: it hears of the checkpoint
    w = _widget(viewer, export)  # the export folder itself: its patches/ are used
    out = export / "moco"
    assert Path(str(w.output.value)) == out  # the default output, beside the patches
    # torch is imported in the background; the device line fills in once it is there
    qtbot.waitUntil(lambda: w.device_info.value.startswith("cpu"), timeout=60_000)
    assert w.lr.value == pytest.approx(0.015)
    assert w.batch_note.native.isHidden()  # batch 4 on the CPU, queue 16: nothing to say
    epochs = []
    show_epoch = w._on_epoch
    w._on_epoch = lambda log: (epochs.append(log.epoch), show_epoch(log))  # each epoch reaches the UI
    w.start()
    _wait_idle(qtbot, w)
    ckpt = out / CHECKPOINT_NAME
    assert ckpt.is_file() and epochs == [1, 2]
    assert load_pretrain_checkpoint(ckpt)["epoch"] == 2 and load_pretrain_checkpoint(ckpt)["arch"] == "resnet18"
    assert w.progress.bar.max == 2 * 2 and "Pre-trained to epoch 2 / 2" in w.result.value
    assert w.start_button.enabled and w.patches.enabled
    assert "accuracy" in w.result.value and w.last_log.images_per_s > 0
    assert state_for(viewer).pretrained_weights == [ckpt]
    # the Fine-tune widget offers it, selected, and hands its path to training
    assert "pretrained: moco" in finetune.weights.choices
    assert finetune.weights.value == "pretrained: moco"
    assert finetune._weights_spec() == str(ckpt)
    assert not finetune.weights_file.visible and not finetune.download_button.visible
    # one opened later offers it too, without changing its own choice
    later = FinetuneWidget(viewer)
    assert "pretrained: moco" in later.weights.choices and later.weights.value == "none"
    # a second run into the same folder is refused unless it resumes
    messages = []
    monkeypatch.setattr(pw, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    assert w.start() is None and "tick Resume" in messages[-1]
    w.resume.value = True
    w.epochs.value = 3
    w.start()
    _wait_idle(qtbot, w)
    assert load_pretrain_checkpoint(ckpt)["epoch"] == 3 and "epoch 3 / 3" in w.result.value
    assert state_for(viewer).pretrained_weights == [ckpt]  # registered once


def test_stop_keeps_the_last_checkpoint(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    import napari_cem.pretrain as core

    viewer = make_napari_viewer()
    export = _export(tmp_path / "export")
    w = _widget(viewer, export / "patches", epochs=50)
    assert Path(str(w.output.value)) == export / "moco"
    run = core.pretrain
    stop_in = {"epoch": 1}

    def pretrain(*args, progress, **kwargs):
        def progress_and_stop(done, total, stage):  # Stop pressed during the first step of an epoch
            progress(done, total, stage)
            if stage.startswith(f"epoch {stop_in['epoch']} /"):
                w.stop()
        return run(*args, progress=progress_and_stop, **kwargs)

    monkeypatch.setattr(core, "pretrain", pretrain)
    # stopped in the first epoch: nothing saved
    w.output.value = str(tmp_path / "early")
    w.start()
    _wait_idle(qtbot, w)
    assert "nothing was saved" in w.result.value
    assert not (tmp_path / "early" / CHECKPOINT_NAME).exists()
    assert state_for(viewer).pretrained_weights == []
    # stopped in the second epoch: the checkpoint of epoch 1 is kept and offered
    stop_in["epoch"] = 2
    w.output.value = str(tmp_path / "late")
    w.start()
    _wait_idle(qtbot, w)
    ckpt = tmp_path / "late" / CHECKPOINT_NAME
    assert load_pretrain_checkpoint(ckpt)["epoch"] == 1
    assert "Stopped; the checkpoint of epoch 1 is kept" in w.result.value
    assert state_for(viewer).pretrained_weights == [ckpt] and w.start_button.enabled
    assert "pretrained: late" in FinetuneWidget(viewer).weights.choices


def test_bad_input_is_a_message(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    import napari_cem._widgets.pretrain as pw

    messages = []
    monkeypatch.setattr(pw, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    viewer = make_napari_viewer()
    w = PretrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.device.value = "cpu"
    qtbot.waitUntil(lambda: w.device_info.value.startswith("cpu"), timeout=60_000)
    assert w.start() is None and "Choose the folder of patches" in messages[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    w.patches.value = str(empty)
    assert Path(str(w.output.value)) == tmp_path / "empty-moco"
    assert w.start() is None and "holds no images" in messages[-1]
    # the queue must be a multiple of the batch: a note at once, a refusal on Start
    export = _export(tmp_path / "export", n=6)
    w.patches.value = str(export)
    w.extra_config = dict(TINY)
    w.batch.value = 4
    w.queue.value = 18
    assert not w.batch_note.native.isHidden() and "multiple of the batch" in w.batch_note.value
    assert w.start() is None and "multiple of the batch size" in messages[-1]
    w.batch.value = 64
    w.queue.value = 128
    assert "On the CPU" in w.batch_note.value
    # a batch larger than the data set: the worker's message, in the widget's words
    w.start()
    _wait_idle(qtbot, w)
    assert "larger than the data set" in messages[-1] and "Batch size" in messages[-1]
    assert "--batch" not in messages[-1] and w.start_button.enabled
    # no readable image
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.tif").write_bytes(b"not a tiff")
    w.patches.value = str(bad)
    w.batch.value = 4
    w.queue.value = 16
    w.start()
    _wait_idle(qtbot, w)
    assert "could be read" in messages[-1] and "Failed" in w.result.value
    assert state_for(viewer).pretrained_weights == []
    # resume without a checkpoint
    w.resume.value = True
    assert w.start() is None and "no checkpoint" in messages[-1]


def test_an_unwritable_output_folder_is_refused_before_reading(make_napari_viewer, monkeypatch, tmp_path,
                                                               readonly_dir):
    import napari_cem._widgets.pretrain as pw

    messages = []
    monkeypatch.setattr(pw, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    viewer = make_napari_viewer()
    w = _widget(viewer, _export(tmp_path / "export"))
    w.output.value = str(readonly_dir / "moco")
    assert w.start() is None and "cannot write to the output folder" in messages[-1]
