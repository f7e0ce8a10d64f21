"""CIFAR VGG-8/11/13 with BatchNorm and the community checkpoints' key names.

The VGG of RepDistiller, CMI and Fast-Datafree: five conv groups ``block0..4`` (conv3x3 with bias,
BN, ReLU; the group's last ReLU is applied outside it), max-pools ``pool0..3`` between them, global
average pooling ``pool4`` and one linear ``classifier``. At 32x32 the pool before ``block4`` is
skipped, as in the reference code (which applies it only to 64x64 inputs): pass
``pool_before_block4=True`` (``arch_kwargs`` in a card) for a 64x64 model. Module names match the
teacher checkpoints those projects share, so their ``.pth`` files load strictly.

Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks", ICLR 2015.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import MODELS

__all__ = ["CifarVGG"]

# conv widths per group (the reference code's configurations S, A and B)
_GROUPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _group(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    """conv-BN-ReLU per width, without the last ReLU (the network applies it)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class CifarVGG(nn.Module):
    """Five BN conv groups with max-pools between them, global average pooling, ``classifier``.

    Shape:
        - Input: ``(B, in_channels, H, W)`` for any H, W >= 8 (32x32 in the papers).
        - Output: ``(B, num_classes)``.
    """

    def __init__(
        self,
        groups: tuple[tuple[int, ...], ...],
        num_classes: int = 10,
        in_channels: int = 3,
        pool_before_block4: bool = False,
    ) -> None:
        super().__init__()
        ins = [in_channels] + [g[-1] for g in groups[:-1]]
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _group(g, c) for g, c in zip(groups, ins, strict=True)
        )
        self.pool0, self.pool1, self.pool2 = (nn.MaxPool2d(2, 2) for _ in range(3))
        self.pool3: nn.Module = nn.MaxPool2d(2, 2) if pool_before_block4 else nn.Identity()
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.relu0, self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU(inplace=True) for _ in range(5))
        self.classifier = nn.Linear(groups[-1][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.pool3(self.relu3(self.block3(x)))
        x = self.relu4(self.block4(x))
        return self.classifier(torch.flatten(self.pool4(x), 1))  # (B, 512) -> (B, num_classes)


@MODELS.register("vgg8_cifar")
def vgg8_cifar(num_classes: int = 10, in_channels: int = 3, pool_before_block4: bool = False) -> CifarVGG:
    """CIFAR VGG-8 with BN (community keys): the VGG-13 teacher's usual student."""
    return CifarVGG(_GROUPS["vgg8"], num_classes, in_channels, pool_before_block4)


@MODELS.register("vgg11_cifar")
def vgg11_cifar(num_classes: int = 10, in_channels: int = 3, pool_before_block4: bool = False) -> CifarVGG:
    """CIFAR VGG-11 with BN (community keys): the VGG11 -> ResNet-18 teacher of CMI's tables."""
    return CifarVGG(_GROUPS["vgg11"], num_classes, in_channels, pool_before_block4)


@MODELS.register("vgg13_cifar")
def vgg13_cifar(num_classes: int = 10, in_channels: int = 3, pool_before_block4: bool = False) -> CifarVGG:
    """CIFAR VGG-13 with BN (community keys)."""
    return CifarVGG(_GROUPS["vgg13"], num_classes, in_channels, pool_before_block4)
