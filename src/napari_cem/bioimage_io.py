"""A fine-tuned model as a BioImage Model Zoo package (bioimage.io, model spec 0.5), so
that deepImageJ, ilastik, the BioImage.IO tools and anyone with ``bioimageio.core`` can
run it (``napari_cem.model.load_bundle`` reads such a package of ours back).

The package holds TorchScript and PyTorch state-dict weights (an smp U-Net), the input
as uint8 EM slices with our normalisation written as one fixed ``scale_linear`` step
(``(u8 / 255 - mean) / std``, exactly what ``segment`` does), the sigmoid / softmax
after the network, a test slice with the output of our own predictor (float32) for it, a
cover picture, and a README with the training record, the licence and the citation of
CEM500K; the bundle's own record (classes, normalisation, architecture, training) is in
the package's ``config.napari_cem``. Writing needs ``bioimageio.spec`` (``pip install
napari-cem[bioimageio]``); reading one of ours back needs nothing more than napari-cem.
"""

from __future__ import annotations

import getpass
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["TEST_SIDE", "export_bioimageio"]

TEST_SIDE = 256  # px of the test slice
_CEM500K = ("Conrad R, Narayan K (2021). CEM500K, a large-scale heterogeneous unlabeled cellular "
            "electron microscopy image dataset for deep learning. eLife 10:e65894.")
_CEM500K_DOI = "10.7554/eLife.65894"


