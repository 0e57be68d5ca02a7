"""napari opens EM files through our reader contribution, with voxel size as scale."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem._reader import get_reader


def _write_mrc(path, data, voxel_angstrom):
    import mrcfile

    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel_angstrom
    return path


def _write_nifti(path, data_zyx, spacing_mm):
    import nibabel as nib

    img = nib.Nifti1Image(np.transpose(data_zyx, (2, 1, 0)), affine=np.diag([*spacing_mm[::-1], 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def test_reader_declines_what_it_does_not_open(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert get_reader(str(empty)) is None


def test_npe2_read_mrc_gives_scaled_image(tmp_path):
    import npe2

    npe2.PluginManager.instance().discover()
    data = np.random.default_rng(1).integers(-500, 500, (4, 16, 20)).astype(np.int16)
    path = _write_mrc(tmp_path / "a.mrc", data, (10.0, 10.0, 50.0))
    (layer_data,) = npe2.read([str(path)], stack=False, plugin_name="napari-cem")
    arr, kwargs, kind = layer_data
    assert kind == "image" and arr.dtype == np.uint8 and arr.shape == data.shape
    np.testing.assert_allclose(kwargs["scale"], (5.0, 1.0, 1.0))
    assert kwargs["metadata"]["napari_cem"]["format"] == "mrc"


def test_viewer_opens_nifti_and_image_folder(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    viewer = make_napari_viewer()
    vol = (np.random.default_rng(2).random((3, 12, 10)) * 1000).astype(np.float32)
    nii = _write_nifti(tmp_path / "b.nii.gz", vol, (0.00005, 0.00001, 0.00001))  # mm
    layers = viewer.open(str(nii), plugin="napari-cem")
    assert layers[0].data.shape == (3, 12, 10)
    np.testing.assert_allclose(layers[0].scale, (50.0, 10.0, 10.0), rtol=1e-4)

    folder = tmp_path / "slices"
    folder.mkdir()
    for i in (1, 2, 10):
        iio.imwrite(folder / f"img{i}.png", np.full((8, 9), i * 20, np.uint8))
    (folder / "Thumbs.db").write_bytes(b"junk")
    layers = viewer.open(str(folder), plugin="napari-cem")
    assert layers[0].data.shape == (3, 8, 9)
    # natural sort: img1, img2, img10
    np.testing.assert_array_equal(np.asarray(layers[0].data)[:, 0, 0], [20, 40, 200])


def test_sample_data_has_image_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-cem", "synthetic-anisotropic")
    kinds = sorted(type(layer).__name__ for layer in layers)
    assert kinds == ["Image", "Labels"]
    image = next(layer for layer in layers if type(layer).__name__ == "Image")
    assert image.data.dtype == np.uint8
    assert image.scale[0] > 2 * image.scale[1]  # anisotropic: z much coarser than xy


@pytest.mark.parametrize("suffix", [".rec", ".nii", ".mp4", ".zarr"])
def test_reader_claims_em_suffixes(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".zarr":
        path.mkdir()
        (path / "zarr.json").write_text("{}")
    else:
        path.write_bytes(b"")
    assert get_reader(str(path)) is not None
