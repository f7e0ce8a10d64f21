"""Batched augmentation on tensors (per-sample random parameters, differentiable).

DeepInversion uses a random roll ("jitter") and an optional flip of the whole batch each step;
the KD stage uses kornia's random crop with padding (and an optional flip).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["random_jitter", "random_flip", "kd_augmentation"]


def random_jitter(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll the whole batch by one random offset in ``[-max_shift, max_shift]`` along H and W."""
    if max_shift <= 0:
        return x
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dx, dy), dims=(2, 3))


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip the whole batch horizontally with probability 1/2."""
    if torch.rand((), generator=generator).item() < 0.5:
        return torch.flip(x, dims=(3,))
    return x


def kd_augmentation(input_shape: tuple[int, int, int] | list[int], flip: bool = False) -> nn.Module:
    """Random crop with padding H/8 (and optional horizontal flip), per sample, via kornia."""
    import kornia.augmentation as K

    _, h, w = input_shape
    pad = max(1, h // 8)
    ops: list[nn.Module] = [K.RandomCrop((h, w), padding=pad, padding_mode="replicate")]
    if flip:
        ops.append(K.RandomHorizontalFlip())
    return nn.Sequential(*ops)
