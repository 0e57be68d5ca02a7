"""The "Organelles" dock widget in a real viewer: find objects, table <-> viewer selection,
proofreading edits with undo and autosave, export, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem._widgets.organelles import OrganellesWidget
from napari_cem.synthetic import make_em_volume


@pytest.fixture(scope="module")
def sample():
    return make_em_volume((16, 192, 192), isotropic=True, seed=0)


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


@pytest.fixture()
def widget(make_napari_viewer, sample):
    viewer = make_napari_viewer()
    meta = {"napari_cem": {"class_names": list(sample.class_names), "voxel_size": list(sample.voxel_size)}}
    viewer.add_image(sample.image, name="em", scale=sample.voxel_size, units=("nm",) * 3)
    viewer.add_labels(sample.labels, name="segmentation", scale=sample.voxel_size, units=("nm",) * 3,
                      metadata=meta)
    w = OrganellesWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _find(widget, qtbot, klass="mitochondria"):
    widget.segmentation.value = widget.viewer.layers["segmentation"]
    widget.klass.value = klass
    assert widget.find_objects() is not None
    _wait_idle(qtbot, widget)


def test_find_objects_makes_a_labels_layer_with_its_table(widget, qtbot, sample):
    _find(widget, qtbot)
    layer = widget.viewer.layers["segmentation objects"]
    assert widget.objects_layer is layer and widget.objects.value is layer
    mito = sample.class_names.index("mitochondria")
    assert ((layer.data > 0) == (sample.labels == mito)).all()
    n = int(layer.data.max())
    assert widget.proofreader.count == n and widget.table.model_.rows == n
    assert list(layer.features["index"]) == list(range(1, n + 1))
    assert "intensity_mean" in layer.features and "volume_nm3" in layer.features
    assert f"{n:,} objects" in widget.summary.value
    assert "object" in widget.progress.status.value
    assert widget.volume_plot.counts.sum() == n
    np.testing.assert_array_equal(layer.scale, sample.voxel_size)


def test_row_click_jumps_and_viewer_pick_selects_the_row(widget, qtbot):
    _find(widget, qtbot)
    layer, p = widget.objects_layer, widget.proofreader
    label = int(p.ids[-1])
    widget.table.select_labels([label])
    widget._on_rows_selected([label])  # what a click on the row does
    assert layer.selected_label == label
    box = p.box_of(label)
    z = (box[0].start + box[0].stop - 1) / 2
    assert abs(widget.viewer.dims.point[0] - z * layer.scale[0]) <= layer.scale[0]
    other = int(p.ids[0])
    layer.selected_label = other  # picked in the viewer
    assert widget.table.selected_labels() == [other]


def test_merge_split_delete_undo_update_table_layer_and_autosave(widget, qtbot, tmp_path):
    import tifffile

    _find(widget, qtbot)
    layer, p = widget.objects_layer, widget.proofreader
    widget.edits.autosave_file.value = tmp_path / "objects.tif"
    first, second = map(int, p.ids[:2])
    widget.table.select_labels([first, second])
    widget.edits.merge_button.clicked.emit()
    assert not (layer.data == second).any()
    assert widget.table.model_.rows == p.count and second not in list(layer.features["index"])
    assert "Merged 2 objects" in widget.edits.edit_status.value
    assert widget.edits.autosave.wait(30)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "objects.tif"), layer.data)

    # split the merged object again at the two objects' own voxels
    a = np.argwhere(layer.data == first)[0]
    widget.edits.undo_button.clicked.emit()
    b = np.argwhere(layer.data == second)[0]
    widget.table.select_labels([first, second])
    widget.edits.merge_button.clicked.emit()
    widget.edits.split_button.clicked.emit()  # first press: the points layer, in add mode
    points = widget.viewer.layers["split points"]
    assert points.mode == "add"
    points.add([a, b])  # the points layer has the objects layer's scale
    widget.edits.split_button.clicked.emit()
    assert len(points.data) == 0
    assert (layer.data == p.next_id - 1).any() and (layer.data == first).any()
    assert "Split" in widget.edits.edit_status.value

    widget.table.select_labels([first])
    widget.edits.delete_button.clicked.emit()
    assert not (layer.data == first).any() and first not in p.boxes
    widget.edits.undo_button.clicked.emit()
    assert (layer.data == first).any() and widget.table.model_.rows == p.count
    assert widget.edits.autosave.wait(30)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "objects.tif"), layer.data)
    assert (tmp_path / "objects.csv").read_text() == p.csv()


def test_refused_edits_say_why_and_change_nothing(widget, qtbot):
    _find(widget, qtbot)
    before = widget.objects_layer.data.copy()
    widget.table.select_labels([int(widget.proofreader.ids[0])])
    widget.edits.merge_button.clicked.emit()
    assert "at least 2" in widget.edits.edit_status.value
    widget.table.select_labels([])
    widget.objects_layer.selected_label = 0
    widget.edits.dilate_button.clicked.emit()
    assert "Select one object" in widget.edits.edit_status.value
    np.testing.assert_array_equal(widget.objects_layer.data, before)


def test_export_csv_writes_the_table(widget, qtbot, tmp_path):
    _find(widget, qtbot)
    widget.edits.csv_file.value = tmp_path / "table.csv"
    assert widget.edits.export_csv() == tmp_path / "table.csv"
    lines = (tmp_path / "table.csv").read_text().splitlines()
    assert lines[0].startswith("label,class,voxels") and len(lines) == widget.proofreader.count + 1


def test_filter_hides_small_objects_and_other_classes(widget, qtbot):
    _find(widget, qtbot, klass="all foreground")
    sizes = widget.proofreader.table["voxels"]
    threshold = int(np.median(sizes))
    widget.min_voxels.value = threshold
    assert widget.table.visible_count() == int((sizes >= threshold).sum())
    widget.min_voxels.value = 0
    widget.class_filter.value = "mitochondria"
    assert widget.table.visible_count() == int((widget.proofreader.table["class"] == "mitochondria").sum())


def test_empty_segmentation_gives_a_note_and_an_empty_table(widget, qtbot):
    widget.viewer.add_labels(np.zeros((4, 32, 32), np.uint8), name="nothing")
    widget.segmentation.value = widget.viewer.layers["nothing"]
    widget.find_objects()
    _wait_idle(qtbot, widget)
    assert "No objects found" in widget.progress.status.value
    assert widget.table.model_.rows == 0 and "No objects" in widget.summary.value


def test_measure_an_existing_objects_layer_and_a_layer_not_in_memory(widget, qtbot, sample):
    import dask.array as da

    labels = np.zeros((4, 40, 40), np.uint16)
    labels[1:3, 5:15, 5:15] = 3
    labels[1:3, 20:30, 20:30] = 7
    widget.viewer.add_labels(labels, name="saved objects")
    widget.objects.value = widget.viewer.layers["saved objects"]
    widget.measure_layer()
    _wait_idle(qtbot, widget)
    assert list(widget.proofreader.ids) == [3, 7]
    widget.viewer.add_labels(da.zeros((4, 40, 40), dtype=np.uint16, chunks=2), name="lazy")
    widget.objects.value = widget.viewer.layers["lazy"]
    assert widget.measure_layer() is None


def test_cancel_while_measuring_leaves_no_layer(widget, qtbot, monkeypatch):
    import napari_cem.measurements as measurements

    slow = measurements._surface

    def slow_surface(*args):
        import time

        time.sleep(0.05)
        return slow(*args)

    monkeypatch.setattr(measurements, "_surface", slow_surface)
    widget.segmentation.value = widget.viewer.layers["segmentation"]
    widget.klass.value = "all foreground"
    widget.find_objects()
    qtbot.waitUntil(lambda: "measuring" in widget.progress.status.value.lower(), timeout=30_000)
    widget.progress.cancel_button.clicked.emit()
    _wait_idle(qtbot, widget)
    assert "Cancelled" in widget.progress.status.value
    assert "segmentation objects" not in widget.viewer.layers and widget.proofreader is None


def test_removing_the_objects_layer_ends_the_session(widget, qtbot):
    _find(widget, qtbot)
    widget.viewer.layers.remove(widget.objects_layer)
    assert widget.proofreader is None and widget.table.model_.rows == 0
    assert not widget.edits.merge_button.enabled


def test_an_autosave_is_opened_again_and_proofread_on(widget, qtbot, tmp_path):
    _find(widget, qtbot)
    widget.edits.autosave_file.value = tmp_path / "objects.tif"
    widget.table.select_labels([int(widget.proofreader.ids[0])])
    widget.edits.delete_button.clicked.emit()
    assert widget.edits.autosave.wait(30)
    saved, count = widget.objects_layer.data.copy(), widget.proofreader.count
    widget.viewer.layers.remove(widget.objects_layer)  # as if the viewer had closed
    widget.edits.autosave_file.value = ""
    widget.objects_file.value = tmp_path / "objects.tif"
    widget.open_objects_file()
    qtbot.waitUntil(lambda: widget.proofreader is not None, timeout=60_000)
    _wait_idle(qtbot, widget)
    layer = widget.viewer.layers["objects"]
    np.testing.assert_array_equal(layer.data, saved)
    np.testing.assert_allclose(layer.scale, widget.viewer.layers["em"].scale)
    assert widget.proofreader.count == count and set(widget.proofreader.table["class"]) == {"mitochondria"}


def test_opening_a_file_that_is_not_labels_says_so(widget, qtbot, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "em.tif", np.zeros((3, 8, 8), np.float32), photometric="minisblack")
    widget.open_objects_file(tmp_path / "em.tif")
    _wait_idle(qtbot, widget)
    assert "not a 2D or 3D label image" in widget.progress.status.value
    assert widget.open_objects_file(tmp_path / "missing.tif") is None
