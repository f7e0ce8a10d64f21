"""Shared test helper: BatchNorm layers with non-trivial running statistics and affine parameters."""

from __future__ import annotations

import torch
from torch import nn


def randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every ``BatchNorm2d`` random running statistics and affine weights; eval mode, frozen."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval().requires_grad_(False)
