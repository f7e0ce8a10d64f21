"""Architectures of the teacher suite that are not torchvision models (see assets/train_suite.py).

Each card in the suite cache references this file (copied beside it as ``net.py``) as
``net.py:<builder>``, so a cached teacher loads without the repository. Builders take ``num_classes``.

- ``wrn40_2``: the standard pre-activation Wide ResNet 40-2 (Zagoruyko & Komodakis, BMVC 2016), as in
  xternalz/WideResNet-pytorch and zju-vipa/CMI (same state-dict keys), for 3x32x32.
- ``vgg8_bn``: a CIFAR-style VGG with BatchNorm (conv-BN-ReLU blocks 64-128-256-512-512, max-pool
  between, global average pool, linear head).
- ``plain_cnn``: a BN-less CNN (conv-ReLU-max-pool x3, two linear layers), like the AlexNet-style
  teachers of the DAFL / ZSKT papers' MNIST/CIFAR experiments, scaled down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _WRNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        return y + (x if self.convShortcut is None else self.convShortcut(o))


class _WRNStage(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[_WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Pre-activation WRN-depth-k (standard CIFAR variant)."""

    def __init__(self, depth: int = 40, widen: int = 2, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False)
        self.block1 = _WRNStage(n, w[0], w[1], 1)
        self.block2 = _WRNStage(n, w[1], w[2], 2)
        self.block3 = _WRNStage(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class VGG(nn.Module):
    """CIFAR-style VGG with BatchNorm; ``cfg`` lists conv widths, ``"M"`` a 2x2 max-pool."""

    def __init__(self, cfg: list, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(c, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class PlainCNN(nn.Module):
    """A CNN without normalisation layers: conv-ReLU-pool x3, then two linear layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w[0], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w[0], w[1], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w[1], w[2], 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Linear(w[2] * 16, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.features(x).flatten(1))


def wrn40_2(num_classes: int = 10) -> nn.Module:
    """Standard WRN-40-2 (2.2M parameters at 10 classes)."""
    return WideResNet(40, 2, num_classes)


def wrn16_1(num_classes: int = 10) -> nn.Module:
    """Standard WRN-16-1 (a tiny member of the family, for fast tests)."""
    return WideResNet(16, 1, num_classes)


def vgg8_bn(num_classes: int = 10) -> nn.Module:
    """VGG-8 with BatchNorm: 64-M-128-M-256-M-512-M-512."""
    return VGG([64, "M", 128, "M", 256, "M", 512, "M", 512], num_classes)


def plain_cnn(num_classes: int = 10) -> nn.Module:
    """BN-less CNN, width 32-64-128."""
    return PlainCNN(num_classes)
