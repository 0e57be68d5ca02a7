"""Proofreading edits: each one changes only what it says, keeps the table equal to measuring
the whole volume again, and is undone exactly; the autosave writes what was edited."""

import numpy as np
import pytest

from napari_cem.autosave import Autosave
from napari_cem.measurements import measure_objects
from napari_cem.proofread import Proofreader


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def _volume():
    """1, 2: touching boxes; 3: a dumbbell (two balls joined by a thin neck); 4: a ring per
    slice (a hole to fill) of class 2."""
    labels = np.zeros((20, 60, 90), np.uint16)
    labels[2:8, 5:15, 5:15] = 1
    labels[2:8, 5:15, 15:25] = 2
    dumbbell = _ball(labels.shape, (10, 40, 20), 7) | _ball(labels.shape, (10, 40, 44), 7)
    dumbbell[9:12, 39:42, 20:44] = True
    labels[dumbbell] = 3
    labels[12:16, 10:30, 50:70] = 4
    labels[12:16, 15:25, 55:65] = 0
    classes = np.array([0, 1, 1, 1, 2])
    return labels, classes


def _reader(labels=None, classes=None, voxel=(40.0, 8.0, 8.0), image=True):
    if labels is None:
        labels, classes = _volume()
    em = (np.arange(labels.size) % 251).reshape(labels.shape).astype(np.uint8) if image else None
    return Proofreader(labels, object_class=classes, class_names=["background", "mito", "vesicle"],
                       voxel_size=voxel, image=em)


def _assert_table_true(p):
    full = measure_objects(p.labels, image=p.image, voxel_size=p.voxel_size, object_class=p.object_class if p.has_classes else None,
                           class_names=p.class_names)
    assert list(full) == list(p.table)
    for key in full:
        if full[key].dtype == object:
            assert list(full[key]) == list(p.table[key]), key
        else:
            np.testing.assert_allclose(p.table[key], full[key], rtol=1e-9, err_msg=key)


def _assert_undone(p, labels, table):
    assert p.undo() is not None
    np.testing.assert_array_equal(p.labels, labels)
    assert p.table is table
    _assert_table_true(p)


def test_merge_joins_objects_and_undo_restores_them():
    p = _reader()
    labels, table = p.labels.copy(), p.table
    edit = p.merge([2, 1])
    assert edit.changed == [1, 2]
    assert set(np.unique(p.labels[2:8, 5:15, 5:25])) == {1}
    assert list(p.ids) == [1, 3, 4]
    assert p.box_of(1) == (slice(2, 8), slice(5, 15), slice(5, 25))
    _assert_table_true(p)
    _assert_undone(p, labels, table)


def test_merge_refuses_objects_of_different_classes_and_unknown_ids():
    p = _reader()
    with pytest.raises(ValueError, match="different classes"):
        p.merge([1, 4])
    with pytest.raises(ValueError, match="no object 9"):
        p.merge([1, 9])
    with pytest.raises(ValueError, match="at least 2"):
        p.merge([1])
    assert p.history == []


def test_split_cuts_the_dumbbell_at_its_neck():
    p = _reader()
    labels, table = p.labels.copy(), p.table
    edit = p.split(3, [(10, 40, 20), (10, 40, 44)])
    assert edit.changed == [3, 5]
    left, right = (p.labels == 3), (p.labels == 5)
    assert left[10, 40, 20] and right[10, 40, 44]
    assert (left | right).sum() == (labels == 3).sum()
    assert abs(int(left.sum()) - int(right.sum())) < 0.1 * left.sum()
    assert p.object_class[5] == p.object_class[3]
    _assert_table_true(p)
    _assert_undone(p, labels, table)
    assert p.next_id == 5  # undone: the split's new id is free again


def test_split_points_must_lie_on_the_object():
    p = _reader()
    with pytest.raises(ValueError, match="Point 2 is not inside object 3"):
        p.split(3, [(10, 40, 20), (0, 0, 0)])
    with pytest.raises(ValueError, match="at least two points"):
        p.split(3, [(10, 40, 20), (10, 40, 20)])


def test_split_refuses_when_the_dtype_has_no_free_id():
    labels = np.zeros((4, 20, 20), np.uint8)
    labels[1:3, 2:18, 2:18] = 255
    p = Proofreader(labels)
    with pytest.raises(ValueError, match="relabel consecutively first"):
        p.split(255, [(1, 3, 3), (1, 16, 16)])


