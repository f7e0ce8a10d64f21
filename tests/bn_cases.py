"""Shared test helpers: BatchNorm layers with non-trivial statistics; a BN-less teacher at 3x32x32."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from datafree.cards import LoadedModel


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


def plain_32(base: LoadedModel) -> LoadedModel:
    """A BN-less teacher with 3x32x32 inputs (LeNet-style: conv, pool, linear; random weights, seed 0).

    Its card is ``base``'s with that input shape.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * 7 * 7, 10)
    )
    card = dataclasses.replace(base.card, input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3)
    return LoadedModel(model.eval(), card)
