"""The "Fine-tune" dock widget in a real viewer: train, bundle saved and active, stop, preview."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem._widgets._state import state_for
from napari_cem._widgets.finetune import FinetuneWidget
from napari_cem.model import load_bundle
from napari_cem.synthetic import make_em_volume


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def sample():
    return make_em_volume((3, 96, 96), isotropic=False, seed=3)


def _wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget._worker is None and not widget.previewing.running, timeout=timeout)


@pytest.fixture()
def widget(make_napari_viewer, sample, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="em")
    painted = np.zeros(sample.labels.shape, np.uint8)
    painted[1] = (sample.labels[1] == 2).astype(np.uint8)  # mito in slice 1, complete slice
    viewer.add_labels(painted, name="paint")
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.iterations.value = 3
    w.crop.value = 64
    w.batch.value = 2
    w.device.value = "cpu"
    w.complete.value = True
    w.class_names.value = "mito"
    w.save_to.value = str(tmp_path / "model.pt")
    return w


def test_training_saves_the_bundle_and_makes_it_active(widget, qtbot, tmp_path):
    changes = []
    state = state_for(widget.viewer)
    state.on_model_changed(changes.append)
    assert widget.image.value is widget.viewer.layers["em"]
    assert widget.labels_layer.value is widget.viewer.layers["paint"]
    # torch is imported in the background; the device line fills in when it is
    qtbot.waitUntil(lambda: widget.device_info.value.startswith("cpu"), timeout=60_000)
    widget.augment.value = "cem500k"
    widget.arch.value = "resnet18-slim"  # the model choice reaches the core
    widget.binning.value = 2  # and the binning (crop 128: a multiple of 64)
    widget.crop.value = 128
    widget.start()
    _wait_idle(qtbot, widget)
    path = tmp_path / "model.pt"
    assert load_bundle(path).arch == "resnet18-slim" and "U-Net ResNet18 (slim decoder)" in widget.result.value
    assert load_bundle(path).bin == 2 and "binned 2 x 2" in widget.result.value
    assert path.exists() and widget.bundle_path == path
    assert state.active_model is widget.bundle and state.active_model_path == path and changes
    assert load_bundle(path).classes == ["background", "mito"]
    assert load_bundle(path).training["augment"]["angles"] == "any"  # the chosen preset was used
    assert len(widget.curve.losses) == 3 and widget.progress.bar.value == widget.progress.bar.max
    assert "Trained U-Net ResNet18 (slim decoder) binned 2 x 2, 3 iterations" in widget.result.value
    # preview of the slice on screen, after training
    widget.viewer.dims.set_current_step(0, 1)
    assert widget.preview_button.enabled
    widget.preview()
    _wait_idle(qtbot, widget)
    preview = widget.viewer.layers["em preview"]
    assert preview.data.shape == (3, 96, 96) and preview.data[0].max() == 0
    assert set(np.unique(preview.data[1])) <= {0, 1}


def test_the_preview_is_of_the_plane_on_screen(widget, qtbot, monkeypatch):
    """In an xz view the preview predicts that xz plane and draws it there (it used to
    predict the xy slice of the same z)."""
    import napari_cem.model as model

    planes = []

    def predict(_bundle, plane, *args, **kwargs):
        planes.append(plane.shape)
        return np.ones(plane.shape, np.uint8)

    monkeypatch.setattr(model, "predict_slice", predict)
    widget.bundle = object()  # as after training
    viewer = widget.viewer
    viewer.dims.order = (1, 0, 2)  # rows z, columns x: an xz plane
    viewer.dims.point = (0, 40, 0)
    widget.preview()
    _wait_idle(qtbot, widget)
    preview = viewer.layers["em preview"]
    assert planes == [(3, 96)]
    assert preview.data[:, 40, :].all() and int(preview.data.sum()) == 3 * 96


def test_stop_keeps_the_latest_weights(widget, qtbot, tmp_path):
    widget.iterations.value = 500
    seen = []
    show_step = widget._on_step
    widget._on_step = lambda step: (seen.append(step.iteration), show_step(step),
                                    widget.stop() if len(seen) == 2 else None)
    widget.start()
    # a preview request during training is answered by the training thread
    widget.preview()
    _wait_idle(qtbot, widget)
    bundle = load_bundle(tmp_path / "model.pt")
    assert bundle.training["stopped_early"] and 2 <= bundle.training["iterations"] < 500
    assert "Stopped after" in widget.result.value and widget.start_button.enabled
    assert "em preview" in widget.viewer.layers


def test_bad_input_is_a_notification(make_napari_viewer, qtbot, monkeypatch, sample):
    import napari_cem._widgets.finetune as ft

    messages = []
    monkeypatch.setattr(ft, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    viewer = make_napari_viewer()
    w = FinetuneWidget(viewer)
    assert w.start() is None and "Open an EM image" in messages[-1]
    viewer.add_image(sample.image, name="em")
    assert w.start() is None and "Labels layer" in messages[-1]
    viewer.add_labels(np.zeros((3, 96, 95), np.uint8), name="wrong")
    assert w.start() is None and "same shape" in messages[-1]
    viewer.layers.remove("wrong")
    viewer.add_labels(np.zeros((3, 96, 96), np.uint8), name="empty")
    w.device.value = "cpu"
    w.start()
    _wait_idle(qtbot, w)
    assert "Nothing is painted" in messages[-1] and w.start_button.enabled
    w.weights.value = "local file ..."
    assert w.start() is None and "Pick the weights file" in messages[-1]


def test_an_unwritable_save_place_is_refused_before_training(widget, readonly_dir, monkeypatch):
    import napari_cem._widgets.finetune as ft

    messages = []
    monkeypatch.setattr(ft, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    widget.save_to.value = str(readonly_dir / "model.pt")
    assert widget.start() is None
    assert "cannot write" in messages[-1] and "Save model to" in messages[-1]
    assert widget._worker is None and widget.start_button.enabled


def test_a_save_that_fails_at_the_end_is_rescued(widget, qtbot, tmp_path, small_disk, monkeypatch):
    import napari_cem._widgets.finetune as ft

    messages = []
    monkeypatch.setattr(ft, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path / "cache"))
    disk = small_disk("256k")  # passes the check; the ~100 MB bundle does not fit
    widget.save_to.value = str(disk / "model.pt")
    widget.start()
    _wait_idle(qtbot, widget)
    rescued = list((tmp_path / "cache" / "rescued").glob("model-*.pt"))
    assert len(rescued) == 1 and widget.bundle_path == rescued[0]
    assert "No space left on device" in messages[-1] and str(rescued[0]) in messages[-1]
    assert state_for(widget.viewer).active_model_path == rescued[0]
    assert load_bundle(rescued[0]).classes == ["background", "mito"]


def test_download_shows_its_progress_in_megabytes(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The released-weights download reports bytes as it goes (the callback used to be dropped)."""
    import dataclasses
    import http.server
    import threading
    import time

    import torch

    from napari_cem import weights as W

    sd = {"module.encoder_q.conv1.weight": torch.randn(64, 1, 7, 7),
          "module.encoder_q.layer1.0.conv1.weight": torch.randn(64, 64, 1, 1),
          "module.queue": torch.zeros(128, 6000)}  # ~3 MB
    torch.save({"state_dict": sd, "norms": [0.5, 0.1]}, tmp_path / "w.pth")
    payload = (tmp_path / "w.pth").read_bytes()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for i in range(0, len(payload), 1 << 16):
                self.wfile.write(payload[i:i + (1 << 16)])
                time.sleep(0.03)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/w.pth"
    monkeypatch.setenv("NAPARI_CEM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(W.KNOWN_WEIGHTS, "cem500k-mocov2",
                        dataclasses.replace(W.KNOWN_WEIGHTS["cem500k-mocov2"], url=url, min_bytes=1000))
    try:
        viewer = make_napari_viewer()
        w = FinetuneWidget(viewer)
        viewer.window.add_dock_widget(w)
        w.weights.value = "cem500k-mocov2"
        seen = []

        def finished():  # also records what the status line shows meanwhile
            seen.append(str(w.progress.status.value))
            return w._worker is None

        assert w.download() is not None
        qtbot.waitUntil(finished, timeout=60_000)
    finally:
        server.shutdown()
        server.server_close()
    assert any(s.startswith("Downloading: ") and " of 3 MB" in s for s in seen), seen
    assert "saved to" in w.progress.status.value and W.is_cached("cem500k-mocov2")


