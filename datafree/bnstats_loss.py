"""DeepInversion's BN loss from the observed activations of all layers, as one autograd node.

:class:`datafree.bnfold.FoldedBNStatistics` records the tensor each BN layer's statistics come from (a
folded convolution's output or an unfolded BN layer's input); :func:`bn_loss_from_activations` computes
every layer's per-channel mean and biased variance and :class:`datafree.losses.BNStatisticLoss`'s loss
over them in one :class:`torch.autograd.Function`. Per layer only the two reductions that must read the
activation run (a sum and a 2-norm per (sample, channel), as :func:`datafree.stats.channel_mean_var`);
the float64 moments, the shift check (one host check for all layers), the loss and, backward, every
layer's ``dx = a_c + b_c * x`` coefficients are vector operations over all layers' channels at once, and
each layer's input gradient is one inference-BatchNorm pass. Per layer and step that replaces about 15
small operations forward and 7 backward (and two autograd nodes) by 3 and 1: on CPU these small
operations run on one thread with dispatcher cost each, which on a small teacher (resnet8 at 16 px) is a
measurable share of the step (docs/speed.md, "Session 6: one autograd node for the statistics").

Same values and gradients as :func:`channel_mean_var` followed by :class:`BNStatisticLoss` up to fp32
rounding (the shifted sums are used for the same layers, remembered in the same table).

Reference: Yin et al., "Dreaming to Distill", CVPR 2020 (the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .losses import BNStatisticLoss
from .stats import _NEEDS_SHIFT, SHIFT_RATIO, channel_mean_var

__all__ = ["bn_loss_from_activations", "fusable"]


def fusable(acts: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`bn_loss_from_activations` takes these tensors on its one-node path.

    CPU, float32, contiguous (NCHW or ``(N, C)``): the layout whose sums over the trailing dimensions are
    contiguous. Elsewhere (channels_last, GPU) the per-layer path of :func:`channel_mean_var` serves.
    """
    return bool(acts) and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() >= 2 and t.is_contiguous() for t in acts
    )


def bn_loss_from_activations(
    spec: BNStatisticLoss, acts: Sequence[torch.Tensor], keys: Sequence[object], first_layer_weight: float = 1.0
) -> torch.Tensor:
    """``spec``'s loss of the per-channel statistics of ``acts[l]`` (over every dimension but 1).

    Equals ``spec([mean_l], [var_l], first_layer_weight)`` with ``mean_l, var_l =
    channel_mean_var(acts[l], keys[l])``, differentiable with respect to every ``acts[l]``.

    Args:
        spec: the loss's per-layer centers, scales and running variances.
        acts: per layer, the observed activation ``(N, C_l, *)``.
        keys: per layer, the key of :func:`channel_mean_var`'s shift table (the module observed).
        first_layer_weight: the first layer's weight ``s_0``.
    """
    if len(acts) != len(spec.sizes) or any(t.shape[1] != c for t, c in zip(acts, spec.sizes, strict=True)):
        raise ValueError(f"activations of {len(acts)} layers do not match the {len(spec.sizes)} layers")
    if not fusable(acts) or spec.center.dtype != torch.float32 or spec.center.device.type != "cpu":
        means, variances = zip(*(channel_mean_var(t, k) for t, k in zip(acts, keys, strict=True)), strict=True)
        return spec(list(means), list(variances), first_layer_weight)
    return _StatsLossFn.apply(spec, float(first_layer_weight), list(keys), *acts)  # type: ignore[no-any-return]


