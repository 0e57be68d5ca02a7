"""Issue 17: would caching a frozen encoder's features pay? The ceiling of the gain, measured
before building it.

With the encoder frozen, a training step is the encoder's forward without autograd, then the
decoder's forward and backward and the optimiser step. Features cached once per painted
slice (and per exact quarter turn / flip) would remove the encoder's forward from every step
and nothing else, and would lose the intensity augmentation and the crop positions that do
not fall on the encoder's 32 px grid. So the most a cache can give is

    (frozen step) / (the same step from features already computed)

measured here side by side on this CPU, for each architecture, in the training precision
our ``finetune`` picks here (``amp auto``: bf16 on CPUs with native bf16) and in float32
(the path of CPUs without it); batch 8, crop 256, random crops of a VNC slice.

    PYTHONPATH=src python benchmarks/bench_feature_cache.py --rows
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from _harness import VNC_DIR, bench_parser, noted, publish, row, vnc_missing  # noqa: E402


def _steps(model, x, y, precision, cached, n: int) -> float:
    """Median seconds of *n* frozen-encoder steps (after one warm-up)."""
    import torch

    from napari_cem.model import _decoder_takes_list, forward_logits
    from napari_cem.train import masked_loss

    params = [p for p in model.decoder.parameters()] + [p for p in model.segmentation_head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    with torch.no_grad(), precision.autocast("cpu"):
        features = [f.detach() for f in model.encoder(x)]
    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        with precision.autocast("cpu"):
            if cached:
                decoded = (model.decoder(features) if _decoder_takes_list(model.decoder)
                           else model.decoder(*features))
                logits = model.segmentation_head(decoded)
            else:
                logits = forward_logits(model, x, encoder_grad=False)
        loss = masked_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    import tifffile
    import torch

    from napari_cem.device import Precision, autocast_policy, describe_device
    from napari_cem.model import build_unet
    from napari_cem.train import _freeze, _set_modes

    p = bench_parser(__doc__)
    p.add_argument("--archs", default="resnet50,resnet18-slim")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    if vnc_missing():
        return 0
    image = tifffile.imread(VNC_DIR / "stack1_image.tif")[0]
    rng = np.random.default_rng(0)
    crops = np.stack([image[y:y + 256, x:x + 256] for y, x in rng.integers(0, 1024 - 256, (8, 2))])
    x = torch.from_numpy(((crops.astype(np.float32) / 255.0 - 0.58) / 0.10)[:, None])
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy((crops < 100).astype(np.uint8))
    device = torch.device("cpu")
    auto = autocast_policy(device, "auto", "training", describe_device(device))
    precisions = [auto] + ([Precision("float32")] if auto.name != "float32" else [])
    parts = []
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = build_unet(1, arch).to(memory_format=torch.channels_last)
        _freeze(model, "encoder")
        _set_modes(model, "encoder")
        for precision in precisions:
            full = _steps(model, x, y, precision, cached=False, n=args.steps)
            cached = _steps(model, x, y, precision, cached=True, n=args.steps)
            parts.append(f"{arch} {precision.name}: frozen step {full:.2f} s, from cached features "
                         f"{cached:.2f} s, ceiling {full / cached:.2f}x")
    rows = [row("frozen-encoder training step vs the same step from cached encoder features (the most a "
                f"feature cache can give), batch 8, crop 256, VNC crops, cpu, median of {args.steps} steps",
                noted("; ".join(parts), args.note))]
    publish(rows, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
