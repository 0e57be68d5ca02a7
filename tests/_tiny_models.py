"""Tiny hand-set networks for the inference tests: outputs known without training."""

from __future__ import annotations

import torch


class Pointwise(torch.nn.Module):
    """Logit = 4 x - 1 per pixel: the same in every plane, equivariant under flips and turns."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(4.0)
            self.conv.bias.fill_(-1.0)

    def forward(self, x):
        return self.conv(x)
