"""Wide ResNets (pre-activation, WRN-d-k) with the community checkpoints' key names.

The WRN of ZSKT, CMI, Fast-Datafree, NAYER and SpaceshipNet: a 3x3 stem at 16 planes, three groups
``block1..3`` of ``(d - 4) / 6`` pre-activation blocks (BN-ReLU-conv, twice) at 16k-32k-64k planes,
a final BN-ReLU, global average pooling and ``fc``. Module names (``blockN.layer.i.{bn1, conv1, bn2,
conv2, convShortcut}``) match those projects' teacher checkpoints, so their ``.pth`` files load
strictly. WRN-40-2 has 2,243,546 parameters at 10 classes.

Reference: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import MODELS

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus a shortcut.

    When the width or stride changes, the shortcut is a 1x1 conv (``convShortcut``) applied to the
    pre-activated input, as in the reference code; otherwise it is the identity on the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout_rate)
        self.equal_in_out = in_planes == out_planes and stride == 1
        # the checkpoints' name; None (no parameters) for the identity shortcut
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pre = self.relu1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class _Group(nn.Module):
    """``n`` blocks under the attribute ``layer`` (the checkpoints' ``blockN.layer.i`` names)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout_rate: float) -> None:
        super().__init__()
        blocks = [
            WideBasicBlock(
                in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout_rate
            )
            for i in range(n)
        ]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width: stem, three groups (strides 1-2-2), BN-ReLU, pool, ``fc``.

    Shape:
        - Input: ``(B, in_channels, H, W)`` for any H, W >= 1 (32x32 in the papers).
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self, depth: int, width: int, num_classes: int = 10, in_channels: int = 3, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        planes = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, 1, 1, bias=False)
        self.block1 = _Group(n, planes[0], planes[1], 1, dropout_rate)
        self.block2 = _Group(n, planes[1], planes[2], 2, dropout_rate)
        self.block3 = _Group(n, planes[2], planes[3], 2, dropout_rate)
        self.bn1 = nn.BatchNorm2d(planes[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(self.pool(x), 1))  # (B, 64 * width) -> (B, num_classes)


@MODELS.register("wrn16_1")
def wrn16_1(num_classes: int = 10, in_channels: int = 3, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-16-1 (pre-activation, community keys): the hardest student of the field's tables."""
    return WideResNet(16, 1, num_classes, in_channels, dropout_rate)


@MODELS.register("wrn16_2")
def wrn16_2(num_classes: int = 10, in_channels: int = 3, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-16-2 (pre-activation, community keys): the WRN-40-2 teacher's usual student."""
    return WideResNet(16, 2, num_classes, in_channels, dropout_rate)


@MODELS.register("wrn40_1")
def wrn40_1(num_classes: int = 10, in_channels: int = 3, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-40-1 (pre-activation, community keys)."""
    return WideResNet(40, 1, num_classes, in_channels, dropout_rate)


@MODELS.register("wrn40_2")
def wrn40_2(num_classes: int = 10, in_channels: int = 3, dropout_rate: float = 0.0) -> WideResNet:
    """WRN-40-2 (pre-activation, community keys): the field's CIFAR WRN teacher."""
    return WideResNet(40, 2, num_classes, in_channels, dropout_rate)
