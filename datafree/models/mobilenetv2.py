"""MobileNetV2 as the CIFAR data-free KD codebases use it, with their checkpoints' key names.

CMI and Fast-Datafree register ``mobilenetv2`` as the standard (ImageNet-layout) MobileNetV2 applied
to 32x32 inputs: a stride-2 3x3 stem at 32 channels, the 17 inverted-residual blocks of the paper,
a 1x1 conv to 1280 channels, global average pooling and ``classifier = [Dropout(0.2), Linear]``.
Module names (``features.i.conv...``, ``classifier.1``) are those checkpoints' (and torchvision's).

Reference: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import MODELS

__all__ = ["MobileNetV2"]

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% down (the reference rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(
    in_planes: int, out_planes: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """conv-BN-ReLU6 as one ``Sequential`` (keys ``.0`` conv, ``.1`` BN)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (when t > 1), 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width multiplier ``width_mult``), ``features`` then ``classifier``.

    Shape:
        - Input: ``(B, in_channels, H, W)``; the total stride is 32 (1x1 features at 32x32).
        - Output: ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        channels = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, channels, stride=2)]
        for t, c, n, s in _SETTING:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        features.append(_conv_bn_relu6(channels, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))  # (B, 1280) -> (B, num_classes)


@MODELS.register("mobilenetv2_cifar")
def mobilenetv2_cifar(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 as CMI/Fast-Datafree use it on CIFAR (stride-2 stem; community keys)."""
    return MobileNetV2(num_classes, in_channels, width_mult)
