"""`napari-cem segment` and `napari-cem evaluate`: outputs, round trips and plain errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_cem.cli import main
from napari_cem.model import ModelBundle, build_unet, save_bundle


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "mito.pt"
    save_bundle(ModelBundle(model=build_unet(1), classes=["background", "mito"], norms=(0.5, 0.2),
                            crop_size=64), path)
    return path


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory):
    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((3, 40, 48), isotropic=True, seed=4).image
    path = tmp_path_factory.mktemp("vol") / "cells.tif"
    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / 8, 1 / 8),
                     metadata={"axes": "ZYX", "unit": "nm", "spacing": 8.0})
    return path


def test_segment_to_tiff_then_evaluate(model_file, volume_file, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--probabilities"]) == 0
    printed = capsys.readouterr().out
    assert "3 x 40 x 48 voxels segmented (stack" in printed and "background" in printed
    with tifffile.TiffFile(out) as tif:
        labels = tif.asarray()
        info = json.loads(tif.imagej_metadata["Info"])
        assert tif.imagej_metadata["spacing"] == pytest.approx(8.0)
    assert labels.shape == (3, 40, 48) and labels.dtype == np.uint8 and labels.max() <= 1
    assert info["classes"] == ["background", "mito"] and info["mode"] == "stack"
    prob = tifffile.imread(tmp_path / "labels_prob.tif")
    assert prob.shape == (3, 40, 48) and prob.dtype == np.uint8
    np.testing.assert_array_equal(labels, (prob > 127).astype(np.uint8))
    # evaluate against a hand-edited ground truth: numbers match the metrics core
    gt = labels.copy()
    gt[:, :20] = 1
    gt_path = tmp_path / "gt.tif"
    tifffile.imwrite(gt_path, gt, imagej=True, metadata={"axes": "ZYX"})
    assert main(["evaluate", str(out), str(gt_path)]) == 0
    table = capsys.readouterr().out
    from napari_cem.metrics import evaluate

    expect = evaluate(labels, gt, ["background", "mito"])
    assert "mito" in table  # class names were read back from the prediction
    assert f"{expect.iou_3d[1]:.3f}" in table and f"{expect.iou_2d[1]:.3f}" in table


def test_segment_writes_the_uncertainty_and_names_the_worst_slices(model_file, volume_file, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--probabilities",
                 "--uncertainty"]) == 0
    printed = capsys.readouterr().out
    unsure = tifffile.imread(tmp_path / "labels_uncertainty.tif")
    prob = tifffile.imread(tmp_path / "labels_prob.tif").astype(np.float32)
    assert unsure.shape == (3, 40, 48) and unsure.dtype == np.uint8
    assert np.abs(unsure - (255.0 - np.abs(2 * prob - 255.0))).max() <= 3
    assert "most uncertain slices" in printed and "labels_uncertainty.tif" in printed


def test_segment_cleans_up_small_pieces_and_holes(model_file, volume_file, tmp_path, capsys):
    from napari_cem.cleanup import clean_labels

    out = tmp_path / "labels.tif"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--probabilities"]) == 0
    raw = tifffile.imread(out)
    # 8 nm pixels: 1,280 nm^2 per slice = 20 px
    assert main(["segment", str(model_file), str(volume_file), "-o", str(tmp_path / "clean.tif"),
                 "--min-size", "1280", "--size-unit", "nm", "--fill-holes"]) == 0
    printed = capsys.readouterr().out
    cleaned = tifffile.imread(tmp_path / "clean.tif")
    expect, info = clean_labels(raw, 20, holes=True, per_slice=True)
    np.testing.assert_array_equal(cleaned, expect)
    assert f"{info['removed_voxels']:,} voxels of pieces under 20 voxels removed" in printed
    with tifffile.TiffFile(tmp_path / "clean.tif") as tif:
        assert json.loads(tif.imagej_metadata["Info"])["cleanup"]["per_slice"] is True
    assert main(["segment", str(model_file), str(volume_file), "-o", str(tmp_path / "z.zarr"), "--zarr",
                 "--min-size", "5"]) == 2
    assert "write a TIFF" in capsys.readouterr().err


def test_segment_smooths_across_slices(model_file, volume_file, tmp_path, capsys):
    from napari_cem.smoothing import smooth_across_slices

    out = tmp_path / "labels.tif"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--probabilities"]) == 0
    prob = tifffile.imread(tmp_path / "labels_prob.tif")
    assert main(["segment", str(model_file), str(volume_file), "-o", str(tmp_path / "s.tif"), "--z-smooth"]) == 0
    smoothed = tifffile.imread(tmp_path / "s.tif")
    expect = smooth_across_slices(prob[None].copy())[0] > 127.5
    assert np.mean(smoothed == expect) > 0.999  # (reduced precision may move a few voxels)
    assert main(["segment", str(model_file), str(volume_file), "-o", str(tmp_path / "z.zarr"), "--zarr",
                 "--z-smooth"]) == 2
    assert "cannot be combined with a zarr output" in capsys.readouterr().err


@pytest.mark.slow
def test_segment_to_zarr_orthoplane_and_evaluate_against_tiff(model_file, volume_file, tmp_path, capsys):
    store = tmp_path / "labels.zarr"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(store), "--zarr",
                 "--mode", "orthoplane"]) == 0
    assert "(orthoplane" in capsys.readouterr().out
    from napari_cem.infer import open_segmentation

    seg = open_segmentation(store)
    assert seg.metadata["complete"] and seg.labels.shape == (3, 40, 48)
    assert main(["evaluate", str(store), str(store), "--classes", "bg", "mito"]) == 0
    table = capsys.readouterr().out
    assert "mito" in table and ("1.000" in table or "-" in table.splitlines()[-1])


def test_bad_inputs_are_one_line_errors(model_file, volume_file, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    assert main(["segment", str(junk), str(volume_file), "-o", str(tmp_path / "a.tif")]) == 2
    err = capsys.readouterr().err
    assert "not a weights file napari-cem can load safely" in err and "Traceback" not in err
    assert main(["segment", str(model_file), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "a.tif")]) == 2
    assert "input not found" in capsys.readouterr().err
    image2d = tmp_path / "one.tif"
    tifffile.imwrite(image2d, np.full((40, 40), 128, np.uint8))
    assert main(["segment", str(model_file), str(image2d), "-o", str(tmp_path / "b.tif"),
                 "--mode", "orthoplane"]) == 2
    assert "needs a 3D volume" in capsys.readouterr().err
    assert not (tmp_path / "b.tif").exists()
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((3, 40, 40), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    assert main(["evaluate", str(volume_file), str(other), "--classes", "bg", "fg"]) == 2
    assert "differ in shape" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["stack", "orthoplane"])
def test_evaluate_refuses_an_unfinished_store_unless_partial(model_file, tmp_path, napari_cem, mode):
    """An interrupted `segment --zarr` must not be scored as if it were the whole volume."""
    from napari_cem._cancel import Cancelled
    from napari_cem.infer import finished_slabs, segment
    from napari_cem.model import load_bundle
    from napari_cem.synthetic import make_em_volume

    vol = make_em_volume((8, 64, 64), isotropic=True, seed=1).image
    store = tmp_path / "seg.zarr"
    bundle = load_bundle(model_file)
    full = segment(vol, bundle, mode=mode, precision="float32", slab=2, voxel_size=(8, 8, 8))
    gt = tmp_path / "gt.tif"
    tifffile.imwrite(gt, np.asarray(full.labels), imagej=True, metadata={"axes": "ZYX"})

    def stop_late():  # once two slabs hold final labels, stop (as Ctrl-C or a kill would)
        return (store / "zarr.json").exists() and len(finished_slabs(store)[0]) >= 2

    with pytest.raises(Cancelled):
        segment(vol, bundle, mode=mode, precision="float32", slab=2, out=store, should_stop=stop_late,
                voxel_size=(8, 8, 8))
    ranges, n_slabs = finished_slabs(store)
    assert n_slabs == 4 and 0 < len(ranges) < 4, ranges
    code, out, err = napari_cem("evaluate", store, gt)
    assert code == 2 and "Traceback" not in err
    assert f"segmentation incomplete ({len(ranges)} of 4 slabs): rerun segment to finish it" in err
    code, out, err = napari_cem("evaluate", store, gt, "--partial")
    assert code == 0, err
    assert f"PARTIAL: only the {len(ranges)} finished of 4 slabs, {2 * len(ranges)} slices" in out
    assert "1.000" in out  # the finished slabs equal the full run's labels


def test_segment_estimates_the_threshold_from_held_out_paint(volume_file, tmp_path, capsys):
    torch.manual_seed(0)
    model = save_bundle(ModelBundle(model=build_unet(1), classes=["background", "mito"], norms=(0.5, 0.2),
                                    training={"painted_slices": [0], "label_values": {"1": 1},
                                              "complete_slices": True}), tmp_path / "m.pt")
    paint = np.zeros((3, 40, 48), np.uint8)
    paint[:, :20] = 1  # slices 1 and 2 are held out: 1,920 structure and 1,920 background pixels
    tifffile.imwrite(tmp_path / "paint.tif", paint, photometric="minisblack")
    out = tmp_path / "labels.tif"
    assert main(["segment", str(model), str(volume_file), "-o", str(out), "--threshold-from",
                 str(tmp_path / "paint.tif")]) == 0
    printed = capsys.readouterr().out
    assert "estimated on 3,840 painted pixels of slices 1, 2 (not trained on)" in printed
    with tifffile.TiffFile(out) as tif:
        used = json.loads(tif.imagej_metadata["Info"])["threshold"]
    assert f"threshold {used:.2f} estimated" in printed
    paint[1:] = 0  # nothing held out: a one-line error, nothing written
    tifffile.imwrite(tmp_path / "paint.tif", paint, photometric="minisblack")
    assert main(["segment", str(model), str(volume_file), "-o", str(tmp_path / "none.tif"), "--threshold-from",
                 str(tmp_path / "paint.tif")]) == 2
    assert "No painted slice is held out" in capsys.readouterr().err and not (tmp_path / "none.tif").exists()


def test_segment_precision_reaches_the_core(model_file, volume_file, tmp_path):
    out = tmp_path / "labels.tif"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--precision", "float32"]) == 0
    with tifffile.TiffFile(out) as tif:
        assert json.loads(tif.imagej_metadata["Info"])["precision"] == "float32"
    assert main(["segment", str(model_file), str(volume_file), "-o", str(out), "--precision", "half"]) == 2
