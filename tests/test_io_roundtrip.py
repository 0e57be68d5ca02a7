"""Every format written with its own library, read back through read_volume.

Why: a reader that gets the axes order, the dtype or the voxel unit wrong produces a
plausible-looking but wrong volume; these pin values, axes and voxel size per format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_cem.io import SUPPORTED_SUFFIXES, VolumeMeta, detect_format, read_volume

VNC = Path(__file__).parents[1].parent / "shared" / "data" / "vnc"
RNG = np.random.default_rng(1)


def _volume(dtype, shape=(4, 16, 20)):
    """A ramp plus noise, so values are distinct and the order of axes matters."""
    z, y, x = np.indices(shape)
    base = z * 1000 + y * 37 + x * 3
    if np.dtype(dtype).kind == "f":
        return (base / base.max()).astype(dtype)
    info = np.iinfo(dtype)
    span = min(info.max, 30000) - max(info.min, -30000)
    vals = max(info.min, -30000) + base * span // base.max()
    return vals.astype(dtype)


def _monotone(raw, out):
    """Standardised values never reverse the order of the raw values."""
    order = np.argsort(raw.ravel(), kind="stable")
    return bool(np.all(np.diff(out.ravel()[order].astype(int)) >= 0))


def _check_percentile(raw, path, **kw):
    arr, meta = read_volume(path, **kw)
    assert arr.dtype == np.uint8
    assert arr.shape == raw.shape
    assert _monotone(raw, arr)
    assert arr.min() == 0 and arr.max() == 255
    return arr, meta


# --------------------------------------------------------------------------------------
# TIFF


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_imagej_tiff_values_axes_voxel(tmp_path, dtype):
    import tifffile

    raw = _volume(dtype)
    path = tmp_path / f"stack_{dtype}.tif"
    tifffile.imwrite(path, raw, imagej=True, resolution=(1 / 0.0046, 1 / 0.0046),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    arr, meta = read_volume(path, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert arr.dtype == raw.dtype
    assert meta.axes == "zyx" and meta.format == "tiff"
    assert meta.voxel_size == pytest.approx((50.0, 4.6, 4.6))
    assert meta.scale == pytest.approx((50.0, 4.6, 4.6))
    assert meta.original_dtype == dtype
    assert meta.value_range == (float(raw.min()), float(raw.max()))

    arr8, meta8 = read_volume(path)
    if dtype == "uint8":
        np.testing.assert_array_equal(arr8, raw)  # uint8 is never rescaled
    else:
        assert arr8.dtype == np.uint8 and _monotone(raw, arr8)
    assert meta8.window is not None and meta8.percentiles == (0.5, 99.5)


def test_imagej_hyperstack_pick_time_and_channel(tmp_path):
    import tifffile

    raw = RNG.integers(0, 4000, size=(3, 5, 2, 12, 14), dtype=np.uint16)  # TZCYX
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, raw, imagej=True, metadata={"axes": "TZCYX"})
    arr, meta = read_volume(path, timepoint=2, channel=1, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw[2, :, 1])
    assert meta.axes == "zyx" and meta.timepoint == 2 and meta.channel == 1


def test_ome_tiff_physical_size_units(tmp_path):
    import tifffile

    raw = _volume("float32")
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, raw, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 8.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 8.0, "PhysicalSizeYUnit": "nm",
        "PhysicalSizeZ": 0.02, "PhysicalSizeZUnit": "µm"})
    assert detect_format(path) == "ome-tiff"
    arr, meta = read_volume(path, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert meta.format == "ome-tiff" and meta.source == "cells"
    assert meta.voxel_size == pytest.approx((20.0, 8.0, 8.0))
    _check_percentile(raw, path)


def test_ome_tiff_default_unit_is_micrometre(tmp_path):
    import tifffile

    path = tmp_path / "um.ome.tif"
    tifffile.imwrite(path, _volume("uint16"), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.01, "PhysicalSizeY": 0.01,
                               "PhysicalSizeZ": 0.03})
    _, meta = read_volume(path)
    assert meta.voxel_size == pytest.approx((30.0, 10.0, 10.0))


def test_plain_tiff_without_calibration(tmp_path):
    import tifffile

    raw = _volume("int16")
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, raw, photometric="minisblack")  # axis Q; it must become z
    arr, meta = read_volume(path, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert meta.voxel_size is None and meta.scale == (1.0, 1.0, 1.0)
    _check_percentile(raw, path)


def test_tiff_resolution_tags_in_cm_and_print_dpi(tmp_path):
    import tifffile

    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, _volume("uint8")[0], resolution=(1e7 / 4.6, 1e7 / 4.6),
                     resolutionunit="CENTIMETER")
    arr, meta = read_volume(cm)
    assert arr.ndim == 2 and meta.axes == "yx"
    assert meta.voxel_size == pytest.approx((4.6, 4.6))

    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, _volume("uint8")[0], resolution=(72, 72), resolutionunit="INCH")
    _, meta = read_volume(dpi)
    assert meta.voxel_size is None and any("dpi" in w for w in meta.warnings)


def test_xy_known_z_unknown_leaves_voxel_unknown_with_warning(tmp_path):
    import tifffile

    path = tmp_path / "noz.tif"
    tifffile.imwrite(path, _volume("uint8"), imagej=True, resolution=(1 / 0.005, 1 / 0.005),
                     metadata={"unit": "um", "axes": "ZYX"})
    _, meta = read_volume(path)
    assert meta.voxel_size is None
    assert any("5 x 5 nm" in w for w in meta.warnings)


def test_tiff_lazy_equals_eager(tmp_path):
    import tifffile

    raw = _volume("uint16", (6, 32, 32))
    path = tmp_path / "lazy.tif"
    tifffile.imwrite(path, raw, photometric="minisblack")
    eager, _ = read_volume(path)
    lazy, meta = read_volume(path, lazy=True)
    assert type(lazy).__module__.startswith("dask") and meta.lazy
    np.testing.assert_array_equal(np.asarray(lazy), eager)


@pytest.mark.skipif(not (VNC / "stack1_image.tif").exists(), reason="shared VNC data absent")
def test_real_vnc_stack_uint8_untouched():
    import tifffile

    arr, meta = read_volume(VNC / "stack1_image.tif")
    assert arr.shape == (20, 1024, 1024) and arr.dtype == np.uint8
    assert meta.axes == "zyx" and meta.original_dtype == "uint8"
    assert not meta.likely_inverted
    raw = tifffile.imread(VNC / "stack1_image.tif")
    np.testing.assert_array_equal(arr[::7], raw[::7])
    inv, meta = read_volume(VNC / "stack1_image.tif", invert=True)
    np.testing.assert_array_equal(inv[3], 255 - raw[3])
    assert meta.inverted and not meta.likely_inverted  # judged on the file, not our flip


def test_inverted_file_is_flagged(tmp_path):
    import imageio.v3 as iio
    from skimage.draw import line

    rng = np.random.default_rng(0)
    img = np.full((256, 256), 170.0)
    for _ in range(40):
        rr, cc = line(*rng.integers(0, 256, 4))
        img[rr, cc] = 60
        img[np.clip(rr + 1, 0, 255), cc] = 60
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    iio.imwrite(tmp_path / "normal.png", img)
    iio.imwrite(tmp_path / "bright_membranes.png", 255 - img)
    assert not read_volume(tmp_path / "normal.png")[1].likely_inverted
    assert read_volume(tmp_path / "bright_membranes.png")[1].likely_inverted


# --------------------------------------------------------------------------------------
# MRC


@pytest.mark.parametrize("dtype", ["int16", "uint16", "float32"])
def test_mrc_values_and_angstrom_voxel(tmp_path, dtype):
    import mrcfile

    raw = _volume(dtype)
    path = tmp_path / f"tomo_{dtype}.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(raw)
        mrc.voxel_size = (46.0, 46.0, 500.0)  # Å, x y z
    arr, meta = read_volume(path, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap)
    assert meta.format == "mrc" and meta.source == f"tomo_{dtype}"
    assert meta.voxel_size == pytest.approx((50.0, 4.6, 4.6))
    _check_percentile(raw, path)


def test_mrc_imod_unsigned_bytes(tmp_path):
    """IMOD marks mode-0 files as unsigned; read as int8 they would wrap to negative."""
    import mrcfile

    raw = np.arange(2 * 16 * 16, dtype=np.uint8).reshape(2, 16, 16)
    path = tmp_path / "imod.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(raw.view(np.int8))
    data = bytearray(path.read_bytes())
    data[152:160] = np.array([1146047817, 0], dtype="<i4").tobytes()
    path.write_bytes(bytes(data))
    arr, meta = read_volume(path)
    np.testing.assert_array_equal(arr, raw)
    assert meta.voxel_size is None  # mrcfile's default header has no voxel size


# --------------------------------------------------------------------------------------
# NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_xyz_to_zyx_and_micron_units(tmp_path, suffix):
    import nibabel as nib

    raw = _volume("uint16")  # zyx
    img = nib.Nifti1Image(raw.transpose(2, 1, 0), np.eye(4))  # NIfTI stores x, y, z
    img.header.set_zooms((0.004, 0.005, 0.04))  # x, y, z
    img.header.set_xyzt_units("micron")
    path = tmp_path / f"brain{suffix}"
    nib.save(img, path)
    arr, meta = read_volume(path, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert arr.flags.c_contiguous
    assert meta.source == "brain" and meta.format == "nifti"
    assert meta.voxel_size == pytest.approx((40.0, 5.0, 4.0))
    _check_percentile(raw, path)


def test_nifti_4d_time_and_mm_units(tmp_path):
    import nibabel as nib

    raw = RNG.normal(size=(3, 4, 10, 12)).astype(np.float32)  # t z y x
    img = nib.Nifti1Image(raw.transpose(3, 2, 1, 0), np.eye(4))
    img.header.set_zooms((1e-5, 1e-5, 3e-5, 1.0))
    img.header.set_xyzt_units("mm", "sec")
    path = tmp_path / "series.nii.gz"
    nib.save(img, path)
    arr, meta = read_volume(path, timepoint=1, standardize_mode="none")
    np.testing.assert_array_equal(arr, raw[1])
    assert meta.voxel_size == pytest.approx((30.0, 10.0, 10.0))


# --------------------------------------------------------------------------------------
# Zarr / OME-Zarr


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_array_is_lazy(tmp_path, zarr_format):
    import zarr

    raw = _volume("uint16", (6, 32, 32))
    path = tmp_path / "plain.zarr"
    z = zarr.open_array(str(path), mode="w", shape=raw.shape, chunks=(2, 16, 16),
                        dtype=raw.dtype, zarr_format=zarr_format)
    z[:] = raw
    assert detect_format(path) == "zarr"
    arr, meta = read_volume(path, standardize_mode="none")
    assert type(arr).__module__.startswith("dask") and meta.lazy
    np.testing.assert_array_equal(arr.compute(), raw)
    assert meta.format == "zarr" and meta.axes == "zyx" and meta.voxel_size is None

    arr8, meta8 = read_volume(path)
    assert arr8.dtype == np.uint8 and type(arr8).__module__.startswith("dask")
    assert _monotone(raw, arr8.compute())
    assert meta8.value_range_exact is False  # estimated from sampled chunks

    eager, meta_e = read_volume(path, lazy=False)
    assert isinstance(eager, np.ndarray) and not meta_e.lazy
    np.testing.assert_array_equal(eager, arr8.compute())


def test_zarr_group_with_one_array(tmp_path):
    import zarr

    raw = _volume("int16")
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    group.create_array("raw", shape=raw.shape, dtype=raw.dtype, chunks=(2, 8, 8))[:] = raw
    arr, _ = read_volume(tmp_path / "grp.zarr", standardize_mode="none")
    np.testing.assert_array_equal(arr.compute(), raw)


def _write_ome_zarr(path, raw, zarr_format):
    """Two-level OME-Zarr written by hand (NGFF 0.4 for v2 stores, 0.5 for v3)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    levels = [raw, raw[:, ::2, ::2]]
    datasets = []
    for i, data in enumerate(levels):
        a = group.create_array(str(i), shape=data.shape, dtype=data.dtype, chunks=(2, 8, 8))
        a[:] = data
        factor = 2 ** i
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [0.03, 0.004 * factor, 0.004 * factor]}]})
    multiscale = {
        "version": "0.4" if zarr_format == 2 else "0.5",
        "axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets,
    }
    if zarr_format == 2:
        group.attrs["multiscales"] = [multiscale]
    else:
        multiscale.pop("version")
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_levels_and_voxel_size(tmp_path, zarr_format):
    raw = _volume("uint16", (4, 32, 32))
    path = tmp_path / "cell.ome.zarr"
    _write_ome_zarr(path, raw, zarr_format)
    assert detect_format(path) == "ome-zarr"
    arr, meta = read_volume(path, standardize_mode="none")
    assert meta.format == "ome-zarr" and meta.level == 0 and meta.source == "cell"
    np.testing.assert_array_equal(arr.compute(), raw)
    assert meta.voxel_size == pytest.approx((30.0, 4.0, 4.0))

    arr1, meta1 = read_volume(path, level=1, standardize_mode="none")
    np.testing.assert_array_equal(arr1.compute(), raw[:, ::2, ::2])
    assert meta1.level == 1 and meta1.voxel_size == pytest.approx((30.0, 8.0, 8.0))


