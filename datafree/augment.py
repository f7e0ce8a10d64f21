"""Batched augmentation on tensors (per-sample random parameters, differentiable).

DeepInversion uses a random roll ("jitter") and an optional flip of the whole batch each step;
the KD stage uses kornia's random crop with padding (and an optional flip).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "random_jitter",
    "random_flip",
    "kd_augmentation",
    "mix_batch",
    "BatchOp",
    "contrast_batch",
    "kd_transform",
]


# Up to this many elements the jitter is torch.roll: two ATen ops forward and two backward (one pass over
# the batch per rolled dimension) cost less than _roll2d's 42 slicing and copy operations; above it the
# one-pass block copies win. Same values either way. Forward+backward at 1 thread on the 2-vCPU machine
# (bench/jitter_roll.py, bench/results/jitter_roll_s7b.json): roll 65 against 108 us at 128x1x16x16
# (33k elements), 300 against 305 us at 128x3x24x24 (221k), 567 against 454 us at 128x3x32x32 (393k).
ROLL_MAX_NUMEL = 1 << 17


def random_jitter(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll the whole batch by one random offset in ``[-max_shift, max_shift]`` along H and W."""
    if max_shift <= 0:
        return x
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    if x.dim() != 4 or x.numel() <= ROLL_MAX_NUMEL:
        return torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    return _Roll2d.apply(x, dx, dy)  # type: ignore[no-any-return]


def _roll2d(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """``torch.roll(x, (sh, sw), (2, 3))`` as four block copies into one new tensor (one pass)."""
    h, w = x.shape[2], x.shape[3]
    sh, sw = sh % h, sw % w
    out = torch.empty_like(x)
    for o_h, i_h in ((slice(sh, h), slice(0, h - sh)), (slice(0, sh), slice(h - sh, h))):
        for o_w, i_w in ((slice(sw, w), slice(0, w - sw)), (slice(0, sw), slice(w - sw, w))):
            out[:, :, o_h, o_w].copy_(x[:, :, i_h, i_w])
    return out


class _Roll2d(torch.autograd.Function):
    """The jitter's roll of H and W: torch.roll copies once per rolled dimension, forward and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:  # type: ignore[override]
        ctx.shifts = (sh, sw)
        return _roll2d(x, sh, sw)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        sh, sw = ctx.shifts
        return _roll2d(grad, -sh, -sw), None, None


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip the whole batch horizontally with probability 1/2."""
    if torch.rand((), generator=generator).item() < 0.5:
        return torch.flip(x, dims=(3,))
    return x


def kd_augmentation(
    input_shape: tuple[int, int, int] | list[int], flip: bool = False, affine: float = 0.0
) -> nn.Module:
    """Random crop with padding H/8 (and optional horizontal flip), per sample, via kornia.

    ``affine`` > 0 adds a random affine warp after the crop: rotation up to ``affine`` degrees, scale in
    ``1 +- affine / 100`` (border pixels repeated).
    """
    import kornia.augmentation as K

    _, h, w = input_shape
    pad = max(1, h // 8)
    ops: list[nn.Module] = [K.RandomCrop((h, w), padding=pad, padding_mode="replicate")]
    if affine > 0:
        scale = (1 - affine / 100, 1 + affine / 100)
        ops.append(K.RandomAffine(degrees=affine, scale=scale, padding_mode="border", p=1.0))
    if flip:
        ops.append(K.RandomHorizontalFlip())
    return nn.Sequential(*ops)


def mix_batch(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mixup of a batch with a shuffled copy of itself: ``lam * x + (1 - lam) * x[perm]``.

    ``lam ~ Beta(alpha, alpha)`` per image (Zhang et al., "mixup", ICLR 2018), drawn from the global torch
    RNG (saved in KD checkpoints). In KD the teacher labels the mixed image itself, so no label is mixed:
    the student matches the teacher between the images too ("function matching", Beyer et al., "Knowledge
    distillation: a good teacher is patient and consistent", CVPR 2022).
    """
    n = x.shape[0]
    if n < 2:
        return x
    lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
    perm = torch.randperm(n)
    lam = lam.to(x.device, x.dtype).view(n, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[perm.to(x.device)]


def contrast_batch(x: torch.Tensor, spread: float) -> torch.Tensor:
    """Each image's contrast scaled about its own per-channel mean by a random factor.

    The factor is ``exp(u)``, ``u ~ U(-log(1 + spread), log(1 + spread))`` per image, drawn from the global
    torch RNG (saved in KD checkpoints). Per channel an affine map of the pixels, so the same in pixel and
    normalised space; no label is assumed to survive it (the teacher labels the new image).
    """
    n = x.shape[0]
    r = math.log1p(float(spread))
    s = torch.exp((torch.rand(n) * 2 - 1) * r).to(x.device, x.dtype).view(n, *([1] * (x.dim() - 1)))
    mean = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    return mean + s * (x - mean)


class BatchOp(nn.Module):
    """A batch function of one parameter as a module: ``fn(x, value)`` (:func:`mix_batch`, ...)."""

    def __init__(self, fn: Callable[[torch.Tensor, float], torch.Tensor], value: float) -> None:
        super().__init__()
        self.fn, self.value = fn, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fn(x, self.value)


def kd_transform(
    input_shape: tuple[int, int, int] | list[int],
    augment: bool,
    flip: bool = False,
    mixup: float = 0.0,
    affine: float = 0.0,
    contrast: float = 0.0,
) -> nn.Module:
    """What the KD stage applies to each student batch: crop (warp, flip), contrast, then mixup.

    The crop when ``augment``, the contrast (:func:`contrast_batch`) when ``contrast`` > 0;
    ``nn.Identity`` when none is on.
    """
    ops: list[nn.Module] = [kd_augmentation(input_shape, flip, affine)] if augment else []
    if contrast > 0:
        ops.append(BatchOp(contrast_batch, contrast))
    if mixup > 0:
        ops.append(BatchOp(mix_batch, mixup))
    return nn.Sequential(*ops) if ops else nn.Identity()
