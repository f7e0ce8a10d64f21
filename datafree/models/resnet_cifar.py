"""Four-stage CIFAR ResNets (ResNet-18/34/50) with the community checkpoints' key names.

The variant of DAFL, CMI, Fast-Datafree, NAYER and SpaceshipNet: a 3x3 stride-1 stem without
max-pool, stages of 64-128-256-512 planes, global average pooling and a linear layer named
``linear``. Module names (``conv1``, ``bn1``, ``layer1..4``, ``shortcut``, ``linear``) match the
teacher checkpoints those projects share, so their ``.pth`` files load strictly. Each ReLU is its own
module (they hold no weights, so the keys are unchanged).

Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet import BasicBlock
from .zoo import MODELS

__all__ = ["CifarBasicBlock", "CifarBottleneck", "CifarResNet"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity (an empty ``Sequential``, as in the checkpoints) or a 1x1 conv + BN projection."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class CifarBasicBlock(BasicBlock):
    """Two 3x3 conv-BN layers plus a shortcut (:class:`BasicBlock` with the checkpoints' identity)."""

    expansion = 1
    make_shortcut = staticmethod(_shortcut)


class CifarBottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), each with BN, plus a shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3 (stride 1), four stages at 64-128-256-512 planes (strides 1-2-2-2), pool, ``linear``.

    Shape:
        - Input: ``(B, in_channels, H, W)`` for any H, W >= 1 (32x32 in the papers).
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self,
        block: type[CifarBasicBlock] | type[CifarBottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.pool(x), 1))  # (B, 512 * expansion) -> (B, num_classes)


@MODELS.register("resnet18_cifar")
def resnet18_cifar(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-18 (3x3 stem, no max-pool; CMI/DAFL keys): the usual data-free KD student."""
    return CifarResNet(CifarBasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@MODELS.register("resnet34_cifar")
def resnet34_cifar(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-34 (CMI/DAFL keys): the field's CIFAR teacher (ResNet-34 -> ResNet-18)."""
    return CifarResNet(CifarBasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@MODELS.register("resnet50_cifar")
def resnet50_cifar(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-50 with bottleneck blocks (CMI/DAFL keys)."""
    return CifarResNet(CifarBottleneck, (3, 4, 6, 3), num_classes, in_channels)
