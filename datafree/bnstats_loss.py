"""DeepInversion's BN loss from the observed activations of all layers, as one autograd node.

:class:`datafree.bnfold.FoldedBNStatistics` (``one_node=True``; DeepInversion's ``one_node_stats``) records
the tensor each BN layer's statistics come from (a folded convolution's output or an unfolded BN layer's
input). Per layer only the two reductions that must read the activation run, in the layer's hook while it
is in cache (:func:`layer_sums`: a sum and a 2-norm per (sample, channel), as
:func:`datafree.stats.channel_mean_var`, through a small "tap" node); :func:`bn_loss_from_activations`
then computes the float64 moments, the precision check (one host check for all layers), the loss of
:class:`datafree.losses.BNStatisticLoss` and every layer's ``dx = a_c + b_c * x`` coefficients as vector
operations over all layers' channels at once (on the host, numpy: a few hundred to ten thousand channels),
the coefficients already in the forward so that the backward only scales them; each tap turns its
layer's coefficients into ``dx`` (one inference-BatchNorm pass) when the engine reaches that layer. On
resnet8 at 16 px the step runs 340 ATen operations instead of the per-layer path's 551 (docs/speed.md,
"Session 6: one autograd node for the statistics" and "Session 7"; DeepInversion's default since session 7).
While a batch's observed activations are small (:data:`datafree.bnfold.TAP_MIN_BYTES`, session 8) there
are no taps: the loss's node takes the sums itself and its backward makes every layer's ``dx`` at once (no
per-layer nodes; at most that many bytes of gradients held together).

Same values and gradients as :func:`channel_mean_var` followed by :class:`BNStatisticLoss` up to fp32
rounding: the same sums and the same precision check (a channel's mean against its spread,
:data:`datafree.stats.SHIFT_RATIO`), with one difference in how shifts are chosen: instead of shifting a
layer for good once it needed it (which on resnet8 at 16 px meant every step after the random first
pixels), a layer is shifted on a step when the previous step's statistics were near needing it, by the
previous step's batch means (no extra operation to find the shift); a miss is caught by the check.

Reference: Yin et al., "Dreaming to Distill", CVPR 2020 (the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .losses import BNStatisticLoss
from .stats import SHIFT_RATIO, channel_mean_var, channel_sums, sample0_means

__all__ = ["bn_loss_from_activations", "forget_shifts", "fusable", "layer_sums"]


def fusable(acts: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`bn_loss_from_activations` takes these tensors on its one-node path.

    CPU, float32, contiguous (NCHW or ``(N, C)``): the layout whose sums over the trailing dimensions are
    contiguous. Elsewhere (channels_last, GPU) the per-layer path of :func:`channel_mean_var` serves.
    """
    return bool(acts) and all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() >= 2 and t.is_contiguous()
        for t in acts
    )


def bn_loss_from_activations(
    spec: BNStatisticLoss,
    acts: Sequence[torch.Tensor],
    keys: Sequence[object],
    first_layer_weight: float = 1.0,
    pre: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None] | None = None,
) -> torch.Tensor:
    """``spec``'s loss of the per-channel statistics of ``acts[l]`` (over every dimension but 1).

    Equals ``spec([mean_l], [var_l], first_layer_weight)`` with ``mean_l, var_l =
    channel_mean_var(acts[l], keys[l])``, differentiable with respect to every ``acts[l]``.

    Args:
        spec: the loss's per-layer centers, scales and running variances.
        acts: per layer, the observed activation ``(N, C_l, *)``.
        keys: per layer, the key of :func:`channel_mean_var`'s shift table (the module observed), for the
            per-layer path (channels_last, GPU); the one-node path decides the shift per call (see the code).
        first_layer_weight: the first layer's weight ``s_0``.
        pre: per layer, :func:`layer_sums` of ``acts[l]`` taken when it was computed (all or none used).
    """
    if len(acts) != len(spec.sizes) or any(t.shape[1] != c for t, c in zip(acts, spec.sizes, strict=True)):
        raise ValueError(f"activations of {len(acts)} layers do not match the {len(spec.sizes)} layers")
    if not fusable(acts) or spec.center.dtype != torch.float32 or spec.center.device.type != "cpu":
        stats = [channel_mean_var(t, k) for t, k in zip(acts, keys, strict=True)]
        means, variances = zip(*stats, strict=True)
        return spec(list(means), list(variances), first_layer_weight)
    if pre is not None and (len(pre) != len(acts) or any(p is None or p[0] is None for p in pre)):
        pre = None
    inputs = acts if pre is None else [p[0] for p in pre]
    return _StatsLossFn.apply(spec, float(first_layer_weight), list(keys), pre, list(acts), *inputs)  # type: ignore[no-any-return]


