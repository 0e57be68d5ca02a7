"""Issue 19's bioimage.io figure: writing a model bundle as a bioimage.io package
(``napari-cem export-model``), validating it with ``bioimageio.spec`` and running
``bioimageio.core``'s test of it (CPU): seconds of each, and the package size. A
random-init U-Net (the times do not depend on the weights).

    PYTHONPATH=src python benchmarks/bench_bioimageio.py --rows
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _harness import bench_parser, noted, publish, row  # noqa: E402


def main(argv=None) -> int:
    import bioimageio.core
    import torch
    from bioimageio.spec import load_description

    from napari_cem.bioimage_io import export_bioimageio
    from napari_cem.model import ModelBundle, build_unet, save_bundle

    p = bench_parser(__doc__)
    p.add_argument("--arch", default="resnet50")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        torch.manual_seed(0)
        save_bundle(ModelBundle(model=build_unet(1, args.arch), classes=["background", "mito"],
                                norms=(0.58, 0.10)), work / "m.pt")
        t0 = time.perf_counter()
        package = export_bioimageio(work / "m.pt", work / "m.zip", authors=["benchmark"])
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        descr = load_description(package, perform_io_checks=True)
        validate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = bioimageio.core.test_model(package)
        test_s = time.perf_counter() - t0
        size = package.stat().st_size / 2**20
    rows = [row(f"bioimage.io package of a U-Net {args.arch} (export-model), CPU",
                noted(f"export {export_s:.1f} s ({size:.0f} MiB: TorchScript + state dict, test tensors, cover); "
                f"bioimageio.spec validation {validate_s:.1f} s ({descr.validation_summary.status}); "
                f"bioimageio.core test {test_s:.1f} s ({summary.status})", args.note))]
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
