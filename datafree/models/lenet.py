"""LeNet-5, with and without BatchNorm, for any input size.

Reference: LeCun et al. 1998; the BN-less LeNet-5 is the MNIST teacher of DAFL and DFAD.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import MODELS

__all__ = ["LeNet5"]


class LeNet5(nn.Module):
    """conv5-pool-conv5-pool-fc-fc-fc, optionally with BatchNorm after each conv and hidden fc.

    The spatial size after the convs is pooled to 4x4 so any input of at least 8x8 works.

    Shape:
        - Input: ``(B, in_channels, H, W)``.
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, batchnorm: bool = False
    ) -> None:
        super().__init__()
        c1, c2, f1, f2 = (max(1, round(c * width)) for c in (6, 16, 120, 84))

        def norm(c: int, two_d: bool = True) -> nn.Module:
            if not batchnorm:
                return nn.Identity()
            return nn.BatchNorm2d(c) if two_d else nn.BatchNorm1d(c)

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            norm(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            norm(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 16, f1), norm(f1, False), nn.ReLU(inplace=True),
            nn.Linear(f1, f2), norm(f2, False), nn.ReLU(inplace=True),
            nn.Linear(f2, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(torch.flatten(self.features(x), 1))  # (B, c2*16) -> (B, classes)


@MODELS.register("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 without BatchNorm (the DAFL/DFAD MNIST teacher)."""
    return LeNet5(num_classes, in_channels)


@MODELS.register("lenet5_half")
def lenet5_half(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5-half without BatchNorm (the DAFL/DFAD MNIST student)."""
    return LeNet5(num_classes, in_channels, width=0.5)


@MODELS.register("lenet5_bn")
def lenet5_bn(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 with BatchNorm after every conv and hidden linear layer."""
    return LeNet5(num_classes, in_channels, batchnorm=True)


@MODELS.register("lenet5_half_bn")
def lenet5_half_bn(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5-half with BatchNorm."""
    return LeNet5(num_classes, in_channels, width=0.5, batchnorm=True)
