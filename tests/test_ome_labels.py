"""OME-Zarr label images: `segment --ome-zarr` writes NGFF 0.5 labels that ome-zarr-py reads
(pyramid, class names, voxel size), inside an OME-Zarr image's labels/ when asked, resumes
like --zarr, and napari opens them as a Labels layer."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_cem.cli import main
from napari_cem.ome_labels import pyramid_factors, read_ome_labels, write_ome_labels


def test_pyramid_halves_xy_and_z_only_when_sections_are_thin():
    assert pyramid_factors((20, 1024, 1024), (45.0, 4.6, 4.6)) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert pyramid_factors((64, 1024, 1024), (8.0, 8.0, 8.0)) == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert pyramid_factors((64, 1024, 1024), None) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert pyramid_factors((300, 300), None) == [(1, 1)]


def _store(tmp_path, labels, name="seg.zarr"):
    group = zarr.open_group(str(tmp_path / name), mode="w")
    arr = group.create_array("labels", shape=labels.shape, chunks=(4, 128, 128), dtype=labels.dtype,
                             dimension_names=tuple("zyx"[-labels.ndim:]))
    arr[...] = labels
    return tmp_path / name


def test_written_label_image_is_read_by_ome_zarr_py(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    labels = np.zeros((8, 600, 520), np.uint8)
    labels[2:6, 100:300, 50:400] = 1
    labels[1:3, 400:500, 400:500] = 2
    path = write_ome_labels(_store(tmp_path, labels), voxel_size=(8.0, 8.0, 8.0),
                            class_names=["background", "mito", "er"])
    node = next(iter(Reader(parse_url(str(path)))()))
    assert any(isinstance(s, Label) for s in node.specs) and any(isinstance(s, Multiscales) for s in node.specs)
    assert len(node.data) == 2
    np.testing.assert_array_equal(np.asarray(node.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(node.data[1]), labels[::2, ::2, ::2])
    assert node.metadata["properties"] == {1: {"class": "mito"}, 2: {"class": "er"}}
    assert set(node.metadata["color"]) == {1, 2}  # a colour per class, as napari-ome-zarr shows them
    levels, scale, names = read_ome_labels(path)
    assert scale == (8.0, 8.0, 8.0) and names == ["background", "mito", "er"]
    ome = dict(zarr.open_group(str(path)).attrs)["ome"]
    assert ome["version"] == "0.5" and ome["multiscales"][0]["axes"][0]["unit"] == "nanometer"
    assert ome["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"] == [16.0, 16.0, 16.0]


def _ome_image(tmp_path, volume):
    from ome_zarr.format import FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    path = tmp_path / "cells.ome.zarr"
    root = zarr.group(store=parse_url(str(path), mode="w", fmt=FormatV05()).store)
    write_image(volume, root, axes="zyx", fmt=FormatV05(), scale={"z": 40.0, "y": 8.0, "x": 8.0},
                scale_factors=[])
    ome = dict(root.attrs)["ome"]  # ome-zarr-py leaves the units out: in nanometres, as EM is
    ome["multiscales"][0]["axes"] = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    root.attrs["ome"] = ome
    return path


def test_segment_into_the_labels_of_an_ome_zarr_image(unet_file, tmp_path, capsys):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((3, 64, 72), isotropic=False, seed=4).image
    image = _ome_image(tmp_path, vol)
    out = image / "labels" / "mito"
    assert main(["segment", str(unet_file), str(image), "-o", str(out), "--ome-zarr"]) == 0
    assert "labels 'mito' of the OME-Zarr image" in capsys.readouterr().out
    nodes = list(Reader(parse_url(str(image)))())
    label_nodes = [n for n in nodes if "Label" in [type(s).__name__ for s in n.specs]]
    assert label_nodes and label_nodes[0].data[0].shape == (3, 64, 72)
    ome = dict(zarr.open_group(str(image / "labels")).attrs)["ome"]
    assert ome["labels"] == ["mito"]
    _levels, scale, names = read_ome_labels(out)
    assert scale == (40.0, 8.0, 8.0) and names == ["background", "mito"]
    # the same command again: the finished store is reused (resume), the label image stays valid
    assert main(["segment", str(unet_file), str(image), "-o", str(out), "--ome-zarr"]) == 0
    assert dict(zarr.open_group(str(image / "labels")).attrs)["ome"]["labels"] == ["mito"]


def test_a_standalone_label_image_opens_in_napari_as_labels(unet_file, tmp_path, make_napari_viewer):
    from napari.layers import Labels

    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((3, 40, 48), isotropic=True, seed=4).image
    tif = tmp_path / "cells.tif"
    tifffile.imwrite(tif, vol, imagej=True, resolution=(1 / 8, 1 / 8),
                     metadata={"axes": "ZYX", "unit": "nm", "spacing": 8.0})
    out = tmp_path / "seg.zarr"
    assert main(["segment", str(unet_file), str(tif), "-o", str(out), "--ome-zarr"]) == 0
    viewer = make_napari_viewer()
    layers = viewer.open(str(out), plugin="napari-cem")
    assert len(layers) == 1 and isinstance(layers[0], Labels)
    np.testing.assert_allclose(layers[0].scale, (8, 8, 8))
    assert layers[0].metadata["napari_cem"]["classes"] == ["background", "mito"]
    np.testing.assert_array_equal(np.asarray(layers[0].data), np.asarray(zarr.open_group(str(out))["labels"]))


def test_napari_saves_a_labels_layer_as_an_ome_zarr_label_image(tmp_path, make_napari_viewer):
    viewer = make_napari_viewer()
    labels = np.zeros((4, 30, 40), np.uint16)
    labels[1:3, 5:20, 5:30] = 2
    layer = viewer.add_labels(labels, name="objects", scale=(40, 8, 8), units=("nm",) * 3,
                              metadata={"napari_cem": {"classes": ["background", "mito", "er"]}})
    (tmp_path / "objects.zarr").mkdir()  # an older save is replaced only by a complete new one
    written = layer.save(str(tmp_path / "objects.zarr"), plugin="napari-cem")
    assert written == [str(tmp_path / "objects.zarr")]
    levels, scale, names = read_ome_labels(tmp_path / "objects.zarr")
    np.testing.assert_array_equal(np.asarray(levels[0]), labels)
    assert scale == (40.0, 8.0, 8.0) and names == ["background", "mito", "er"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_save_refuses_4d_labels(tmp_path):
    from napari_cem.ome_labels import save_ome_labels

    with pytest.raises(ValueError, match="2D or 3D"):
        save_ome_labels(tmp_path / "x.zarr", np.zeros((2, 2, 4, 4), np.uint8))
    assert not list(tmp_path.iterdir())


def test_save_into_an_ome_zarr_image_lists_the_final_name(tmp_path):
    from napari_cem.ome_labels import save_ome_labels

    image = _ome_image(tmp_path, np.zeros((2, 32, 40), np.uint8))
    labels = np.zeros((2, 32, 40), np.uint8)
    labels[:, 4:20, 4:30] = 1
    written = save_ome_labels(image / "labels" / "mito", labels, voxel_size=(40.0, 8.0, 8.0),
                              class_names=["background", "mito"])
    assert written == image / "labels" / "mito"  # no .zarr added inside an image
    assert dict(zarr.open_group(str(image / "labels")).attrs)["ome"]["labels"] == ["mito"]
    assert dict(zarr.open_group(str(written)).attrs)["ome"]["image-label"]["source"] == {"image": "../../"}
    assert [p.name for p in (image / "labels").iterdir() if p.is_dir()] == ["mito"]


def test_cancelled_save_leaves_the_older_label_image(tmp_path):
    from napari_cem._cancel import Cancelled
    from napari_cem.ome_labels import save_ome_labels

    old = np.ones((40, 16, 16), np.uint8)
    save_ome_labels(tmp_path / "seg.zarr", old)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1  # after the first 16 slices

    with pytest.raises(Cancelled):
        save_ome_labels(tmp_path / "seg.zarr", np.zeros((40, 16, 16), np.uint8), should_stop=stop)
    levels, _scale, _names = read_ome_labels(tmp_path / "seg.zarr")
    np.testing.assert_array_equal(np.asarray(levels[0]), old)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.zarr"]


def test_segment_widget_saves_the_corrected_labels_as_ome_zarr(tmp_path, make_napari_viewer, qtbot):
    from types import SimpleNamespace

    import torch

    from napari_cem._widgets._state import state_for
    from napari_cem._widgets.segment import SegmentWidget

    class Dark(torch.nn.Module):
        def forward(self, x):
            return 8 * (0.4 - x)

    vol = (np.arange(3 * 40 * 48).reshape(3, 40, 48) % 251).astype(np.uint8)
    image = _ome_image(tmp_path, vol)
    viewer = make_napari_viewer()
    viewer.add_image(vol, name="em", scale=(40, 8, 8), units=("nm",) * 3)
    viewer.layers["em"]._source = viewer.layers["em"].source.model_copy(update={"path": str(image)})
    widget = SegmentWidget(viewer)
    assert widget.save_labels() is None and not widget.save_button.enabled  # nothing to save yet
    state_for(viewer).set_active_model(SimpleNamespace(model=Dark(), classes=["background", "dark"],
                                                       norms=(0.5, 0.25)))
    widget.run()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert widget.save_button.enabled
    assert str(widget.labels_file.value) == str(image / "labels" / "em_segmentation")
    layer = viewer.layers["em segmentation"]
    layer.data[1, :10, :10] = 0  # a correction before saving
    layer.data[1, 10:20, 10:20] = 1
    expected = np.array(layer.data)
    assert widget.save_labels() is not None
    layer.data[0] = 0  # painting on while the save runs does not reach the file
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "Labels saved as OME-Zarr" in widget.progress.status.value
    levels, scale, names = read_ome_labels(image / "labels" / "em_segmentation")
    np.testing.assert_array_equal(np.asarray(levels[0]), expected)
    assert scale == (40.0, 8.0, 8.0) and names == ["background", "dark"]
    assert dict(zarr.open_group(str(image / "labels")).attrs)["ome"]["labels"] == ["em_segmentation"]
    viewer.layers.remove(layer)
    assert not widget.save_button.enabled