def _test_slice(image=None) -> np.ndarray:
    """A TEST_SIDE x TEST_SIDE uint8 slice: the centre of *image*, else a synthetic EM slice."""
    if image is None:
        from .synthetic import make_em_volume

        image = make_em_volume((1, TEST_SIDE, TEST_SIDE), isotropic=True, seed=0).image[0]
    image = np.asarray(image)
    image = image[image.shape[0] // 2] if image.ndim == 3 else image
    if image.dtype != np.uint8:
        raise ValueError("The test image must be 8-bit (as napari-cem standardises EM images).")
    if min(image.shape) < TEST_SIDE:
        raise ValueError(f"The test image must be at least {TEST_SIDE} x {TEST_SIDE} px.")
    y0, x0 = (image.shape[0] - TEST_SIDE) // 2, (image.shape[1] - TEST_SIDE) // 2
    return np.ascontiguousarray(image[y0:y0 + TEST_SIDE, x0:x0 + TEST_SIDE])


def _cover(image: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """The test slice beside the model's confidence for its first structure (PNG)."""
    import imageio.v3 as iio

    conf = (np.clip(probs[0, -1 if probs.shape[1] == 1 else 1], 0, 1) * 255).astype(np.uint8)
    iio.imwrite(path, np.concatenate([image, np.full((image.shape[0], 8), 255, np.uint8), conf], axis=1))


def _readme(bundle, name: str, path: Path) -> None:
    record = json.dumps(getattr(bundle, "training", {}) or {}, indent=2, default=str)
    path.write_text(f"""# {name}

A U-Net ({bundle.arch}) fine-tuned with napari-cem (the CEM500K workflow) to segment
{", ".join(bundle.classes[1:])} in cellular electron microscopy.

## Input and output
- input `raw`: one 8-bit EM slice (batch, channel, y, x), y and x 64 px or more in steps
  of 32; normalised as `(raw / 255 - {bundle.norms[0]:.6g}) / {bundle.norms[1]:.6g}` (the
  scale_linear step of the package).
- output `probabilities`: {"the probability of " + bundle.classes[1] if len(bundle.classes) == 2
                             else "one probability per class: " + ", ".join(bundle.classes)}.
  napari-cem thresholds one structure at 0.5 and takes the most probable of several.

## Validation
The package's test: `test_output.npy` is napari-cem's own float32 prediction for
`test_input.npy`; `bioimageio.core`'s test of the package reproduces it. How well the model
segments depends on its training data: check it on slices it did not train on (napari-cem's
Segment widget compares with a ground truth, IoU per class).

## Training record
```json
{record}
```

## Citation
{_CEM500K} https://doi.org/{_CEM500K_DOI}
""", encoding="utf-8")


def export_bioimageio(bundle_path, out, *, authors=None, license: str = "CC-BY-4.0", name: str | None = None,
                      test_image=None) -> Path:
    """Write the bioimage.io package (a .zip) of a napari-cem model bundle; returns its path.
    *authors*: names (default: this computer's user name); *test_image*: an 8-bit EM slice or
    volume to take the test slice from (default: a synthetic slice)."""
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bio

    from .infer import _Predictor
    from .model import ARCHS, build_unet, load_bundle, set_bin, size_step

    bundle = load_bundle(bundle_path)
    out = Path(out)
    if out.suffix.lower() != ".zip":
        out = out.with_suffix(".zip")
    name = name or f"napari-cem {' '.join(bundle.classes[1:])} U-Net {bundle.arch}"
    image = _test_slice(test_image)
    predictor = _Predictor(bundle, device="cpu", precision="float32")
    probs = predictor.predict(image[None]).cpu().numpy().astype(np.float32)  # (1, n_out, H, W)
    n_out = probs.shape[1]
    model = set_bin(build_unet(n_out, bundle.arch), bundle.bin)
    model.load_state_dict(bundle.model.state_dict())
    step = size_step(model)
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        np.save(work / "test_input.npy", image[None, None])
        np.save(work / "test_output.npy", probs)
        import tifffile

        tifffile.imwrite(work / "sample_input.tif", image)
        tifffile.imwrite(work / "sample_output.tif", probs[0])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what bioimage.io runs today
            traced = torch.jit.trace(model, torch.zeros(1, 1, TEST_SIDE, TEST_SIDE))
        traced.save(str(work / "weights_torchscript.pt"))
        torch.save(model.state_dict(), work / "weights.pt")
        _cover(image, probs, work / "cover.png")
        _readme(bundle, name, work / "README.md")
        mean, std = (float(v) for v in bundle.norms)
        space = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=2 * step, step=step))
                 for a in "yx"]
        inputs = [bio.InputTensorDescr(
            id=bio.TensorId("raw"), description="8-bit EM slice",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("em")]), *space],
            test_tensor=bio.FileDescr(source=work / "test_input.npy"),
            sample_tensor=bio.FileDescr(source=work / "sample_input.tif"),
            data=bio.IntervalOrRatioDataDescr(type="uint8"),
            preprocessing=[bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")),
                           bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(
                               gain=1.0 / (255.0 * std), offset=-mean / std)),
                           # without it the spec casts back to the input's uint8
                           bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32"))])]
        channels = [bio.Identifier(c) for c in (bundle.classes[1:] if n_out == 1 else bundle.classes)]
        post = [bio.SigmoidDescr()] if n_out == 1 else [
            bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))]
        outputs = [bio.OutputTensorDescr(
            id=bio.TensorId("probabilities"), description="probability per structure (0-1)",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channels),
                  *[bio.SpaceOutputAxis(id=bio.AxisId(a), size=bio.SizeReference(
                      tensor_id=bio.TensorId("raw"), axis_id=bio.AxisId(a))) for a in "yx"]],
            test_tensor=bio.FileDescr(source=work / "test_output.npy"),
            sample_tensor=bio.FileDescr(source=work / "sample_output.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=post)]
        version = bio.Version(torch.__version__.split("+")[0])
        encoder, decoder = ARCHS[bundle.arch]
        # smp's Unet has no binning: a binned U-Net goes as TorchScript only (its trace pools and
        # upsamples), its state dict as an attachment that napari-cem reads back
        binned = bundle.bin > 1
        weights = bio.WeightsDescr(
            torchscript=bio.TorchscriptWeightsDescr(source=work / "weights_torchscript.pt",
                                                    pytorch_version=version,
                                                    parent=None if binned else "pytorch_state_dict"),
            pytorch_state_dict=None if binned else bio.PytorchStateDictWeightsDescr(
                source=work / "weights.pt", pytorch_version=version,
                architecture=bio.ArchitectureFromLibraryDescr(
                    callable=bio.Identifier("Unet"), import_from="segmentation_models_pytorch",
                    kwargs={"encoder_name": encoder, "encoder_weights": None, "in_channels": 1,
                            "classes": n_out, "decoder_channels": list(decoder)})))
        descr = bio.ModelDescr(
            name=name, description=f"U-Net ({bundle.arch}) segmenting {', '.join(bundle.classes[1:])} in "
                                   "EM slices, fine-tuned with napari-cem",
            authors=[bio.Author(name=a) for a in (authors or [getpass.getuser() or "napari-cem user"])],
            cite=[bio.CiteEntry(text=_CEM500K, doi=bio.Doi(_CEM500K_DOI))],
            license=bio.LicenseId(license), documentation=bio.FileDescr(source=work / "README.md"),
            covers=[bio.FileDescr(source=work / "cover.png")],
            tags=["electron-microscopy", "semantic-segmentation", "unet", "cem500k", "napari-cem"],
            inputs=inputs, outputs=outputs, weights=weights,
            attachments=[bio.FileDescr(source=work / "weights.pt")] if binned else [],
            config={"napari_cem": {"classes": list(bundle.classes), "norms": [mean, std], "arch": bundle.arch,
                                   "bin": bundle.bin,
                                   "crop_size": int(bundle.crop_size), "weights": "weights.pt",
                                   "encoder": json.loads(json.dumps(bundle.encoder, default=str)),
                                   "training": json.loads(json.dumps(bundle.training, default=str))}})
        out.parent.mkdir(parents=True, exist_ok=True)
        save_bioimageio_package(descr, output_path=out)
    return out

