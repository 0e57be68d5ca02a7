"""The "Segment" dock widget in a real viewer: labels layer, refresh, current slice, IoU, cancel."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from qtpy.QtCore import QPoint, Qt

from napari_cem._widgets._state import state_for
from napari_cem._widgets.segment import SegmentWidget
from napari_cem.synthetic import make_em_volume


class Dark(torch.nn.Module):
    """Logit high where the image is dark: a 'membrane' detector that needs no training."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(-1.0 / 9)
            self.conv.bias.fill_(-0.3)

    def forward(self, x):
        return 8 * self.conv(x)


def tiny_bundle():
    return SimpleNamespace(model=Dark(), classes=["background", "membrane"], norms=(0.5, 0.25))


@pytest.fixture(scope="module")
def sample():
    return make_em_volume((6, 64, 72), isotropic=True, seed=5)


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


@pytest.fixture()
def widget(make_napari_viewer, sample):
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="em", scale=(8, 8, 8), translate=(0, 16, 32), units=("nm",) * 3)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    state_for(viewer).set_active_model(tiny_bundle())
    return w


def test_segment_adds_then_refreshes_a_labels_layer(widget, qtbot, sample):
    viewer = widget.viewer
    assert "membrane" in widget.model_info.value
    widget.keep_probs.value = True
    widget.run()
    _wait_idle(qtbot, widget)
    layer = viewer.layers["em segmentation"]
    assert layer.data.shape == sample.image.shape and layer.data.dtype == np.uint8
    np.testing.assert_allclose(layer.scale, (8, 8, 8))
    np.testing.assert_allclose(layer.translate, (0, 16, 32))
    assert layer.metadata["napari_cem"]["classes"] == ["background", "membrane"]
    assert 0.01 < layer.data.mean() < 0.9
    prob = viewer.layers["em P(membrane)"]
    assert prob.data.dtype == np.uint8 and prob.data.shape == sample.image.shape
    assert "segmented" in widget.progress.status.value
    n_layers = len(viewer.layers)
    widget.threshold.value = 0.9  # fewer voxels pass: the same layer is refreshed, none added
    widget.run()
    _wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["em segmentation"] is layer
    assert 0 < layer.data.sum() < (prob.data > 127).sum()
    assert widget.result.metadata["tta"] == "none"
    widget.tta.value = "flips"  # test-time augmentation reaches the core
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.result.metadata["tta"] == "flips" and widget.result.metadata["z_smooth"] is False
    widget.tta.value, widget.z_smooth.value = "none", True  # smoothing across slices reaches the core
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.result.metadata["z_smooth"] is True
    widget.z_smooth.value = False
    widget.min_size.value, widget.fill_holes.value = 50, True  # clean-up, per slice (stack)
    widget.run()
    _wait_idle(qtbot, widget)
    cleaned = widget.result.metadata["cleanup"]
    assert cleaned["per_slice"] and cleaned["min_size_voxels"] == 50
    assert "Clean-up:" in widget.progress.status.value
    from napari_cem.cleanup import clean_labels

    # the cleaned layer holds no piece under 50 px in any slice
    assert clean_labels(layer.data, 50, per_slice=True)[1]["removed_voxels"] == 0


def test_current_slice_only_and_evaluation_table(widget, qtbot, sample):
    viewer = widget.viewer
    assert widget.iou_table.isHidden()
    viewer.dims.set_point(0, 3 * 8)
    widget.run(current_slice=True)
    _wait_idle(qtbot, widget)
    layer = viewer.layers["em segmentation"]
    assert layer.data.shape == sample.image.shape
    assert layer.data[3].any() and not layer.data[[0, 1, 2, 4, 5]].any()
    # ground truth: membranes of the synthetic sample (label 1)
    viewer.add_labels((sample.labels == 1).astype(np.uint8), name="gt", scale=(8, 8, 8))
    widget.ground_truth.value = viewer.layers["gt"]
    widget.run()
    _wait_idle(qtbot, widget)  # the comparison starts by itself after a whole-volume run
    _wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.evaluation is not None, timeout=30_000)
    from napari_cem.metrics import evaluate

    expect = evaluate(layer.data, viewer.layers["gt"].data, ["background", "membrane"])
    table = widget.iou_table
    assert not table.isHidden()  # hidden until the first comparison
    assert table.rowCount() == 1 and table.item(0, 0).text() == "membrane"
    assert table.item(0, 1).text() == f"{expect.iou_3d[1]:.3f}"
    assert table.item(0, 2).text() == f"{expect.iou_2d[1]:.3f}"
    assert "mean IoU" in widget.iou_info.value


def test_threshold_from_paint_sets_the_threshold(widget, qtbot, sample, monkeypatch):
    from napari_cem.threshold import threshold_from_paint

    bundle = SimpleNamespace(**vars(tiny_bundle()), n_outputs=1,
                             training={"painted_slices": [0], "label_values": {"1": 1}, "complete_slices": True})
    state_for(widget.viewer).set_active_model(bundle)
    errors = []
    monkeypatch.setattr("napari_cem._widgets.segment.notify_error", errors.append)
    widget.threshold_from_paint()  # no paint chosen: said, nothing runs
    assert errors and "Paint" in errors[-1] and widget._worker is None
    paint = np.zeros(sample.image.shape, np.uint8)
    paint[2:4] = sample.image[2:4] < 100  # dark = membrane, in two slices it did not train on
    widget.viewer.add_labels(paint, name="paint")
    widget.paint.value = widget.viewer.layers["paint"]
    widget.threshold_from_paint()
    _wait_idle(qtbot, widget)
    expect = threshold_from_paint(sample.image, paint, bundle, device="cpu")
    assert widget.threshold.value == pytest.approx(expect.threshold)
    assert "estimated on" in widget.progress.status.value and "slices 2, 3" in widget.progress.status.value


