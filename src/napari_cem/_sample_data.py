"""napari sample data: synthetic EM volumes with their ground-truth labels."""

from __future__ import annotations

SAMPLE_SHAPE_ISOTROPIC = (64, 256, 256)
SAMPLE_SHAPE_ANISOTROPIC = (24, 384, 384)


def sample_layers(isotropic: bool = True, shape=None, seed: int = 0) -> list[tuple]:
    """Image + Labels layer data for a deterministic synthetic EM volume."""
    from .synthetic import make_em_volume

    if shape is None:
        shape = SAMPLE_SHAPE_ISOTROPIC if isotropic else SAMPLE_SHAPE_ANISOTROPIC
    vol = make_em_volume(shape, isotropic=isotropic, seed=seed)
    kind = "isotropic" if isotropic else "anisotropic"
    scale = tuple(float(s) for s in vol.voxel_size)
    provenance = {
        "source": f"synthetic-{kind}",
        "format": "synthetic",
        "voxel_size": list(scale),
        "seed": seed,
        "class_names": list(vol.class_names),
    }
    units = ("nm",) * len(scale)
    image = (
        vol.image,
        {
            "name": f"synthetic EM ({kind})",
            "scale": scale,
            "units": units,
            "contrast_limits": (0, 255),
            "metadata": {"napari_cem": provenance},
        },
        "image",
    )
    labels = (
        vol.labels,
        {
            "name": f"ground truth ({kind})",
            "scale": scale,
            "units": units,
            "opacity": 0.4,
            "metadata": {"napari_cem": {**provenance, "class_names": list(vol.class_names)}},
        },
        "labels",
    )
    return [image, labels]


def isotropic_sample() -> list[tuple]:
    return sample_layers(isotropic=True)


def anisotropic_sample() -> list[tuple]:
    return sample_layers(isotropic=False)
