"""Tests of the synthetic EM volume generator (napari_cem.synthetic)."""

from __future__ import annotations

import hashlib
from dataclasses import is_dataclass

import numpy as np
import pytest

from napari_cem.synthetic import CLASS_NAMES, SyntheticVolume, make_em_volume

@pytest.fixture(scope="module")
def default_volume() -> SyntheticVolume:
    return make_em_volume()


@pytest.fixture(scope="module")
def iso_aniso():
    """The same world sampled at 8 nm and at 40 nm in z (z = 20 + 40 k nm)."""
    iso = make_em_volume((40, 128, 128), seed=3)
    aniso = make_em_volume((8, 128, 128), isotropic=False, seed=3)
    return iso, aniso


def _digest(vol: SyntheticVolume) -> str:
    h = hashlib.sha256()
    for a in (vol.image, vol.labels, vol.mito_instances):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- API
def test_default_shapes_and_dtypes(default_volume):
    vol = default_volume
    assert is_dataclass(vol)
    assert vol.image.shape == vol.labels.shape == vol.mito_instances.shape == (32, 256, 256)
    assert vol.image.dtype == np.uint8
    assert vol.labels.dtype == np.uint8
    assert vol.mito_instances.dtype in (np.uint16, np.uint32)
    assert vol.voxel_size == (8.0, 8.0, 8.0)
    assert vol.class_names == CLASS_NAMES == ("background", "membrane", "mitochondria", "vesicle")
    assert set(np.unique(vol.labels)) <= {0, 1, 2, 3}
    assert vol.resin_mask.shape == vol.image.shape and vol.resin_mask.dtype == bool


def test_2d_image():
    vol = make_em_volume((96, 128), seed=3)
    assert vol.image.shape == vol.labels.shape == vol.mito_instances.shape == (96, 128)
    assert vol.image.dtype == np.uint8 and vol.labels.dtype == np.uint8
    assert vol.voxel_size == (8.0, 8.0)
    # one section at z = 0 of the same world as the 3D volume
    vol3 = make_em_volume((2, 96, 128), seed=3)
    np.testing.assert_array_equal(vol.labels, vol3.labels[0])
    assert make_em_volume((64, 64), isotropic=False).voxel_size == (8.0, 8.0)


def test_voxel_size_override_and_validation():
    vol = make_em_volume((4, 48, 48), voxel_size=(30, 5, 5))
    assert vol.voxel_size == (30.0, 5.0, 5.0)
    assert make_em_volume((48, 48), voxel_size=(5, 5)).voxel_size == (5.0, 5.0)
    with pytest.raises(ValueError):
        make_em_volume((4, 5, 6, 7))
    with pytest.raises(ValueError):
        make_em_volume((4, 48, 48), voxel_size=(8, 8))
    with pytest.raises(ValueError):
        make_em_volume((4, 48, 48), noise=-1)


def test_tiny_shapes():
    for shape in [(1, 1, 1), (3, 5, 7), (2, 2)]:
        vol = make_em_volume(shape)
        assert vol.image.shape == vol.labels.shape == shape


# --------------------------------------------------------------------- determinism
def test_same_seed_same_bytes():
    a = make_em_volume((12, 96, 96), seed=7)
    b = make_em_volume((12, 96, 96), seed=7)
    assert _digest(a) == _digest(b)
    np.testing.assert_array_equal(a.resin_mask, b.resin_mask)


def test_different_seeds_differ():
    a = make_em_volume((12, 96, 96), seed=1)
    b = make_em_volume((12, 96, 96), seed=2)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.labels, b.labels)


def test_crop_consistency():
    """A smaller volume is a crop of a larger one (labels): the world is seed-defined."""
    small = make_em_volume((10, 80, 64), seed=5)
    large = make_em_volume((16, 128, 112), seed=5)
    np.testing.assert_array_equal(small.labels, large.labels[:10, :80, :64])
    np.testing.assert_array_equal(
        small.mito_instances > 0, large.mito_instances[:10, :80, :64] > 0
    )


# -------------------------------------------------------------------- ground truth
def test_class_fractions(default_volume):
    lab = default_volume.labels
    frac = np.bincount(lab.ravel(), minlength=4) / lab.size
    assert 0.65 < frac[0] < 0.92, frac
    assert 0.05 < frac[1] < 0.20, frac  # plasma membranes
    assert 0.03 < frac[2] < 0.12, frac  # mitochondria (VNC: 5.4 %)
    assert 0.003 < frac[3] < 0.04, frac  # vesicles
    assert default_volume.resin_mask.any()


