"""The Segment widget's outputs, as worker jobs: the segmentation saved as an OME-Zarr label
image, and the active model exported as a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def suggested_labels_path(image_layer, labels_name: str) -> str:
    """Where the segmentation of *image_layer* goes by default: under ``labels/`` of the
    OME-Zarr image it was opened from, else beside its file as ``NAME.zarr``; "" when the
    image has no file."""
    from ..ome_labels import is_ome_image

    source = getattr(getattr(image_layer, "source", None), "path", None)
    if not source:
        return ""
    source = Path(source)
    name = labels_name.replace(" ", "_")
    if is_ome_image(source):
        return str(source / "labels" / name)
    return str(source.with_name(f"{name}.zarr"))


def save_labels_job(path, labels, voxel, names, progress, should_stop):
    """*labels* (a snapshot taken on the main thread) written atomically as OME-Zarr."""
    from ..ome_labels import save_ome_labels

    written = save_ome_labels(path, labels, voxel_size=voxel, class_names=names,
                              progress=progress, should_stop=should_stop)
    size = " x ".join(str(n) for n in labels.shape)
    where = "" if voxel is None else f", voxel size {' x '.join(f'{v:g}' for v in voxel)} nm"
    return f"Labels saved as OME-Zarr: {written} ({size}{where})."


def export_job(bundle, bundle_path, out, image, progress, should_stop):
    """The package of *bundle* (its file, or a temporary copy), then bioimageio.core's test."""
    import tempfile

    from ..bioimage_io import export_bioimageio
    from ..model import save_bundle

    try:
        import bioimageio.core
    except ImportError:
        raise ValueError("Exporting needs the bioimage.io libraries: pip install 'napari-cem[bioimageio]'") from None
    progress(0, 2, "writing the package")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(bundle_path) if bundle_path is not None and Path(bundle_path).suffix == ".pt" else None
        if source is None:
            source = Path(folder) / "model.pt"
            save_bundle(bundle, source)
        written = export_bioimageio(source, out, test_image=None if image is None else np.asarray(
            image[image.shape[0] // 2] if image.ndim == 3 else image))
    if should_stop():  # the package is written; its test (tens of seconds) is skipped
        return f"bioimage.io package written: {written}; its test was skipped (cancelled)."
    progress(1, 2, "testing the package (bioimageio.core)")
    summary = bioimageio.core.test_model(written)
    progress(2, 2, "testing the package (bioimageio.core)")
    return f"bioimage.io package written: {written} ({written.stat().st_size / 2**20:.0f} MiB); bioimageio.core test {summary.status}."