def _constants(spec: BNStatisticLoss, counts: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-channel constants of the layers' element counts ``n_l``, cached on ``spec`` per shape."""
    cache: dict[tuple[int, ...], dict[str, torch.Tensor]] = spec.__dict__.setdefault("_per_counts", {})
    if counts not in cache:
        n = torch.repeat_interleave(torch.tensor(counts, dtype=torch.float64), torch.tensor(spec.sizes))
        total = int(n.numel())
        cache[counts] = {
            "n": n,  # float64, (C,)
            "inv_n": (1.0 / n).float(),
            "two_inv_n": (2.0 / n).float(),
            "zeros": torch.zeros(total),
            "ones": torch.ones(total),
            "shift_ratio": torch.full((total,), SHIFT_RATIO, dtype=torch.float64),
        }
    return cache[counts]


def _sums(x: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-(sample, channel) sum and 2-norm of ``x`` (shifted by sample 0's channel means when asked)."""
    k = None
    if shift:
        # as channel_mean_var: x - k through inference BatchNorm's kernel (running_var 1, eps 0)
        k = (x.flatten(2) if x.dim() > 2 else x.unsqueeze(2))[0].mean(1)
        x = torch.batch_norm(x, None, None, k, torch.ones_like(k), False, 0.0, 0.0, False)
    xf = x.flatten(2) if x.dim() > 2 else x.unsqueeze(2)
    return xf.sum(2), torch.linalg.vector_norm(xf, dim=2), k


class _StatsLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: BNStatisticLoss, first: float, keys: list, *acts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        layers = len(acts)
        counts = tuple(t.numel() // t.shape[1] for t in acts)
        const = _constants(spec, counts)
        shifted = [k is not None and k in _NEEDS_SHIFT for k in keys]
        parts = [_sums(t, s) for t, s in zip(acts, shifted, strict=True)]
        while True:
            s1 = torch.cat([p[0] for p in parts], 1)  # (N, C): the batch size is every layer's
            norm = torch.cat([p[1] for p in parts], 1)
            sums = torch.stack((s1, norm.square())).to(torch.float64).sum(1)  # (2, C): over N in float64
            mean = sums[0] / const["n"]
            var = sums[1] / const["n"] - mean * mean
            if all(shifted):
                break
            bad = mean * mean > const["shift_ratio"] * var  # the check of channel_mean_var, all layers at once
            if not bool(bad.any()):
                break
            per_layer = torch.zeros(layers, dtype=torch.int64).index_add_(0, spec.segment, bad.long()).tolist()
            redo = [i for i in range(layers) if per_layer[i] and not shifted[i]]
            if not redo:
                break  # only already shifted layers (their shifted mean against their spread): as is
            for i in redo:
                shifted[i] = True
                if keys[i] is not None:
                    _NEEDS_SHIFT[keys[i]] = True  # this layer's next steps go straight to the shifted sums
                parts[i] = _sums(acts[i], True)
        if any(shifted):
            shift = torch.cat([p[2] if p[2] is not None else const["zeros"][: t.shape[1]]
                               for p, t in zip(parts, acts, strict=True)])  # fmt: skip
            mean = mean + shift.to(torch.float64)
        var = var.clamp_min_(0).float()
        mean = mean.float()
        # the loss: _BNStatisticLossFn's forward on the concatenated statistics
        dm = mean - spec.center
        if spec.scale is not None:
            dm = dm * spec.scale
            var = var * spec.scale2
        d = torch.stack((dm, var - spec.running_var))  # (2, C)
        sq = torch.zeros((2, layers), dtype=d.dtype).index_add_(1, spec.segment, d * d)
        norms = sq.sqrt()  # (2, L)
        weights = torch.ones(layers, dtype=d.dtype)
        weights[0] = first
        ctx.save_for_backward(d, norms, weights, mean, *acts)
        ctx.spec, ctx.const = spec, const
        return (norms.sum(0) * weights).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        d, norms, weights, mean, *acts = ctx.saved_tensors
        spec: BNStatisticLoss = ctx.spec
        const = ctx.const
        coef = torch.where(norms > 0, weights * grad / norms, torch.zeros_like(norms))  # (2, L)
        g = coef.index_select(1, spec.segment) * d  # (2, C): d loss / d dm, d loss / d dv
        if spec.scale is not None:
            g = g * torch.stack((spec.scale, spec.scale2))  # type: ignore[arg-type]
        # d mean / dx = 1/n ; d var / dx = 2 (x - mean) / n  ->  dx = a_c + b_c * x, every layer at once
        b = const["two_inv_n"] * g[1]
        a = torch.addcmul(g[0] * const["inv_n"], b, mean, value=-1.0)
        # per layer one inference-BatchNorm pass (running stats 0 / 1, eps 0) computes b_c * x + a_c
        zeros, ones = const["zeros"].split(spec.sizes), const["ones"].split(spec.sizes)
        dxs = [torch.batch_norm(x, bl, al, z, o, False, 0.0, 0.0, False)
               for x, bl, al, z, o in zip(acts, b.split(spec.sizes), a.split(spec.sizes), zeros, ones, strict=True)]  # fmt: skip
        return (None, None, None, *dxs)
