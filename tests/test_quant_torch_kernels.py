"""PyTorch's own kernels against the formulas datafree used before (issue 16).

BN folding now uses ``torch.nn.utils.fusion`` (the numbers below are why); the straight-through
fake quantizer stays datafree's own: ``torch.fake_quantize_per_*_affine`` rounds ``x * (1/scale)``
instead of ``x / scale`` (inputs exactly between two levels often round the other way; random
inputs agree) and its gradient at the top of the grid differs (ours is cut where the clamp binds,
from the last level on; torch's passes up to half a step beyond the grid), so switching would
change the numbers and the training. bench/torch_kernels.py prints the figures.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.torch_kernels import channel_mismatches, old_fold
from datafree.quant.fakequant import fake_quantize
from datafree.quant.fold import fold_batchnorm, fold_bn_weights


def _conv_bn_pairs(model: nn.Module):
    mods = list(model.modules())
    pairs = zip(mods, mods[1:], strict=False)
    return [(a, b) for a, b in pairs if isinstance(a, nn.Conv2d) and isinstance(b, _BatchNorm)]


def test_bn_folding_matches_the_old_formula(bn_teacher):
    pairs = _conv_bn_pairs(bn_teacher.model)
    assert len(pairs) >= 5
    for conv, bn in pairs:
        args = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        w_new, b_new = fold_bn_weights(*args)
        w_old, b_old = old_fold(*args)
        assert torch.equal(w_new, w_old.detach())  # bit for bit
        torch.testing.assert_close(b_new, b_old.detach(), rtol=0, atol=1e-6)  # the order of the products


def test_bn_folding_without_affine_and_with_bias():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4, affine=False)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    args = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, None, None)
    for new, old in zip(fold_bn_weights(*args), old_fold(*args), strict=True):
        torch.testing.assert_close(new, old.detach(), rtol=0, atol=1e-6)


def test_folded_network_agrees_with_the_float_one(bn_teacher):
    x = torch.randn(16, *bn_teacher.card.input_shape)
    with torch.no_grad():
        folded = fold_batchnorm(bn_teacher.model)(x)
        torch.testing.assert_close(folded, bn_teacher.model(x), atol=1e-4, rtol=1e-4)


def test_torch_fake_quantize_is_close_but_not_equal_to_ours():
    """Why datafree keeps its quantizer: forward within one step, gradient cut at other points."""
    torch.manual_seed(0)
    differ, total = channel_mismatches()  # asserts at most one step apart
    assert differ / total < 1e-3
    # the gradient: the same inside the grid, not at its top (measured: ours is zero from the last
    # level on, where the clamp binds; torch's passes up to half a step beyond it)
    x = torch.linspace(0, 1, 1001, requires_grad=True)
    scale, zp, qmin, qmax = torch.tensor(0.05), torch.tensor(3.0), 0, 15  # last level: x in [0.575, 0.625)
    (g_ours,) = torch.autograd.grad(fake_quantize(x, scale, zp, qmin, qmax).sum(), x)
    zp_int = zp.to(torch.int32).reshape(1)
    theirs = torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zp_int, qmin, qmax)
    (g_torch,) = torch.autograd.grad(theirs.sum(), x)
    xs = x.detach()
    below, top, beyond = xs < 0.575 - 1e-6, (xs > 0.575 + 1e-6) & (xs < 0.625 - 1e-6), xs > 0.625 + 1e-6
    assert torch.equal(g_ours[below], g_torch[below]) and (g_ours[below] == 1).all()
    assert (g_ours[top] == 0).all() and (g_torch[top] == 1).all()
    assert (g_ours[beyond] == 0).all() and (g_torch[beyond] == 0).all()
