"""Architectures of the teacher suite that are not torchvision models (see assets/train_suite.py).

The suite's WRN-40-2 is the zoo's registered ``wrn40_2`` (datafree/models/wresnet.py). Each card in
the suite cache that uses a builder here references this file (copied beside it as ``net.py``) as
``net.py:<builder>``, so a cached teacher loads without the repository. Builders take ``num_classes``.

- ``vgg8_bn``: a CIFAR-style VGG with BatchNorm (conv-BN-ReLU blocks 64-128-256-512-512, max-pool
  between, global average pool, linear head).
- ``vgg8``: the same VGG without BatchNorm (conv with bias, ReLU), like torchvision's ``vgg11``/``vgg16``.
- ``plain_cnn``: a BN-less CNN (conv-ReLU-max-pool x3, two linear layers), like the AlexNet-style
  teachers of the DAFL / ZSKT papers' MNIST/CIFAR experiments, scaled down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VGG(nn.Module):
    """CIFAR-style VGG, BatchNorm unless ``batchnorm=False``; ``cfg``: conv widths, ``"M"`` a max-pool."""

    def __init__(
        self, cfg: list, num_classes: int = 10, in_channels: int = 3, batchnorm: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:  # conv (a bias only without BN), BN, ReLU: the same layer indices as before BN was optional
                norm = [nn.BatchNorm2d(v)] if batchnorm else []
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=not batchnorm), *norm, nn.ReLU(inplace=True)]
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


def vgg8_bn(num_classes: int = 10) -> nn.Module:
    """VGG-8 with BatchNorm: 64-M-128-M-256-M-512-M-512."""
    return VGG([64, "M", 128, "M", 256, "M", 512, "M", 512], num_classes)


def vgg8(num_classes: int = 10) -> nn.Module:
    """VGG-8 without BatchNorm: 64-M-128-M-256-M-512-M-512, conv with bias."""
    return VGG([64, "M", 128, "M", 256, "M", 512, "M", 512], num_classes, batchnorm=False)


def plain_cnn(num_classes: int = 10) -> nn.Module:
    """BN-less CNN, width 32-64-128."""
    return PlainCNN(num_classes)
