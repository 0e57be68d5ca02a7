"""`napari-cem instances` and `evaluate --instances`: outputs, the table, plain errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cem.cli import main
from napari_cem.io.labels import write_labels_tiff


@pytest.fixture
def segmentation(tmp_path):
    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((12, 128, 128), isotropic=False, seed=0)
    path = tmp_path / "seg.tif"
    write_labels_tiff(path, vol.labels, vol.voxel_size, {"classes": list(vol.class_names)})
    img = tmp_path / "em.tif"
    tifffile.imwrite(img, vol.image)
    truth = tmp_path / "truth.tif"
    tifffile.imwrite(truth, vol.mito_instances.astype(np.uint16))
    return path, img, truth, vol


def test_instances_tiff_csv_and_scores(segmentation, tmp_path, capsys):
    seg, img, truth, vol = segmentation
    out = tmp_path / "mito.tif"
    assert main(["instances", str(seg), "-o", str(out), "--class", "mitochondria", "--image", str(img)]) == 0
    printed = capsys.readouterr().out
    assert "objects (3D; 6-connected" in printed
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint16 and labels.max() > 0
    lines = (tmp_path / "mito.csv").read_text().splitlines()
    assert lines[0].startswith("label,class,voxels,volume_nm3")
    assert len(lines) == labels.max() + 1 and ",mitochondria," in lines[1]
    assert "intensity_mean" in lines[0]
    assert main(["evaluate", str(out), str(truth), "--instances"]) == 0
    printed = capsys.readouterr().out
    assert "panoptic quality" in printed and "IoU >=" in printed


def test_instances_zarr_equals_tiff(segmentation, tmp_path):
    from napari_cem.instances_slabs import open_instances

    seg, *_ = segmentation
    assert main(["instances", str(seg), "-o", str(tmp_path / "a.tif"), "--class", "mitochondria"]) == 0
    assert main(["instances", str(seg), "-o", str(tmp_path / "a.zarr"), "--class", "mitochondria",
                 "--slab", "4"]) == 0
    np.testing.assert_array_equal(np.asarray(open_instances(tmp_path / "a.zarr").labels[:]),
                                  tifffile.imread(tmp_path / "a.tif"))
    # the table of the zarr result is measured slab by slab: the same as the TIFF's
    assert (tmp_path / "a.zarr").with_suffix(".csv").read_text() == (tmp_path / "a.csv").read_text()


def test_instances_bad_input(segmentation, tmp_path, capsys):
    seg, *_ = segmentation
    assert main(["instances", str(seg), "-o", str(tmp_path / "x.tif"), "--class", "golgi"]) == 2
    assert "class 'golgi' is not in the segmentation; the classes are: membrane" in capsys.readouterr().err
    assert main(["instances", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "x.tif")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["instances", str(seg), "-o", str(tmp_path / "x.zarr"), "--split"]) == 2
    assert "in memory" in capsys.readouterr().err
    empty = tmp_path / "empty.tif"
    write_labels_tiff(empty, np.zeros((2, 8, 8), np.uint8), None, {"classes": ["background", "mito"]})
    assert main(["instances", str(empty), "-o", str(tmp_path / "e.tif")]) == 0
    captured = capsys.readouterr()
    assert "No objects" in captured.out and "table is empty" in captured.err
    assert (tmp_path / "e.csv").read_text().startswith("label,")