def test_a_second_round_continues_from_the_active_model(widget, qtbot, tmp_path, monkeypatch):
    import napari_cem._widgets.finetune as ft

    messages = []
    monkeypatch.setattr(ft, "notify_error", messages.append)
    widget.start_from.value = "the active model"
    assert not widget.add_classes.native.isHidden()  # new classes may widen a model continued from
    assert widget.start() is None and "no active model" in messages[-1]  # nothing trained yet
    widget.start_from.value = "a new model"
    assert widget.add_classes.native.isHidden()
    widget.start()
    _wait_idle(qtbot, widget)
    first = widget.bundle_path
    widget.start_from.value = "the active model"
    widget.save_to.value = str(tmp_path / "round2.pt")
    widget.iterations.value = 2
    widget.start()
    _wait_idle(qtbot, widget)
    lineage = load_bundle(tmp_path / "round2.pt").training["lineage"]
    assert lineage == {"parent": str(first), "rounds": [3]}
    widget.start_from.value = "a model file ..."
    assert not widget.init_file.native.isHidden()  # the file row appears
    widget.init_file.value = str(tmp_path / "missing.pt")
    assert widget.start() is None and "Pick the model file" in messages[-1]


def test_the_segmentation_of_a_slice_becomes_paint_and_undo_restores_it(widget, monkeypatch):
    import napari_cem._widgets.finetune as ft

    messages = []
    monkeypatch.setattr(ft, "notify_error", messages.append)
    viewer = widget.viewer
    paint = viewer.layers["paint"]
    assert widget.use_segmentation() is None and "Segment the image first" in messages[-1]
    seg = np.zeros((3, 96, 96), np.uint8)
    seg[:, 10:30, 10:40] = 1
    viewer.add_labels(seg, name="em segmentation",
                      metadata={"napari_cem": {"classes": ["background", "mito"], "segmentation": {}}})
    widget.labels_layer.value = paint
    before = paint.data.copy()
    viewer.dims.set_current_step(0, 2)
    # class names "mito", painted slices complete: mito -> 1, background -> 0 (unpainted)
    assert widget.use_segmentation() == 96 * 96
    np.testing.assert_array_equal(paint.data[2], seg[2])
    np.testing.assert_array_equal(paint.data[:2], before[:2])
    paint.undo()
    np.testing.assert_array_equal(paint.data, before)
    # without 'complete', the background is painted as value 1 and mito as its own value
    widget.complete.value = False
    widget.class_names.value = "background, mito"
    widget.use_segmentation()
    assert set(np.unique(paint.data[2])) == {1, 2} and (paint.data[2][15, 15] == 2)
    widget.class_names.value = "er"
    assert widget.use_segmentation() is None and "not among the class names" in messages[-1]