def _constants(spec: BNStatisticLoss, counts: tuple[int, ...]) -> dict:
    """Per-channel constants of the layers' element counts ``n_l``, as float64 arrays, cached per shape.

    The loss's vector part (a few hundred to ten thousand channels) runs on numpy arrays on the host: the
    same float64 arithmetic as torch's, without the per-operation dispatch cost (about 5 us against 1 us
    for a small vector on CPU), which with some 70 operations a step was a visible part of a small
    teacher's step.
    """
    cache: dict[tuple[int, ...], dict] = spec.__dict__.setdefault("_per_counts", {})
    if counts not in cache:
        sizes = np.asarray(spec.sizes)
        total = int(sizes.sum())
        scale = spec.scale.double().numpy() if spec.scale is not None else np.ones(total)
        cache[counts] = {
            "n": np.repeat(np.asarray(counts, dtype=np.float64), sizes),  # (C,)
            "starts": np.concatenate(([0], np.cumsum(sizes)[:-1])),  # each layer's first channel
            "center": spec.center.double().numpy(),
            "scale": np.stack((scale, scale * scale)),  # (2, C): the mean's and the variance's factors
            "running_var": spec.running_var.double().numpy(),
        }
    return cache[counts]


def _unit_parts(spec: BNStatisticLoss) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Per layer ``(C_l,)`` ones and zeros (inference BatchNorm's constants), made once a ``spec``."""
    parts = spec.__dict__.get("_unit_parts")
    if parts is None:
        total = sum(spec.sizes)
        parts = (torch.ones(total).split(spec.sizes), torch.zeros(total).split(spec.sizes))
        spec.__dict__["_unit_parts"] = parts
    return parts


def forget_shifts(spec: BNStatisticLoss) -> None:
    """Drop the shifts predicted from the previous call's statistics: the next call starts as the first.

    Called when a new batch of pixels starts, so that a batch's steps (and its images, to the bit) do not
    depend on the batches before it: a shard regenerated on resume is the one first written.
    """
    spec.__dict__.pop("_last_parts", None)
    spec.__dict__.pop("_shift_next", None)


def layer_sums(spec: BNStatisticLoss, index: int, x: torch.Tensor) -> tuple | None:
    """Layer ``index``'s per-(sample, channel) sums of ``x`` for :func:`bn_loss_from_activations`, or None.

    Taken by the hook right after the layer runs, while ``x`` is still in the CPU's caches (at loss
    time it would be read again from memory); not differentiable (the loss's node gives the gradient).
    None where the one-node path does not apply (:func:`fusable`).

    Returns:
        ``(handle, sum, 2-norm, shift)``: the sums are of ``x - shift`` where the previous call's statistics
        of this layer were near needing a shift (the shift: their means), else of ``x`` (shift None);
        ``handle`` (None when ``x`` needs no gradient) carries the loss's gradient back to ``x``.
    """
    if not fusable([x]) or spec.center.dtype != torch.float32 or spec.center.device.type != "cpu":
        return None
    last: list[torch.Tensor] | None = spec.__dict__.get("_last_parts")
    k = last[index] if last is not None and spec.__dict__["_shift_next"][index] else None
    ones, zeros = _unit_parts(spec)
    if not x.requires_grad:
        with torch.no_grad():
            s1, norm = channel_sums(x, k, ones[index])
        return None, s1, norm, k
    handle, s1, norm = _Tap.apply(x, k, ones[index], zeros[index])
    return handle, s1, norm, k


class _Tap(torch.autograd.Function):
    """One layer's sums (forward) and its input gradient ``dx = a_c + b_c * x`` (backward).

    The output ``handle`` (``(2, C)``, no values) carries the gradient ``[a; b]`` that the loss's node
    computes for every layer at once; as the tap is created right after its layer, the autograd engine
    runs its backward right before the layer's own, so ``dx`` is made when it is used (made all at once
    by the loss's node, every layer's ``dx`` would be held until its layer's backward: on MobileNetV2
    that is a full set of activation-sized buffers each step).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: torch.Tensor | None, ones: torch.Tensor, zeros: torch.Tensor):  # type: ignore[override]
        s1, norm = channel_sums(x, k, ones)
        ctx.save_for_backward(x)
        ctx.ones, ctx.zeros = ones, zeros
        ctx.mark_non_differentiable(s1, norm)
        # no zero-filled gradients for the sums (non-differentiable, never read): 2 allocations a layer
        ctx.set_materialize_grads(False)
        return x.new_empty((2, x.shape[1])), s1, norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, *_: torch.Tensor):  # type: ignore[override]
        if grad is None:
            return None, None, None, None
        (x,) = ctx.saved_tensors
        # a per-channel affine map is what inference BatchNorm computes (running stats 0 / 1, eps 0)
        a, b = grad.unbind(0)  # one view operation instead of two selects
        dx = torch.batch_norm(x, b, a, ctx.zeros, ctx.ones, False, 0.0, 0.0, False)
        return dx, None, None, None


def _sums_over_n(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the float64 batch sums of ``s1`` and ``norm^2`` (``parts``: per layer, ``(N, C_l)``)."""
    s1 = torch.cat([p[0] for p in parts], 1) if len(parts) > 1 else parts[0][0]
    norm = torch.cat([p[1] for p in parts], 1) if len(parts) > 1 else parts[0][1]
    sums = torch.stack((s1, norm.square())).sum(1, dtype=torch.float64).numpy()  # (2, C)
    return sums[0], sums[1]


class _StatsLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: BNStatisticLoss, first: float, keys: list, pre: list | None, acts: list, *inputs):  # type: ignore[override]
        # inputs: the activations (pre None), or the taps' handles (pre: the taps' sums; backward: [a; b])
        layers = len(acts)
        counts = tuple(t.numel() // t.shape[1] for t in acts)
        const = _constants(spec, counts)
        (ones, zeros), n, starts = _unit_parts(spec), const["n"], const["starts"]
        # A layer's sums are of shifted values x - k (one extra pass) where the previous call's statistics
        # had some channel's mean large against its spread (datafree.stats.SHIFT_RATIO / 2): k is the
        # previous call's batch means (the pixels change little from one step to the next, so x - k is
        # centred to a small fraction of its spread, with no extra operation); the check below catches
        # the rest (the first call, a new batch) and shifts those layers by sample 0's channel means.
        last_parts: list[torch.Tensor] | None = spec.__dict__.get("_last_parts")
        if pre is not None:  # taken by the hooks (layer_sums), with the same choice of shifts
            parts = [(p[1], p[2]) for p in pre]
            shifts = [p[3] for p in pre]
        else:
            predicted: list[bool] = spec.__dict__.get("_shift_next", [False] * layers)
            shifts = [None] * layers
            if last_parts is not None:
                shifts = [lp if p else None for lp, p in zip(last_parts, predicted, strict=True)]
            parts = [channel_sums(t, k, ones[i]) for i, (t, k) in enumerate(zip(acts, shifts, strict=True))]
        # per (sample, channel) sums and 2-norms, (N, C) float32 -> per-channel sums over N in float64 (in
        # torch: numpy's casting reduction over N is several times slower on MobileNetV2's 17k channels)
        s1, s2 = _sums_over_n(parts)
        while True:
            mean = s1 / n  # of the shifted values where shifted
            var = s2 / n - mean * mean
            # E[x^2] - E[x]^2 in fp32 sums loses about mean^2 / var of fp32's relative precision: the check
            # of channel_mean_var, every layer at once
            bad = mean * mean > SHIFT_RATIO * var
            if not bad.any():
                break
            redo = []
            for i in np.flatnonzero(np.logical_or.reduceat(bad, starts)).tolist():
                if shifts[i] is None or (last_parts is not None and shifts[i] is last_parts[i]):
                    shifts[i] = sample0_means(acts[i])
                    redo.append(i)
                # else: already shifted by sample 0's means, as channel_mean_var: as is
            if not redo:
                break
            for i in redo:
                seg = slice(starts[i], starts[i] + spec.sizes[i])
                s1[seg], s2[seg] = _sums_over_n([channel_sums(acts[i], shifts[i], ones[i])])
        if any(k is not None for k in shifts):
            shift = [(zeros[i] if k is None else k).numpy() for i, k in enumerate(shifts)]
            mean = mean + np.concatenate(shift)
        var = np.maximum(var, 0.0)
        # the next call's shifts: the layers whose statistics now are near needing one (unshifted form)
        near = np.logical_or.reduceat(mean * mean > (SHIFT_RATIO / 2) * var, starts)
        spec.__dict__["_shift_next"] = near.tolist()
        spec.__dict__["_last_parts"] = list(torch.from_numpy(mean.astype(np.float32)).split(spec.sizes))
        # the loss (_BNStatisticLossFn's on the concatenated statistics) and its gradient coefficients
        scale = const["scale"]
        d = np.stack(((mean - const["center"]) * scale[0], var * scale[1] - const["running_var"]))  # (2, C)
        norms = np.sqrt(np.add.reduceat(d * d, starts, axis=1))  # (2, L)
        weights = np.ones(layers)
        weights[0] = first
        loss = float((norms.sum(0) * weights).sum())
        # d loss / d (mean, var) per channel: w_l d / ||d_l|| (0 at a zero norm, as vector_norm's), then
        # through mean = sum x / n and var = sum (x - mean)^2 / n: dx = a_c + b_c * x
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(norms > 0, weights / norms, 0.0)  # (2, L)
        g = np.repeat(coef, spec.sizes, axis=1) * d * scale  # (2, C)
        b = (2.0 / n) * g[1]
        a = g[0] / n - b * mean
        ctx.ab = torch.from_numpy(np.stack((a, b)).astype(np.float32))  # for an upstream gradient of 1
        ctx.save_for_backward(*(acts if pre is None else ()))
        ctx.spec, ctx.taps = spec, pre is not None
        return torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        spec: BNStatisticLoss = ctx.spec
        ab = ctx.ab * grad  # (2, C): [a; b] of every layer at once
        if ctx.taps:  # each layer's tap makes its dx from [a; b] when the engine reaches it
            return (None, None, None, None, None, *ab.split(spec.sizes, 1))
        # per layer one inference-BatchNorm pass (running stats 0 / 1, eps 0) computes b_c * x + a_c
        ones, zeros = _unit_parts(spec)
        coefs = zip(ctx.saved_tensors, ab[1].split(spec.sizes), ab[0].split(spec.sizes), zeros, ones,
                    strict=True)  # fmt: skip
        dxs = [torch.batch_norm(x, bl, al, z, o, False, 0.0, 0.0, False) for x, bl, al, z, o in coefs]
        return (None, None, None, None, None, *dxs)
