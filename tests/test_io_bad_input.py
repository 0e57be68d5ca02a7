"""Broken, odd or ambiguous input gives a VolumeError a biologist can act on.

Why: the viewer and the CLI show these messages without a traceback, so each one must
say what is wrong in plain words; and a damaged file must never load as a silently
shorter or zero-filled volume.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_cem.io import VolumeError, detect_format, read_volume, standardize


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_volume_error_is_a_value_error():
    assert issubclass(VolumeError, ValueError)


def test_missing_path(tmp_path):
    with pytest.raises(VolumeError, match="Nothing found at"):
        read_volume(tmp_path / "nope.tif")
    with pytest.raises(VolumeError, match="No file or folder was chosen"):
        read_volume("")


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_text("hello")
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    message = str(err.value)
    assert "notes.docx" in message and ".docx" in message
    assert ".tif" in message and ".mrc" in message and ".nii.gz" in message
    with pytest.raises(VolumeError):
        detect_format(path)


def test_garbage_bytes_with_tif_suffix(tmp_path):
    path = tmp_path / "garbage.tif"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(VolumeError, match="garbage.tif"):
        read_volume(path)


@pytest.mark.parametrize("kind", ["plain", "imagej", "zlib", "ome"])
def test_tiff_cut_in_half(tmp_path, kind):
    import tifffile

    data = np.random.default_rng(0).integers(0, 60000, (8, 64, 64), dtype=np.uint16)
    full = tmp_path / "full.tif"
    kwargs = {"plain": {"photometric": "minisblack"}, "imagej": {"imagej": True},
              "zlib": {"compression": "zlib", "photometric": "minisblack"},
              "ome": {"ome": True}}[kind]
    tifffile.imwrite(full, data, **kwargs)
    half = tmp_path / "half.tif"
    content = full.read_bytes()
    half.write_bytes(content[: len(content) // 2])
    with pytest.raises(VolumeError, match="half.tif"):
        read_volume(half)


def test_mrc_cut_in_half_and_too_short(tmp_path):
    import mrcfile

    path = tmp_path / "full.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((6, 32, 32), np.float32))
    content = path.read_bytes()
    (tmp_path / "half.mrc").write_bytes(content[: len(content) // 2])
    with pytest.raises(VolumeError, match="damaged or incomplete"):
        read_volume(tmp_path / "half.mrc")
    (tmp_path / "tiny.rec").write_bytes(content[:300])
    with pytest.raises(VolumeError, match="too short"):
        read_volume(tmp_path / "tiny.rec")


def test_nifti_cut_in_half(tmp_path):
    import nibabel as nib

    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)), path)
    content = path.read_bytes()
    (tmp_path / "half.nii.gz").write_bytes(content[: len(content) // 2])
    with pytest.raises(VolumeError, match="half.nii.gz"):
        read_volume(tmp_path / "half.nii.gz")


def test_garbage_video(tmp_path):
    path = tmp_path / "movie.mp4"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(VolumeError, match="movie.mp4"):
        read_volume(path)


def test_empty_folder_and_folder_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(VolumeError, match="is empty"):
        read_volume(empty)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "readme.txt").write_text("x")
    with pytest.raises(VolumeError, match="contains no images.*readme.txt"):
        read_volume(docs)


def test_glob_without_matches(tmp_path):
    with pytest.raises(VolumeError, match="No image files match"):
        read_volume(str(tmp_path / "*.png"))


def test_folder_with_images_of_different_sizes(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a1.png", np.zeros((64, 64), np.uint8))
    iio.imwrite(tmp_path / "a2.png", np.zeros((64, 64), np.uint8))
    iio.imwrite(tmp_path / "a3.png", np.zeros((48, 32), np.uint8))
    with pytest.raises(VolumeError) as err:
        read_volume(tmp_path)
    message = str(err.value)
    assert "a1.png" in message and "64 x 64" in message
    assert "a3.png" in message and "32 x 48" in message


def test_folder_with_a_damaged_image_names_it(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "s1.png", np.zeros((16, 16), np.uint8))
    (tmp_path / "s2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50))
    with pytest.raises(VolumeError, match="s2.png"):
        read_volume(tmp_path)


def test_folder_with_a_multipage_tiff(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 16, 16), np.uint8),
                     photometric="minisblack")
    with pytest.raises(VolumeError, match="not a 2D image"):
        read_volume(tmp_path)


def _hyperstack(tmp_path):
    import tifffile

    path = tmp_path / "hyper.tif"
    data = np.zeros((5, 3, 2, 16, 16), np.uint16)  # T Z C Y X
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    return path


def test_time_and_channel_must_be_chosen(tmp_path):
    path = _hyperstack(tmp_path)
    with pytest.raises(VolumeError) as err:
        read_volume(path)
    message = str(err.value)
    assert "time axis of 5 points" in message and "channel axis of 2" in message
    assert "timepoint=T with T in 0-4" in message and "channel=C with C in 0-1" in message
    with pytest.raises(VolumeError, match=r"channel=C with C in 0-1") as err:
        read_volume(path, timepoint=0)
    assert "timepoint" not in str(err.value)
    arr, meta = read_volume(path, timepoint=4, channel=0)
    assert arr.shape == (3, 16, 16)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"timepoint": 5, "channel": 0}, r"timepoint=5 is out of range.*5 time points, numbered 0-4"),
    ({"timepoint": 0, "channel": 2}, r"channel=2 is out of range.*2 channels, numbered 0-1"),
    ({"timepoint": -1, "channel": 0}, r"timepoint=-1 is out of range"),
])
def test_index_out_of_range(tmp_path, kwargs, pattern):
    with pytest.raises(VolumeError, match=pattern):
        read_volume(_hyperstack(tmp_path), **kwargs)


def test_index_for_axis_the_file_does_not_have(tmp_path):
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(VolumeError, match="no time axis"):
        read_volume(path, timepoint=0)
    with pytest.raises(VolumeError, match="no channel axis"):
        read_volume(path, channel=1)


def test_ome_zarr_5d_and_level_out_of_range(tmp_path):
    import zarr

    path = tmp_path / "five.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=(2, 3, 4, 16, 16), dtype="uint16", chunks=(1, 1, 4, 16, 16))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": n, "type": t} for n, t in
        (("t", "time"), ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space"))],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1, 1, 1]}]}]}]
    with pytest.raises(VolumeError, match=r"timepoint=T with T in 0-1 and channel=C with C in 0-2"):
        read_volume(path)
    arr, meta = read_volume(path, timepoint=1, channel=2)
    assert arr.shape == (4, 16, 16) and meta.lazy
    with pytest.raises(VolumeError, match="level=3 is out of range.*levels 0-0"):
        read_volume(path, level=3, timepoint=0, channel=0)


def test_zarr_group_with_several_arrays(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "many.zarr"), mode="w")
    group.create_array("raw", shape=(4, 8, 8), dtype="uint8")
    group.create_array("labels", shape=(4, 8, 8), dtype="uint8")
    with pytest.raises(VolumeError, match="several arrays.*labels, raw"):
        read_volume(tmp_path / "many.zarr")


def test_one_pixel_and_empty_images(tmp_path):
    import imageio.v3 as iio
    import tifffile
    import zarr

    iio.imwrite(tmp_path / "dot.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(VolumeError, match="too small"):
        read_volume(tmp_path / "dot.png")
    tifffile.imwrite(tmp_path / "line.tif", np.zeros((1, 50), np.uint16))
    with pytest.raises(VolumeError, match="too small"):
        read_volume(tmp_path / "line.tif")
    zarr.open_array(str(tmp_path / "empty.zarr"), mode="w", shape=(0, 8, 8), dtype="uint8")
    with pytest.raises(VolumeError, match="empty"):
        read_volume(tmp_path / "empty.zarr")


def test_nan_image(tmp_path):
    import tifffile

    data = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    data[1, :4] = np.nan
    tifffile.imwrite(tmp_path / "some_nan.tif", data, photometric="minisblack")
    arr, meta = read_volume(tmp_path / "some_nan.tif")
    assert (arr[1, :4] == 0).all() and arr.dtype == np.uint8
    assert any("NaN" in w and "64" in w for w in meta.warnings)
    tifffile.imwrite(tmp_path / "all_nan.tif", np.full((3, 16, 16), np.nan, np.float32),
                     photometric="minisblack")
    with pytest.raises(VolumeError, match="NaN"):
        read_volume(tmp_path / "all_nan.tif")


def test_bad_options(tmp_path):
    import tifffile

    path = tmp_path / "ok.tif"
    tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(VolumeError, match="needs 3 numbers"):
        read_volume(path, voxel_size=(4.0, 4.0))
    with pytest.raises(VolumeError, match="positive"):
        read_volume(path, voxel_size=(0, 4.0, 4.0))
    with pytest.raises(VolumeError, match="Unknown standardisation"):
        read_volume(path, standardize_mode="auto")
    with pytest.raises(VolumeError, match="level must be 0 or more"):
        read_volume(path, level=-1)
    with pytest.raises(VolumeError, match="Percentiles"):
        read_volume(path, percentiles=(50,))
    with pytest.raises(VolumeError, match="empty"):
        standardize(np.zeros((0, 0), np.float32))


def test_reading_never_writes(tmp_path):
    import mrcfile
    import tifffile
    import zarr

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 16, 16), np.uint16),
                     photometric="minisblack")
    with mrcfile.new(tmp_path / "b.mrc") as mrc:
        mrc.set_data(np.ones((3, 16, 16), np.int16))
    z = zarr.open_array(str(tmp_path / "c.zarr"), mode="w", shape=(3, 16, 16), dtype="uint16",
                        chunks=(1, 8, 8))
    z[:] = 5
    before = _snapshot(tmp_path)
    for name in ("a.tif", "b.mrc", "c.zarr"):
        arr, _ = read_volume(tmp_path / name, invert=True)
        np.asarray(arr)
    read_volume(tmp_path / "b.mrc", standardize_mode="none", lazy=True)
    assert _snapshot(tmp_path) == before


def test_imagej_stack_saved_without_axes_is_read_as_z(tmp_path):
    """tifffile declares such a file 'channels=N, axes CYX'; with N far above any real
    channel count and no z axis, it is a z-stack (the 165 x 768 x 1024 labels report)."""
    import tifffile

    path = tmp_path / "labels.tif"
    labels = np.random.default_rng(0).integers(0, 3, (20, 48, 64), dtype=np.uint8)
    tifffile.imwrite(path, labels, imagej=True)
    data, meta = read_volume(path, standardize_mode="none")
    assert data.shape == (20, 48, 64) and meta.axes == "zyx"
    np.testing.assert_array_equal(data, labels)
    assert any("read as a z-stack of 20 slices" in w for w in meta.warnings)
    few = tmp_path / "two.tif"  # a real 2-channel image still asks for a channel
    tifffile.imwrite(few, labels[:2], imagej=True)
    with pytest.raises(VolumeError, match="channel axis of 2"):
        read_volume(few)
