"""Stacks of 2D images (a folder or a glob pattern), single images, and videos.

Many EM datasets are shared as one PNG/TIFF per section. Alphabetical order puts
slice_10 before slice_2, so files are sorted naturally; OS junk (hidden files,
Thumbs.db, __MACOSX) is skipped so it cannot become a slice; and slices of different
sizes are refused with the two files named, since silently padding would misalign them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import VolumeError
from ._listing import IMAGE_SUFFIXES, glob_images, is_hidden_or_system, list_images
from .raw import RawVolume


def read_image_folder(folder: Path) -> RawVolume:
    files = list_images(folder)
    if not files:
        others = sorted(p.name for p in folder.iterdir() if not is_hidden_or_system(p.name))
        if not others:
            raise VolumeError(f"The folder '{folder.name}' is empty: there are no images in it.")
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise VolumeError(
            f"The folder '{folder.name}' contains no images napari-cem can read (looked for "
            + ", ".join(IMAGE_SUFFIXES) + f"). It contains: {shown}."
        )
    return _stack(files)


def read_glob(pattern: str) -> RawVolume:
    files = glob_images(pattern)
    if not files:
        raise VolumeError(
            f"No image files match '{pattern}' (looked for " + ", ".join(IMAGE_SUFFIXES) + ")."
        )
    return _stack(files)


def read_single_image(path: Path) -> RawVolume:
    image = _read_2d(path)
    axes = "YX" if image.ndim == 2 else "YXS"
    return RawVolume(data=image, axes=axes, format="image")


def read_video(path: Path) -> RawVolume:
    """Frames become z slices; EM videos are grey stored as RGB, so channel 0 is kept."""
    import imageio.v3 as iio

    frames = []
    try:
        for frame in iio.imiter(path, plugin="FFMPEG"):
            frame = np.asarray(frame)
            if frames and frame.shape != frames[0].shape:
                raise VolumeError(
                    f"The frames of '{path.name}' change size (frame 0 is "
                    f"{_size(frames[0])}, frame {len(frames)} is {_size(frame)})."
                )
            frames.append(frame)
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(
            f"'{path.name}' could not be read as a video; it may be damaged or use a codec "
            f"ffmpeg cannot decode ({exc})."
        ) from exc
    if not frames:
        raise VolumeError(f"The video '{path.name}' has no frames.")
    data = np.stack(frames)
    axes = "ZYXS" if data.ndim == 4 else "ZYX"
    return RawVolume(data=data, axes=axes, format="video", rgb="first")


def _stack(files: list[Path]) -> RawVolume:
    first = _read_2d(files[0])
    data = np.empty((len(files),) + first.shape, dtype=first.dtype)
    data[0] = first
    for i, f in enumerate(files[1:], start=1):
        image = _read_2d(f)
        if image.shape != first.shape:
            raise VolumeError(
                "All images of a stack must have the same size, but "
                f"'{files[0].name}' is {_size(first)} and '{f.name}' is {_size(image)}."
            )
        if image.dtype != first.dtype:
            raise VolumeError(
                "All images of a stack must have the same bit depth, but "
                f"'{files[0].name}' is {first.dtype} and '{f.name}' is {image.dtype}."
            )
        data[i] = image
    axes = "ZYX" if first.ndim == 2 else "ZYXS"
    return RawVolume(data=data, axes=axes, format="image-folder")


def _read_2d(path: Path) -> np.ndarray:
    """One 2D image, grey (Y, X) or colour (Y, X, S)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            image = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            image = iio.imread(path)
    except Exception as exc:
        raise VolumeError(
            f"'{path.name}' could not be read as an image; it may be damaged or incomplete "
            f"({exc})."
        ) from exc
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (2, 3, 4):
        return image
    if image.ndim == 2:
        return image
    raise VolumeError(
        f"'{path.name}' is not a 2D image (its shape is {image.shape}). A folder must hold "
        "one 2D image per slice; open a multi-page file directly instead."
    )


def _size(image) -> str:
    h, w = image.shape[:2]
    kind = " colour" if image.ndim == 3 else ""
    return f"{w} x {h} pixels{kind}"
