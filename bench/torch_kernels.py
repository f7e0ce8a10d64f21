"""PyTorch's BN folding and fake-quantize kernels against datafree's formulas (issue 16's figures).

Prints, for the shipped resnet8_digits: the largest difference between ``fold_bn_weights``
(now ``torch.nn.utils.fusion.fuse_conv_bn_weights``) and the former formula, per weights and
biases; and over 2-8 bits, how many elements ``torch.fake_quantize_per_{channel,tensor}_affine``
puts on another level than ``datafree.quant.fakequant.fake_quantize``, and where their gradients
differ on a ramp. Run: ``PYTHONPATH=. python bench/torch_kernels.py`` (seconds, CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from datafree.cards import load_model  # noqa: E402
from datafree.quant.fakequant import fake_quantize, quant_params, quant_range  # noqa: E402
from datafree.quant.fold import fold_bn_weights  # noqa: E402


def old_fold(weight, bias, mean, var, eps, gamma, beta):  # noqa: ANN001, ANN201
    """The formula datafree used before PyTorch's (datafree/quant/fold.py until issue 16)."""
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    b = bias if bias is not None else torch.zeros_like(mean)
    new_bias = (b - mean) * scale
    if beta is not None:
        new_bias = new_bias + beta
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), new_bias


def channel_mismatches() -> tuple[int, int]:
    """Per-channel weights over 2-8 bits, symmetric and not: elements on another level, and all.

    Asserts (the test relies on it) that no element is more than one step away.
    """
    differ = total = 0
    for bits in range(2, 9):
        for symmetric in (True, False):
            qmin, qmax = quant_range(bits, symmetric)
            w = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1) * 3
            s, z = quant_params(w.amin(dim=(1, 2, 3)), w.amax(dim=(1, 2, 3)), bits, symmetric)
            ours = fake_quantize(w, s.reshape(-1, 1, 1, 1), z.reshape(-1, 1, 1, 1), qmin, qmax)
            theirs = torch.fake_quantize_per_channel_affine(w, s, z.to(torch.int32), 0, qmin, qmax)
            assert ((ours - theirs).abs() <= s.reshape(-1, 1, 1, 1) * 1.001).all()  # at most one step
            differ += int((ours != theirs).sum())
            total += w.numel()
    return differ, total


def main() -> None:
    """Print the comparison."""
    torch.manual_seed(0)
    mods = list(load_model("resnet8_digits").model.modules())
    wd = bd = 0.0
    adjacent = zip(mods, mods[1:], strict=False)
    pairs = [(a, b) for a, b in adjacent if isinstance(a, nn.Conv2d) and isinstance(b, _BatchNorm)]
    for conv, bn in pairs:
        args = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        (w1, b1), (w2, b2) = fold_bn_weights(*args), old_fold(*args)
        wd, bd = max(wd, (w1 - w2).abs().max().item()), max(bd, (b1 - b2).abs().max().item())
    print(f"BN folding, {len(pairs)} conv+BN pairs: max |weight diff| {wd:.3g}, max |bias diff| {bd:.3g}")
    differ, total = channel_mismatches()
    for bits in range(2, 9):
        x = torch.randn(64, 16, 8, 8).relu() * 2
        s2, z2 = quant_params(torch.tensor(-0.5), x.max(), bits, False)
        q2min, q2max = quant_range(bits, False)
        o2 = fake_quantize(x, s2, z2, q2min, q2max)
        z2i = z2.to(torch.int32).reshape(1)
        t2 = torch.fake_quantize_per_tensor_affine(x, s2.reshape(1), z2i, q2min, q2max)
        differ += int((o2 != t2).sum())
        total += x.numel()
    print(
        f"fake quantize forward, 2-8 bits, random weights and activations: {differ} of {total} elements "
        "on another level"
    )
    differ = total = 0
    for bits in range(2, 9):
        qmin, qmax = quant_range(bits, False)
        for scale in torch.rand(50) * 0.2 + 1e-3:  # inputs exactly half a step between two levels
            ties = (torch.arange(qmin, qmax).float() + 0.5) * scale
            ours = fake_quantize(ties, scale, torch.tensor(0.0), qmin, qmax)
            zero = torch.zeros(1, dtype=torch.int32)
            theirs = torch.fake_quantize_per_tensor_affine(ties, scale.reshape(1), zero, qmin, qmax)
            differ += int((ours != theirs).sum())
            total += ties.numel()
    print(f"fake quantize forward, inputs exactly between two levels: {differ} of {total} on another level")
    x = torch.linspace(0, 1, 1001, requires_grad=True)
    scale, zp = torch.tensor(0.05), torch.tensor(3.0)
    (g1,) = torch.autograd.grad(fake_quantize(x, scale, zp, 0, 15).sum(), x)
    t = torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zp.to(torch.int32).reshape(1), 0, 15)
    (g2,) = torch.autograd.grad(t.sum(), x)
    where = x.detach()[g1 != g2]
    span = f"[{where.min():.3f}, {where.max():.3f}]"
    print(
        f"gradient on a ramp (4 bits, grid top 0.6): differs for x in {span} "
        f"(ours {g1[g1 != g2][0]:.0f}, torch's {g2[g1 != g2][0]:.0f})"
    )


if __name__ == "__main__":
    main()
