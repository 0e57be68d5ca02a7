"""``napari-cem inspect``: what napari-cem reads from a file, without reading the data."""

from __future__ import annotations

import argparse

from .._argtypes import float_in, int_at_least
from . import command
from ._common import _axis_options, _read


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an EM file, a folder of 2D images, or a glob such as 'dir/*.png'")
    p.add_argument("--standardize", choices=["percentile", "dtype-max", "none"], default="percentile")
    p.add_argument("--percentiles", nargs=2, type=float_in(0, 100), default=(0.5, 99.5),
                   metavar=("LOW", "HIGH"))
    _axis_options(p)
    p.add_argument("--level", type=int_at_least(0), default=0, help="OME-Zarr multiscale level (default 0)")


@command("inspect", "read an EM volume as napari-cem would and describe it (shape, voxel size, "
         "value range, contrast)", _inspect_args)
def run_inspect(args: argparse.Namespace) -> int:
    data, meta = _read(args.path, args, "inspect", standardize_mode=args.standardize,
                       percentiles=tuple(args.percentiles), level=args.level)
    voxel = "unknown" if meta.voxel_size is None else " x ".join(f"{v:g}" for v in meta.voxel_size) + " nm"
    print(f"source          {meta.source}")
    print(f"format          {meta.format}{' (lazy)' if meta.lazy else ''}")
    print(f"shape ({meta.axes})    {' x '.join(str(s) for s in data.shape)}")
    print(f"voxel size      {voxel}")
    print(f"original dtype  {meta.original_dtype}, values {meta.value_range[0]:g} .. {meta.value_range[1]:g}")
    print(f"standardised    {meta.standardize_mode} -> {data.dtype}")
    print(f"contrast        {'looks INVERTED (bright membranes): use invert' if meta.likely_inverted else 'normal (dark membranes)'}")
    return 0