def test_mito_instances_match_labels(default_volume):
    vol = default_volume
    np.testing.assert_array_equal(vol.mito_instances > 0, vol.labels == 2)
    ids = np.unique(vol.mito_instances)
    assert ids[0] == 0 and len(ids) > 5
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive 1..N


def test_mitochondria_inside_cells(default_volume):
    """Mitochondria lie inside cells: hardly ever next to a plasma membrane voxel."""
    from scipy import ndimage as ndi

    lab = default_volume.labels
    mito = lab == 2
    touching = ndi.binary_dilation(lab == 1) & mito
    assert touching.sum() < 0.05 * mito.sum()


def test_mito_density_scales_count():
    none = make_em_volume((12, 128, 128), seed=4, mito_density=0.0)
    one = make_em_volume((12, 128, 128), seed=4, mito_density=1.0)
    two = make_em_volume((12, 128, 128), seed=4, mito_density=2.5)
    assert not (none.labels == 2).any() and none.mito_instances.max() == 0
    assert (two.labels == 2).sum() > (one.labels == 2).sum() > 0


# ------------------------------------------------------------------------ anisotropy
def test_anisotropic_voxel_size(iso_aniso):
    iso, aniso = iso_aniso
    assert aniso.voxel_size == (40.0, 8.0, 8.0)
    assert iso.voxel_size == (8.0, 8.0, 8.0)
    assert make_em_volume((2, 32, 32), isotropic=False, voxel_size=(50, 4, 4)).voxel_size == (
        50.0,
        4.0,
        4.0,
    )


def test_anisotropic_is_isotropic_geometry_sampled_coarser(iso_aniso):
    iso, aniso = iso_aniso
    for k in range(aniso.labels.shape[0]):
        # aniso plane k is at z = 20 + 40 k nm = iso plane 2 + 5 k
        np.testing.assert_array_equal(aniso.labels[k], iso.labels[2 + 5 * k])


def test_mitochondria_continuous_across_sections(iso_aniso):
    iso, aniso = iso_aniso
    for vol, min_run in ((aniso, 3), (iso, 10)):
        runs = []
        for i in np.unique(vol.mito_instances)[1:]:
            zs = np.unique(np.nonzero(vol.mito_instances == i)[0])
            assert np.all(np.diff(zs) == 1), "a mitochondrion skips a section"
            runs.append(len(zs))
        assert max(runs) >= min_run, runs


# -------------------------------------------------------------------------- contrast
def test_contrast_sanity(default_volume):
    vol = default_volume
    img = vol.image.astype(np.float64)
    cyto = (vol.labels == 0) & ~vol.resin_mask
    m_cyto = img[cyto].mean()
    assert img[vol.labels == 1].mean() < m_cyto - 40  # membranes dark
    assert img[vol.labels == 2].mean() < m_cyto - 40  # mitochondria dark
    assert img[vol.resin_mask].mean() > m_cyto + 25  # resin bright
    assert 90 < m_cyto < 200


def test_not_saturated(default_volume):
    img = default_volume.image
    assert (img == 0).mean() < 0.01
    assert (img == 255).mean() < 0.01
    assert img.std() > 25


def test_noise_parameter():
    clean = make_em_volume((6, 96, 96), seed=2, noise=0.0)
    noisy = make_em_volume((6, 96, 96), seed=2, noise=3.0)
    np.testing.assert_array_equal(clean.labels, noisy.labels)

    def hf(a):  # high-frequency energy: neighbour differences along x
        return np.abs(np.diff(a.astype(np.float64), axis=-1)).mean()

    assert hf(noisy.image) > 1.2 * hf(clean.image)


def test_close_to_real_em_statistics(default_volume, vnc_dir):
    """Class contrasts and grey-level spread comparable to the real VNC ssTEM data."""
    import tifffile

    real = tifffile.imread(vnc_dir / "stack1_image.tif", key=[0, 10]).astype(np.float64)
    real_lab = tifffile.imread(vnc_dir / "stack1_classes.tif", key=[0, 10])
    syn = default_volume.image.astype(np.float64)
    syn_lab = default_volume.labels

    def rel_contrast(img, lab, cls):
        bg = img[lab == 0].mean()
        return (bg - img[lab == cls].mean()) / bg

    for cls in (1, 2):  # membrane, mitochondria
        assert abs(rel_contrast(syn, syn_lab, cls) - rel_contrast(real, real_lab, cls)) < 0.2
    assert 0.6 < syn.std() / real.std() < 1.4
    assert abs(syn.mean() - real.mean()) < 45
