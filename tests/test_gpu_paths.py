"""The CUDA paths (mixed precision, pinned transfers, cuDNN autotuning): skipped without a GPU.

On a GPU machine: ``pytest -m gpu`` (benchmarks/gpu_session.sh runs it first).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cem.synthetic import make_em_volume

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def sample():
    vol = make_em_volume((4, 256, 256), isotropic=True, seed=5)
    painted = (vol.labels == 2).astype(np.uint8)  # mitochondria; complete slices
    return vol.image, painted


def test_finetune_on_cuda_learns_in_mixed_precision(sample):
    import torch

    from napari_cem.model import predict_slice
    from napari_cem.train import run_finetune

    image, painted = sample
    steps = []
    bundle = run_finetune(image, painted, classes=["mito"], complete_slices=True, iterations=60,
                          crop_size=128, batch_size=8, device="cuda", callback=steps.append)
    assert bundle.training["device"].startswith("cuda")
    assert bundle.training["amp"] in ("bfloat16", "float16")
    assert np.mean([s.loss for s in steps[-10:]]) < np.mean([s.loss for s in steps[:10]])
    assert steps[-1].train_iou is not None and steps[-1].train_iou > 0.3
    assert next(bundle.model.parameters()).device.type == "cuda"
    pred = predict_slice(bundle, image[0], torch.device("cuda"))
    assert pred.shape == image[0].shape


def test_segment_on_cuda_matches_float32(sample):
    import torch

    from napari_cem.infer import segment
    from napari_cem.model import build_unet

    image, _ = sample
    torch.manual_seed(0)
    bundle = type("B", (), {"model": build_unet(1).eval(), "classes": ["background", "mito"],
                            "norms": (0.5, 0.25)})()
    fast = segment(image, bundle, device="cuda")  # auto: reduced precision, checked
    exact = segment(image, bundle, device="cuda", precision="float32")
    assert fast.metadata["device"].startswith("cuda")
    assert fast.labels.shape == image.shape
    assert (fast.labels == exact.labels).mean() > 0.99
    ortho = segment(image, bundle, device="cuda", mode="orthoplane", voxel_size=(8, 8, 8))
    assert ortho.labels.shape == image.shape


def test_pretrain_on_cuda_writes_a_checkpoint_the_loader_takes(tmp_path):
    import tifffile

    from napari_cem.model import build_unet
    from napari_cem.pretrain import PretrainConfig, pretrain
    from napari_cem.weights import load_encoder_weights

    rng = np.random.default_rng(0)
    (tmp_path / "p").mkdir()
    for i in range(32):
        tifffile.imwrite(tmp_path / "p" / f"{i}.tif", rng.integers(0, 255, (96, 96), dtype=np.uint8))
    config = PretrainConfig(epochs=2, batch_size=16, queue_size=64, crop=64)
    logs = list(pretrain(tmp_path / "p", tmp_path / "out", config, device="cuda"))
    assert len(logs) == 2 and np.isfinite(logs[-1].loss)
    info = load_encoder_weights(build_unet(1), tmp_path / "out" / "checkpoint.pth.tar", download=False)
    assert info["n_tensors_loaded"] == info["n_encoder_tensors"]