def test_paint_values_follow_the_paint_convention():
    from napari_cem._widgets.finetune import paint_values

    assert list(paint_values(["background", "mito"], [], complete=False)) == [1, 2]
    assert list(paint_values(["background", "mito"], ["mito"], complete=True)) == [0, 1]
    assert list(paint_values(["background", "mito", "er"], ["er", "background", "mito"], False)) == [2, 3, 1]
    with pytest.raises(ValueError, match="not among"):
        paint_values(["background", "mito"], ["er"], complete=True)


def test_the_live_preview_follows_the_slice_on_screen(widget, qtbot):
    shown = []
    show = widget._show_preview
    widget._show_preview = lambda target, labels: (shown.append(target[1].index), show(target, labels))
    widget.iterations.value = 400
    widget.live_every.value = 0.3
    widget.viewer.dims.set_current_step(0, 1)
    widget.start()
    qtbot.waitUntil(lambda: 1 in shown, timeout=60_000)
    widget.viewer.dims.set_current_step(0, 2)  # the user moves on: the preview follows
    qtbot.waitUntil(lambda: 2 in shown, timeout=60_000)
    widget.stop()
    _wait_idle(qtbot, widget)
    assert not widget._live_timer.isActive()  # no preview ticks after training
    preview = widget.viewer.layers["em preview"]
    assert preview.data.shape == (3, 96, 96)


def test_paint_added_during_training_is_used(widget, qtbot, monkeypatch, sample):
    import napari_cem._widgets.finetune as ft

    monkeypatch.setattr(ft, "PAINT_REFRESH_S", 0.0)  # look at the paint after every iteration
    statuses = []
    step_shown = widget._on_step
    widget._on_step = lambda step: (step_shown(step), statuses.append(widget.progress.status.value))
    widget.iterations.value = 400
    paint = widget.viewer.layers["paint"]
    widget.start()
    qtbot.waitUntil(lambda: len(statuses) >= 2, timeout=60_000)
    paint.data[2] = (sample.labels[2] == 2)  # the user paints slice 2 meanwhile
    qtbot.waitUntil(lambda: any("paint picked up" in s for s in statuses), timeout=60_000)
    widget.stop()
    _wait_idle(qtbot, widget)
    plane = 96 * 96
    assert f"{plane:,} painted px" in statuses[0] and any(f"{2 * plane:,} painted px" in s for s in statuses)


def test_fast_iterations_redraw_the_curve_and_status_at_most_twice_a_second(widget, monkeypatch):
    """Every step's loss is kept, but the window is redrawn at most every SHOW_EVERY_S (each
    redraw of a window holding the OpenGL canvas costs CPU that training needs); a step with
    a message and the last step are always shown."""
    from types import SimpleNamespace

    from napari_cem._widgets import finetune as ft

    shown = []
    # on the class: a magicgui container takes deleting an attribute as removing a widget
    monkeypatch.setattr(ft.FinetuneWidget, "_show_step", lambda self, step, notes: shown.append(step.iteration))
    monkeypatch.setattr(ft, "notify_info", lambda message: None)

    def step(i, message=""):
        return SimpleNamespace(iteration=i, total=50, loss=1.0 / i, train_iou=0.5, lr=1e-3, batch_size=2,
                               painted=10, message=message, preview=None)

    for i in range(1, 50):
        widget._on_step(step(i, "crop reduced to 64" if i == 20 else ""))
    widget._on_step(step(50))
    assert len(widget.curve.losses) == 50
    assert shown[0] == 1 and 20 in shown and shown[-1] == 50 and len(shown) <= 5
