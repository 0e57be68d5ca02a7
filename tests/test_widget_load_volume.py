"""The "Load EM volume" dock widget in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")


@pytest.fixture
def widget(make_napari_viewer, monkeypatch):
    from napari_cem._widgets import load_volume

    viewer = make_napari_viewer()
    w = load_volume.LoadVolumeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Load EM volume")
    messages = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(load_volume, "notify_error", messages["error"].append)
    monkeypatch.setattr("napari_cem._widgets._jobs.notify_error", messages["error"].append)  # job errors
    monkeypatch.setattr(load_volume, "notify_warning", messages["warning"].append)
    monkeypatch.setattr(load_volume, "notify_info", messages["info"].append)
    w.messages = messages
    return w


def _load_and_wait(qtbot, w, path):
    assert w.load(path) is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=30000)


def test_load_uint16_mrc_adds_scaled_uint8_layer(widget, qtbot, tmp_path):
    import mrcfile

    data = (np.random.default_rng(0).integers(0, 60000, (5, 40, 48))).astype(np.uint16)
    path = tmp_path / "tomo.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (12.0, 12.0, 24.0)  # x, y, z in Angstrom
    _load_and_wait(qtbot, widget, path)
    layer = widget.viewer.layers["tomo"]
    assert layer.data.dtype == np.uint8 and layer.data.shape == (5, 40, 48)
    np.testing.assert_allclose(layer.scale, (2.4, 1.2, 1.2))
    assert layer.metadata["napari_cem"]["original_dtype"] == "uint16"
    assert widget.messages["error"] == []
    assert "Loaded tomo" in widget.progress.status.value


def test_voxel_override_and_invert(widget, qtbot, tmp_path):
    import tifffile

    data = np.tile(np.arange(64, dtype=np.uint8) * 4, (3, 64, 1))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    widget.override_voxel.value = True
    widget.voxel_z.value, widget.voxel_y.value, widget.voxel_x.value = 30.0, 4.0, 4.0
    widget.invert.value = True
    _load_and_wait(qtbot, widget, path)
    layer = widget.viewer.layers["stack"]
    np.testing.assert_allclose(layer.scale, (30.0, 4.0, 4.0))
    np.testing.assert_array_equal(layer.data, 255 - data)


def test_bad_file_gives_plain_error_and_no_layer(widget, qtbot, tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00not really a tiff")
    _load_and_wait(qtbot, widget, path)
    assert len(widget.viewer.layers) == 0
    assert len(widget.messages["error"]) == 1
    assert "Traceback" not in widget.messages["error"][0]
    assert list(tmp_path.iterdir()) == [path]


def test_missing_path_is_refused_before_starting(widget):
    widget.path.line_edit.value = ""
    assert widget.load() is None
    assert widget.messages["error"]


def test_folder_mode_switches_picker(widget):
    widget.source_kind.value = "folder of 2D images"
    assert widget.path.mode.value == "d"


def test_a_channel_choice_names_the_widget_field(widget, qtbot, tmp_path):
    import tifffile

    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(path, np.zeros((4, 3, 32, 32), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
    _load_and_wait(qtbot, widget, path)
    assert "choose Channel C with C in 0-2" in widget.messages["error"][-1]
    assert "channel=" not in widget.messages["error"][-1]
    widget.channel.value = 1
    _load_and_wait(qtbot, widget, path)
    assert widget.viewer.layers["zcyx"].data.shape == (4, 32, 32)


def test_file_open_points_to_the_widget_for_a_channel(tmp_path):
    import tifffile

    from napari_cem._reader import read_layer_data
    from napari_cem.io import VolumeError

    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(path, np.zeros((4, 3, 32, 32), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(VolumeError, match=r"choose Channel \(Plugins > napari-cem > Load EM volume\) C"):
        read_layer_data(str(path))
