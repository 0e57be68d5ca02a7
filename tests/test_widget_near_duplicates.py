"""The "Near-duplicates" dock widget in a real viewer: run, overlay, gallery click, slider, export."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem._widgets.near_duplicates import NearDuplicatesWidget
from napari_cem.export import read_manifest
from napari_cem.synthetic import make_em_volume


@pytest.fixture(scope="module")
def volume():
    return make_em_volume((48, 192, 192), isotropic=True, seed=2).image


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget._worker is None and not widget.regrouping.running, timeout=timeout)


@pytest.fixture()
def widget(make_napari_viewer, volume, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="em", scale=(8, 8, 8), units=("nm",) * 3,
                     metadata={"napari_cem": {"voxel_size": [8.0, 8.0, 8.0]}})
    w = NearDuplicatesWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.patch_size.value = 64
    return w


def test_run_shows_overlay_counts_and_gallery(widget, qtbot):
    viewer = widget.viewer
    assert widget.image.value is viewer.layers["em"]
    widget.run()
    _wait_idle(qtbot, widget)
    res = widget.result
    assert res is not None and res.params["planes"] == ["xy", "xz", "yz"]
    assert f"{res.n_patches:,} patches" in widget.counts.value
    assert "% removed" in widget.counts.value
    assert widget.progress.status.value.startswith("em:")
    # the overlay holds exactly the patches of the slice on screen (xy, middle slice)
    overlay = widget._overlay
    assert overlay is not None and overlay in viewer.layers
    plane, index = widget.current_plane_slice()
    assert plane == "xy" and index == int(round(viewer.dims.point[0] / 8))
    assert overlay.nshapes == len(res.rows_on_slice("xy", index)) == 9
    assert set(overlay.features["exemplar"]) <= {True, False}
    # the gallery lists the largest groups, exemplar first
    assert widget.gallery.count() > 0
    first = widget.gallery.item(0)
    assert first.text().startswith("★")


def test_gallery_click_moves_viewer_to_the_patch(widget, qtbot):
    from qtpy.QtCore import Qt

    widget.run()
    _wait_idle(qtbot, widget)
    res = widget.result
    # pick a gallery patch in an xz plane if there is one, else any
    items = [widget.gallery.item(i) for i in range(widget.gallery.count())]
    rows = [int(it.data(Qt.ItemDataRole.UserRole)) for it in items]
    planes = [str(res.provenance[r]["plane"]) for r in rows]
    k = planes.index("xz") if "xz" in planes else len(items) - 1
    widget.gallery.itemClicked.emit(items[k])
    p = res.provenance[rows[k]]
    plane = str(p["plane"])
    assert widget.current_plane_slice() == (plane, int(p["slice"]))
    viewer = widget.viewer
    if plane == "xz":
        assert tuple(viewer.dims.order) == (1, 0, 2)
        centre = np.array([p["y"] + (p["height"] - 1) / 2, p["x"] + (p["width"] - 1) / 2]) * 8
        from napari_cem._widgets._layers import camera_of

        np.testing.assert_allclose(camera_of(viewer).center[-2:], centre, atol=1e-6)
    # the overlay follows: the clicked patch is on screen
    assert widget._overlay.nshapes == len(res.rows_on_slice(plane, int(p["slice"])))


def test_cutoff_slider_regroups_without_rehashing(widget, qtbot):
    widget.run()
    _wait_idle(qtbot, widget)
    first = widget.result
    widget.cutoff.value = 0
    qtbot.waitUntil(lambda: widget.result.params["cutoff"] == 0, timeout=20_000)
    _wait_idle(qtbot, widget)
    assert widget.result.hashes is first.hashes
    assert widget.result.n_groups >= first.n_groups
    assert "(cutoff 0)" in widget.counts.value


def test_export_writes_manifest(widget, qtbot, tmp_path):
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.export_button.enabled
    widget.export(tmp_path)
    _wait_idle(qtbot, widget)
    rows = read_manifest(tmp_path)
    assert len(rows) == widget.result.n_patches
    assert len(list((tmp_path / "patches").glob("*.tif"))) == widget.result.n_kept
    assert "Exported" in widget.progress.status.value


def test_cancel_keeps_previous_state(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    big = np.random.default_rng(0).integers(0, 255, (400, 512, 512), dtype=np.uint8)
    viewer.add_image(big, name="big")
    w = NearDuplicatesWidget(viewer)
    w.patch_size.value = 32
    w.run()
    w.cancel()
    _wait_idle(qtbot, w)
    assert w.result is None
    assert "Cancelled" in w.progress.status.value
    assert w.run_button.enabled


def test_float_layer_is_standardised_and_2d_works(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img = make_em_volume((200, 200), seed=1).image.astype(np.float32) / 255.0
    viewer.add_image(img, name="float image")
    w = NearDuplicatesWidget(viewer)
    w.patch_size.value = 64
    w.run()
    _wait_idle(qtbot, w)
    assert w.result is not None and w.result.params["planes"] == ["xy"]
    assert w._overlay.nshapes == w.result.n_patches == 9


def test_errors_are_notifications_not_crashes(make_napari_viewer, qtbot, monkeypatch):
    import napari_cem._widgets.near_duplicates as nd

    messages = []
    monkeypatch.setattr(nd, "notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    viewer = make_napari_viewer()
    w = NearDuplicatesWidget(viewer)
    assert w.run() is None and "Open an EM image" in messages[-1]
    viewer.add_image(np.zeros((2, 40, 40), np.uint8), name="tiny")
    w.run()
    _wait_idle(qtbot, w)
    assert "smaller than half a patch" in messages[-1]
    assert w.result is None and w.run_button.enabled
    assert w.export() is None and "Run 'Find near-duplicates' first" in messages[-1]


def test_export_to_an_unwritable_folder_is_refused_before_writing(widget, qtbot, readonly_dir, monkeypatch):
    messages = []
    monkeypatch.setattr("napari_cem._widgets.near_duplicates.notify_error", messages.append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages.append)  # job errors
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.export(readonly_dir / "curated") is None
    assert "cannot write to the export folder" in messages[-1] and widget._worker is None
