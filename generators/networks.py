"""The small DCGAN-style generator networks of the online backends, sized from the teacher's input.

All three share one body (Chen et al. 2019, DAFL ``Generator``; Fang et al. 2019, DFAD
``GeneratorA``; Micaelli & Storkey 2019, ZSKT ``Generator``)::

    z (B, latent) -> Linear -> (B, 2w, h0, w0) -> BN -> Up x2 -> Conv3x3(2w) -> BN -> LReLU(0.2)
      -> Up x2 -> Conv3x3(w) -> BN -> LReLU(0.2) -> Conv3x3(C) -> output head

with ``h0 = ceil(H / 4)`` (a final resize makes any ``H, W`` exact) and an output head from the
:data:`OUTPUT_HEADS` table: ``"tanh_bn"`` (Tanh then BatchNorm without affine parameters: DAFL,
DFAD) or ``"bn"`` (BatchNorm with affine parameters, no Tanh: ZSKT). The generator's BatchNorm
layers always use batch statistics (``track_running_stats=False``), as the papers do by never
switching the generator to eval mode; so a generator has no buffers and sampling has no side effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DCGANGenerator", "OUTPUT_HEADS", "make_generator"]


def _tanh_bn(channels: int) -> nn.Module:
    return nn.Sequential(nn.Tanh(), nn.BatchNorm2d(channels, affine=False, track_running_stats=False))


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=True, track_running_stats=False)


# Output head name -> module factory (channels) -> nn.Module.
OUTPUT_HEADS: dict[str, Callable[[int], nn.Module]] = {"tanh_bn": _tanh_bn, "bn": _bn}


class DCGANGenerator(nn.Module):
    """``z -> image`` in the teacher's normalised input space.

    Args:
        latent_dim: size of ``z``.
        out_shape: ``(C, H, W)`` of the teacher's input.
        width: channels of the last hidden stage (``ngf``); the first stage has ``2 * width``.
        output: key of :data:`OUTPUT_HEADS`.
        bn_eps: epsilon of the hidden BatchNorm layers (DAFL uses 0.8 after the convolutions).

    Shape:
        - Input: ``(B, latent_dim)``.
        - Output: ``(B, C, H, W)``.
    """

    def __init__(
        self,
        latent_dim: int,
        out_shape: tuple[int, int, int],
        width: int = 64,
        output: str = "tanh_bn",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        c, h, w = out_shape
        self.latent_dim = latent_dim
        self.out_shape = (int(c), int(h), int(w))
        self.init_hw = (math.ceil(h / 4), math.ceil(w / 4))
        wide = 2 * width
        self.project = nn.Linear(latent_dim, wide * self.init_hw[0] * self.init_hw[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(wide, track_running_stats=False),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(wide, wide, 3, padding=1),
            nn.BatchNorm2d(wide, eps=bn_eps, track_running_stats=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(wide, width, 3, padding=1),
            nn.BatchNorm2d(width, eps=bn_eps, track_running_stats=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, c, 3, padding=1),
        )
        self.head = OUTPUT_HEADS[output](c)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.project(z).view(len(z), -1, *self.init_hw)  # (B, 2w * h0 * w0) -> (B, 2w, h0, w0)
        x = self.body(x)  # (B, C, 4 h0, 4 w0)
        if x.shape[-2:] != self.out_shape[1:]:
            x = F.interpolate(x, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        return self.head(x)


def make_generator(
    latent_dim: int, out_shape: tuple[int, int, int], width: int, output: str, seed: int, bn_eps: float = 1e-5
) -> DCGANGenerator:
    """A :class:`DCGANGenerator` initialised from ``seed`` (the global RNG is left untouched)."""
    if output not in OUTPUT_HEADS:
        raise KeyError(f"unknown generator output head {output!r}; known: {', '.join(OUTPUT_HEADS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DCGANGenerator(latent_dim, out_shape, width, output, bn_eps)
