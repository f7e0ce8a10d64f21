"""ResNets with BatchNorm for any input size and channel count: CIFAR layouts and ImageNet ResNet-18.

The ImageNet layout comes at reduced widths, as students for ImageNet-layout teachers.

Reference: He et al., "Deep Residual Learning", CVPR 2016 (CIFAR variant: 3 stages, 6n+2 layers);
Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016. The ``wrn*_post`` models here are
post-activation ResNets at WRN widths (ResNet blocks, not the paper's pre-activation blocks); the
standard pre-activation WRNs with the community checkpoints' keys are ``wrn16_1`` ... ``wrn40_2`` in
:mod:`datafree.models.wresnet`.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import MODELS

__all__ = ["BasicBlock", "ResNet", "ImageNetResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-conv shortcut. Each ReLU is its own module."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = self.make_shortcut(in_planes, planes, stride)
        self.relu2 = nn.ReLU(inplace=True)

    @staticmethod
    def make_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
        """``nn.Identity``, or a 1x1 conv + BN projection where the stride or the width changes."""
        if stride != 1 or in_planes != planes:
            return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def _stages(widths: tuple[int, ...], blocks: int) -> list[nn.Sequential]:
    """One stage of ``blocks`` BasicBlocks per width; every stage after the first halves the resolution."""
    stages, in_planes = [], widths[0]
    for i, w in enumerate(widths):
        stage = []
        for j in range(blocks):
            stage.append(BasicBlock(in_planes, w, stride=2 if (i > 0 and j == 0) else 1))
            in_planes = w
        stages.append(nn.Sequential(*stage))
    return stages


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNet(nn.Module):
    """Three-stage ResNet: stem conv, stages of ``blocks`` BasicBlocks at ``widths``, pool, linear.

    Shape:
        - Input: ``(B, in_channels, H, W)`` for any H, W >= 4.
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self, blocks: int, widths: tuple[int, ...], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3 = _stages(widths, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))  # (B, C) -> (B, num_classes)


def _resnet(depth: int, width: int, num_classes: int, in_channels: int) -> ResNet:
    blocks = (depth - 2) // 6
    return ResNet(blocks, (width, 2 * width, 4 * width), num_classes, in_channels)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-8 (1 block per stage), widths 16-32-64: about 78k parameters."""
    return _resnet(8, 16, num_classes, in_channels)


@MODELS.register("resnet8_half")
def resnet8_half(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-8 at half width (8-16-32): about 20k parameters."""
    return _resnet(8, 8, num_classes, in_channels)


@MODELS.register("resnet8_quarter")
def resnet8_quarter(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-8 at quarter width (4-8-16): about 5k parameters."""
    return _resnet(8, 4, num_classes, in_channels)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-14 (2 blocks per stage), widths 16-32-64."""
    return _resnet(14, 16, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-20 (3 blocks per stage), widths 16-32-64: about 0.27M parameters."""
    return _resnet(20, 16, num_classes, in_channels)


@MODELS.register("wrn16_1_post")
def wrn16_1_post(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """Post-activation WRN-16-1 (2 blocks per stage, widths 16-32-64; not the community layout)."""
    return ResNet(2, (16, 32, 64), num_classes, in_channels)


@MODELS.register("wrn16_2_post")
def wrn16_2_post(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """Post-activation WRN-16-2 (2 blocks per stage, widths 32-64-128; not the community layout)."""
    return ResNet(2, (32, 64, 128), num_classes, in_channels)


@MODELS.register("wrn40_2_post")
def wrn40_2_post(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """Post-activation WRN-40-2 (6 blocks per stage, widths 32-64-128; not the community layout)."""
    return ResNet(6, (32, 64, 128), num_classes, in_channels)


class ImageNetResNet(nn.Module):
    """ResNet-18's ImageNet layout (torchvision's) at any width: the students of ImageNet-layout teachers.

    A 7x7 stride-2 stem and a 3x3 stride-2 max pool, four stages of two BasicBlocks at ``widths``
    (strides 1, 2, 2, 2), global average pooling, linear. The stem leaves the stages 1/16 of the pixels a
    CIFAR layout's first stage runs on (at full resolution), so at 32-224 px
    it is the student a size rule can find under a torchvision ResNet's MACs (:func:`datafree.rules.
    choose_student`: at 64 px every CIFAR-layout student above ResNet-8 costs more than half of
    ResNet-18's MACs). Module names are this module's (``layer1``...), not torchvision's.

    Shape:
        - Input: ``(B, in_channels, H, W)`` for any H, W >= 1 (the total stride is 32).
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self, widths: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3, blocks: int = 2
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(widths, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, C, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))  # (B, C) -> (B, num_classes)


@MODELS.register("resnet18_imagenet_half")
def resnet18_imagenet_half(num_classes: int = 10, in_channels: int = 3) -> ImageNetResNet:
    """ResNet-18's ImageNet layout at half width (32-64-128-256): about 2.8M parameters, 1/4 of the MACs."""
    return ImageNetResNet((32, 64, 128, 256), num_classes, in_channels)


@MODELS.register("resnet18_imagenet_quarter")
def resnet18_imagenet_quarter(num_classes: int = 10, in_channels: int = 3) -> ImageNetResNet:
    """ResNet-18's ImageNet layout at quarter width (16-32-64-128): about 0.7M parameters, 1/16 the MACs."""
    return ImageNetResNet((16, 32, 64, 128), num_classes, in_channels)


@MODELS.register("resnet10_imagenet_quarter")
def resnet10_imagenet_quarter(num_classes: int = 10, in_channels: int = 3) -> ImageNetResNet:
    """ResNet-10 (one block a stage) in ResNet-18's ImageNet layout at quarter width: about 0.31M parameters.

    The default student of torchvision's MobileNetV2 (1/7 of its parameters; :func:`datafree.rules.
    choose_student`, docs/fidelity.md, "Session 25").
    """
    return ImageNetResNet((16, 32, 64, 128), num_classes, in_channels, blocks=1)