def test_cancel_keeps_previous_state(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    big = np.random.default_rng(0).integers(0, 255, (300, 256, 256), dtype=np.uint8)
    viewer.add_image(big, name="big")
    w = SegmentWidget(viewer)
    state_for(viewer).set_active_model(tiny_bundle())
    w.run()
    w.cancel()
    _wait_idle(qtbot, w)
    assert "big segmentation" not in [layer.name for layer in viewer.layers]
    assert "Cancelled" in w.progress.status.value
    assert w.segment_button.enabled


def test_errors_are_notifications(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    import napari_cem._widgets.segment as seg

    messages = []
    monkeypatch.setattr(seg, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    assert w.run() is None and "No model" in messages[-1]
    state_for(viewer).set_active_model(tiny_bundle())
    assert w.run() is None and "Open an EM image" in messages[-1]
    viewer.add_image(np.zeros((40, 40), np.uint8), name="flat")
    w.mode.value = "orthoplane"
    assert "2D image" in w.mode_note.value
    assert w.run() is None and "Orthoplane needs a 3D volume" in messages[-1]
    # a model whose output count does not fit its classes: the core's message is shown
    state_for(viewer).set_active_model(SimpleNamespace(model=torch.nn.Conv2d(1, 3, 1),
                                                       classes=["bg", "a"], norms=(0.5, 0.2)))
    w.mode.value = "stack"
    w.run()
    _wait_idle(qtbot, w)
    assert "gives 3 outputs" in messages[-1]
    # a file that is not a model bundle
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nothing")
    w.load_model_file(junk)
    _wait_idle(qtbot, w)
    assert "not a weights file napari-cem can load safely" in messages[-1]
    assert w.evaluate() is None and "Segment first" in messages[-1]


@pytest.mark.slow
def test_model_file_becomes_the_active_model(make_napari_viewer, qtbot, tmp_path):
    from napari_cem.model import ModelBundle, build_unet, save_bundle

    path = tmp_path / "m.pt"
    save_bundle(ModelBundle(model=build_unet(1), classes=["background", "mito"], norms=(0.5, 0.2)), path)
    viewer = make_napari_viewer()
    w = SegmentWidget(viewer)
    w.load_model_file(path)
    _wait_idle(qtbot, w)
    state = state_for(viewer)
    assert state.active_model.classes == ["background", "mito"]
    assert state.active_model_path == path and "m.pt" in w.model_info.value


def test_opening_the_widget_preloads_what_the_first_labels_layer_needs(make_napari_viewer, qtbot):
    """The imports napari does when it first shows a Labels layer (pandas alone ~0.7 s) run in a
    background thread when the widget opens, not on the UI thread when the result appears."""
    import sys

    from napari_cem._widgets import _common

    SegmentWidget(make_napari_viewer())
    thread = _common._labels_display_import
    if thread is not None:
        thread.join(timeout=60)
    missing = [m for m in _common._LABELS_DISPLAY_MODULES if m not in sys.modules]
    assert not missing, f"napari renamed or moved these modules: {missing}"


def test_uncertainty_layer_and_next_most_uncertain_slice(widget, qtbot, monkeypatch):
    import napari_cem._widgets.segment as seg

    messages = []
    monkeypatch.setattr(seg, "notify_error", messages.append)
    viewer = widget.viewer
    assert widget.next_uncertain_slice() is None and "Show uncertainty" in messages[-1]
    widget.keep_uncertainty.value = True
    widget.run()
    _wait_idle(qtbot, widget)
    layer = viewer.layers["em uncertainty"]
    assert layer.data.shape == viewer.layers["em"].data.shape and layer.data.dtype == np.uint8
    scores = widget.result.metadata["slice_uncertainty"]
    assert widget.uncertain_button.enabled
    viewer.dims.order = (1, 0, 2)  # looking at an xz plane: the jump goes back to xy slices
    first = widget.next_uncertain_slice()
    assert first == int(np.argmax(scores)) and viewer.dims.order == (0, 1, 2)
    z_world = viewer.layers["em"].data_to_world((first, 0, 0))[0]
    assert viewer.dims.point[0] == pytest.approx(z_world)
    second = widget.next_uncertain_slice()
    assert second != first and scores[second] <= scores[first]
    assert "mean uncertainty" in widget.progress.status.value
    # the per-slice plot: one bar per slice, a click on a bar goes to that slice
    plot = widget.slice_plot
    assert not plot.isHidden() and plot.marked == second
    np.testing.assert_allclose(plot.scores, scores)
    last = len(scores) - 1
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(plot.width() - 5, plot.height() // 2))
    assert plot.marked == last
    assert viewer.dims.point[0] == pytest.approx(viewer.layers["em"].data_to_world((last, 0, 0))[0])
    viewer.layers.remove(widget._unsure_layer)
    assert plot.isHidden() and not widget.uncertain_button.enabled


def test_a_long_model_file_name_does_not_widen_the_dock():
    from napari_cem._widgets._common import short_name

    long = "levers_none_resnet50_none_auto_keep_it300_seed0.pt"
    assert short_name(long) == "levers_none_r\u2026it300_seed0.pt" and len(short_name(long)) == 28
    assert short_name("m.pt") == "m.pt"
