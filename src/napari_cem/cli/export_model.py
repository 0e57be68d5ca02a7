"""``napari-cem export-model``: a fine-tuned model as a bioimage.io package."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import CLIError, command
from ._common import _axis_options, _read


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a napari-cem model bundle (.pt) made by fine-tuning")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zip", help="the package to write")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="an author of the model (repeat for several; default: this computer's user)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights (default CC-BY-4.0)")
    p.add_argument("--name", default=None, help="the model's name (default: from its classes and architecture)")
    p.add_argument("--test-image", default=None, metavar="EM",
                   help="an EM image or volume (any format napari-cem reads) for the package's test "
                        "slice and cover (its centre 256 x 256; default: a synthetic slice)")
    p.add_argument("--no-test", action="store_true",
                   help="skip bioimageio.core's test of the written package")
    _axis_options(p, what="the test image")


@command("export-model", "write a model as a bioimage.io package (BioImage Model Zoo, model spec 0.5)",
         _export_args)
def run_export_model(args: argparse.Namespace) -> int:
    from ..bioimage_io import export_bioimageio

    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise CLIError("export-model needs the bioimage.io libraries: pip install 'napari-cem[bioimageio]'") from None
    model = Path(args.model)
    if not model.is_file():
        raise CLIError(f"model file not found: {model}")
    image = None
    if args.test_image:
        image, _ = _read(args.test_image, args, "export-model", standardize_mode="percentile", lazy=False)
    t0 = time.perf_counter()
    try:
        out = export_bioimageio(model, args.output, authors=args.author, license=args.license, name=args.name,
                                test_image=image)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(f"written: {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    if args.no_test:
        return 0
    import bioimageio.core

    t0 = time.perf_counter()
    summary = bioimageio.core.test_model(out)
    print(f"bioimageio.core test: {summary.status} ({time.perf_counter() - t0:.1f} s)")
    if summary.status != "passed":
        print(summary.format())
        return 1
    return 0