# --------------------------------------------------------------------------------------
# folders, globs, single images, video


def test_png_folder_natural_order_skips_junk(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "sections"
    folder.mkdir()
    slices = {}
    for i in (1, 2, 10):  # alphabetical order would put img10 before img2
        img = np.full((12, 16), i * 20, np.uint8)
        img[0, 0] = 0
        iio.imwrite(folder / f"img{i}.png", img)
        slices[i] = img
    iio.imwrite(folder / ".hidden.png", np.zeros((5, 5), np.uint8))
    (folder / "Thumbs.db").write_bytes(b"junk")
    (folder / "desktop.ini").write_text("junk")
    (folder / "__MACOSX").mkdir()
    (folder / "notes.txt").write_text("not an image")
    arr, meta = read_volume(folder, standardize_mode="none")
    np.testing.assert_array_equal(arr, np.stack([slices[1], slices[2], slices[10]]))
    assert meta.format == "image-folder" and meta.source == "sections" and meta.axes == "zyx"
    assert meta.voxel_size is None


def test_png_folder_uint16_and_glob(tmp_path):
    import imageio.v3 as iio

    raw = _volume("uint16", (3, 10, 12))
    for i, sl in enumerate(raw):
        iio.imwrite(tmp_path / f"s_{i}.png", sl)
    iio.imwrite(tmp_path / "other.jpg", np.zeros((10, 12), np.uint8))
    arr, meta = read_volume(str(tmp_path / "s_*.png"), standardize_mode="none")
    np.testing.assert_array_equal(arr, raw)
    assert arr.dtype == np.uint16 and meta.format == "image-folder"
    _check_percentile(raw, str(tmp_path / "s_*.png"))


def test_single_png_and_rgb_to_grey(tmp_path):
    import imageio.v3 as iio

    grey = _volume("uint8", (1, 20, 24))[0]
    iio.imwrite(tmp_path / "grey.png", grey)
    arr, meta = read_volume(tmp_path / "grey.png")
    np.testing.assert_array_equal(arr, grey)
    assert meta.axes == "yx" and meta.format == "image" and meta.scale == (1.0, 1.0)

    iio.imwrite(tmp_path / "rgb.png", np.stack([grey] * 3, axis=-1))
    arr, meta = read_volume(tmp_path / "rgb.png")
    np.testing.assert_array_equal(arr, grey)  # grey stored as RGB loses nothing
    assert any("colour" in w for w in meta.warnings)

    arr, _ = read_volume(tmp_path / "rgb.png", channel=1, standardize_mode="none")
    np.testing.assert_array_equal(arr, grey)


def _frames():
    frames = np.zeros((6, 32, 48), np.uint8)
    for i in range(6):
        frames[i] = 30 + 30 * i
        frames[i, 8:16, 10:30] = 240
    return frames


def test_avi_video_lossless(tmp_path):
    import imageio.v3 as iio

    frames = _frames()
    path = tmp_path / "movie.avi"
    iio.imwrite(path, frames, plugin="FFMPEG", fps=5, codec="ffv1", pixelformat="gray",
                macro_block_size=1)
    arr, meta = read_volume(path)
    np.testing.assert_array_equal(arr, frames)
    assert meta.format == "video" and meta.axes == "zyx"


def test_mp4_video_lossy(tmp_path):
    import imageio.v3 as iio

    frames = _frames()
    path = tmp_path / "movie.mp4"
    iio.imwrite(path, frames, plugin="FFMPEG", fps=5, macro_block_size=16)
    arr, meta = read_volume(path, standardize_mode="none")
    assert arr.shape == frames.shape and arr.dtype == np.uint8
    assert np.abs(arr.astype(int) - frames).mean() < 3  # h264 is lossy


# --------------------------------------------------------------------------------------
# metadata


def test_meta_to_dict_is_json_and_scale(tmp_path):
    import tifffile

    path = tmp_path / "m.tif"
    tifffile.imwrite(path, _volume("uint16"), imagej=True, resolution=(1 / 0.01, 1 / 0.01),
                     metadata={"spacing": 0.02, "unit": "um", "axes": "ZYX"})
    arr, meta = read_volume(path, voxel_size=(30, 6, 6), invert=True)
    assert isinstance(meta, VolumeMeta)
    d = json.loads(json.dumps(meta.to_dict()))
    for key in ("source", "path", "format", "voxel_size", "original_dtype", "value_range",
                "shape", "axes", "standardize_mode", "percentiles", "inverted",
                "likely_inverted", "warnings", "lazy", "level"):
        assert key in d
    assert d["voxel_size"] == [30.0, 6.0, 6.0] and meta.voxel_size_from == "user"
    assert meta.scale == (30.0, 6.0, 6.0) and len(meta.scale) == arr.ndim
    assert meta.inverted is True


def test_supported_suffixes_and_detect_format(tmp_path):
    for suffix in (".tif", ".tiff", ".mrc", ".rec", ".nii", ".nii.gz", ".zarr", ".png",
                   ".jpg", ".jpeg", ".bmp", ".avi", ".mp4"):
        assert suffix in SUPPORTED_SUFFIXES
    expected = {"a.TIF": "tiff", "a.ome.tiff": "ome-tiff", "a.mrc": "mrc", "a.nii.gz": "nifti",
                "a.png": "image", "a.mp4": "video"}
    for name, fmt in expected.items():
        (tmp_path / name).write_bytes(b"")
        assert detect_format(tmp_path / name) == fmt
    assert detect_format(tmp_path) == "image-folder"
    assert detect_format(str(tmp_path / "*.png")) == "image-folder"