def test_delete_fill_dilate_erode_each_undone():
    p = _reader()
    labels, table = p.labels.copy(), p.table
    p.delete([2])
    assert not (p.labels == 2).any() and list(p.ids) == [1, 3, 4]
    _assert_table_true(p)
    _assert_undone(p, labels, table)

    p.fill_holes(4)
    assert (p.labels[12:16, 15:25, 55:65] == 4).all()
    _assert_table_true(p)
    _assert_undone(p, labels, table)
    assert p.fill_holes(1) is None  # no holes: nothing changed, nothing to undo
    assert p.history == []

    p.dilate(4)  # 40 nm sections over 8 nm pixels: in xy only, and never over object 1/2
    grown = p.labels == 4
    assert grown.sum() > (labels == 4).sum()
    assert not grown[11].any() and not grown[16].any()
    _assert_table_true(p)
    _assert_undone(p, labels, table)

    p.erode(4)
    assert (p.labels == 4).sum() < (labels == 4).sum()
    _assert_table_true(p)
    _assert_undone(p, labels, table)


def test_dilate_is_3d_for_isotropic_voxels():
    labels = np.zeros((9, 9, 9), np.uint16)
    labels[4, 4, 4] = 1
    p = Proofreader(labels, voxel_size=(8, 8, 8))
    p.dilate(1)
    assert (p.labels == 1).sum() == 7


def test_erode_refuses_to_remove_an_object():
    labels = np.zeros((3, 9, 9), np.uint16)
    labels[1, 4, 2:7] = 1
    p = Proofreader(labels)
    with pytest.raises(ValueError, match="too thin to erode"):
        p.erode(1)
    assert (p.labels == 1).sum() == 5


def test_relabel_closes_gaps_and_undo_restores_ids():
    p = _reader()
    labels = p.labels.copy()
    p.delete([2])
    after_delete, table = p.labels.copy(), p.table
    p.relabel()
    assert list(p.ids) == [1, 2, 3]
    assert set(np.unique(p.labels)) == {0, 1, 2, 3}
    assert p.object_class[3] == 2  # old object 4, of class 2
    _assert_table_true(p)
    assert p.relabel() is None  # already consecutive
    _assert_undone(p, after_delete, table)
    p.undo()
    np.testing.assert_array_equal(p.labels, labels)


def test_painted_strokes_keep_the_table_true():
    p = _reader()
    indices = (np.array([5, 5, 5]), np.array([30, 30, 31]), np.array([60, 61, 60]))
    old = p.labels[indices].copy()
    p.labels[indices] = 7  # what napari's brush did, painting a new label 7
    edit = p.painted([(indices, old, 7)])
    assert edit.changed == [7]
    assert 7 in p.ids and p.next_id == 8
    _assert_table_true(p)
    assert p.history == []


def test_a_2d_image_is_proofread_too():
    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:35] = 1
    p = Proofreader(labels, voxel_size=(8, 8))
    p.split(1, [(10, 8), (10, 30)])
    assert list(p.ids) == [1, 2]
    assert "solidity" in p.table
    _assert_table_true(p)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="integer labels"):
        Proofreader(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        Proofreader(np.zeros((4, 4), np.uint16), image=np.zeros((5, 4)))


def test_autosave_writes_labels_and_table_after_each_edit(tmp_path):
    import tifffile

    from napari_cem.io.labels import saved_info

    p = _reader()
    saver = Autosave(p, tmp_path / "objects.tif", info={"source": "test"})
    p.on_change.append(lambda _edit: saver.request())
    p.merge([1, 2])
    p.split(3, [(10, 40, 20), (10, 40, 44)])
    assert saver.wait(30)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "objects.tif"), p.labels)
    assert (tmp_path / "objects.csv").read_text() == p.csv()
    info = saved_info(tmp_path / "objects.tif")
    assert info["source"] == "test" and info["object_class"] == p.object_class.tolist()
    p.undo()
    assert saver.wait(30)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "objects.tif"), p.labels)
    saver.close()


def test_autosave_failure_is_reported_and_keeps_the_last_file(tmp_path):
    import tifffile

    p = _reader()
    errors = []
    target = tmp_path / "objects.tif"
    saver = Autosave(p, target, on_error=errors.append)
    saver.request()
    assert saver.wait(30) and saver.saved == 1
    saved = tifffile.imread(target)
    blocker = tmp_path / "objects.csv"
    blocker.unlink()
    blocker.mkdir()  # the table's path is now a folder: the next save fails
    p.delete([1])
    saver.request()
    assert saver.wait(30)
    assert errors and "Autosave to" in errors[0]
    np.testing.assert_array_equal(tifffile.imread(target), saved)
    saver.close()
