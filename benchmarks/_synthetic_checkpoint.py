"""A stand-in for the released CEM500K checkpoint (not downloadable here), for the BatchNorm
question of issue 17: a ResNet50 in the released file's MoCoV2 layout (``module.encoder_q.*``
beside an ``encoder_k`` copy and the queue, ``norms``), whose BatchNorm statistics come from
*other* EM data than the volume it is fine-tuned on, as the released ones come from CEM500K.

The convolutions keep their random (Kaiming) start: what is measured is only whether keeping
the checkpoint's statistics or adapting them to the target data trains the better decoder.
The statistics are the cumulative mean over 24 batches of 16 crops (224 px) of napari-cem's
synthetic EM sample (``napari_cem.synthetic``), in train mode without gradients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_released_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the checkpoint at *path* (once) and return *path*."""
    if path.is_file():
        return path
    import torch

    from napari_cem._atomic import atomic_path
    from napari_cem.model import build_unet
    from napari_cem.synthetic import make_em_volume

    torch.manual_seed(seed)
    encoder = build_unet(1, "resnet50").encoder
    volume = make_em_volume((24, 512, 512), isotropic=False, seed=seed).image
    mean, std = float(volume.mean() / 255), float(volume.std() / 255)
    rng = np.random.default_rng(seed)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over all batches
    encoder.train()
    with torch.no_grad():
        for z in range(volume.shape[0]):
            ys, xs = rng.integers(0, 512 - 224, (2, 16))
            crops = np.stack([volume[z, y:y + 224, x:x + 224] for y, x in zip(ys, xs)])
            encoder(torch.from_numpy((crops.astype(np.float32) / 255 - mean) / std)[:, None])
    state = {}
    for k, v in encoder.state_dict().items():
        state[f"module.encoder_q.{k}"] = v
        state[f"module.encoder_k.{k}"] = v
    for enc in ("encoder_q", "encoder_k"):
        state[f"module.{enc}.fc.0.weight"] = torch.zeros(2048, 2048)
        state[f"module.{enc}.fc.0.bias"] = torch.zeros(2048)
        state[f"module.{enc}.fc.2.weight"] = torch.zeros(128, 2048)
        state[f"module.{enc}.fc.2.bias"] = torch.zeros(128)
    state["module.queue"] = torch.zeros(128, 4096)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    checkpoint = {"epoch": 0, "arch": "resnet50", "state_dict": state, "optimizer": {}, "norms": [mean, std]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path
