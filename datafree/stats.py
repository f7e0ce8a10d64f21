"""Fused per-channel batch statistics with a hand-written backward.

``torch.var_mean(x, dim=(0, 2, 3))`` on an NCHW activation reduces over non-adjacent dimensions;
on CPU it (and its autograd backward, several elementwise passes) cost more than the BatchNorm
layer it observes. :func:`channel_mean_var` computes the same two statistics from one sum and
one sum of squares, and its backward is one fused pass ``dx = a_c + b_c * x``. The BN-statistics
hook of DeepInversion-style backends calls it on every BatchNorm input, every step.

Reference: Yin et al., "Dreaming to Distill", CVPR 2020 (the statistics the BN loss matches).
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["channel_mean_var", "channel_sums", "sample0_means", "StatisticsEMA", "SHIFT_RATIO"]

#: Without a shift, the variance E[x^2] - E[x]^2 of fp32 sums keeps about ``eps * (1 + mean^2 / var)``
#: relative precision; on CPU the unshifted sums serve when every channel has ``mean^2 <= SHIFT_RATIO *
#: var`` (at most ~17 fp32 ulps), else one extra pass shifts the activation first.
SHIFT_RATIO = 16.0
_NEEDS_SHIFT: weakref.WeakKeyDictionary[object, bool] = weakref.WeakKeyDictionary()


def _moments(
    s1: torch.Tensor, norm: torch.Tensor, shift: torch.Tensor | None, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance, float64, ``(C,)``, from per-(sample, channel) sums ``s1`` and 2-norms."""
    sums = torch.stack((s1, norm.square())).to(torch.float64).sum(1)  # (2, C): over N in float64
    mean = sums[0] / n
    var = sums[1] / n - mean * mean
    return (mean if shift is None else mean + shift.to(torch.float64)), var


def channel_sums(
    x: torch.Tensor, shift: torch.Tensor | None = None, ones: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) sum and 2-norm of ``x - shift`` (``x`` when ``shift`` is None), each ``(N, C)``.

    The shift runs through inference BatchNorm's kernel (``x - k`` with running_var 1, eps 0: one fast
    pass); ``ones`` is that call's ``(C,)`` variance, made here when not given.
    """
    if shift is not None:
        ones = torch.ones_like(shift) if ones is None else ones
        x = torch.batch_norm(x, None, None, shift, ones, False, 0.0, 0.0, False)
    xf = x.flatten(2) if x.dim() > 2 else x.unsqueeze(2)  # (N, C, L): sums over L are contiguous
    return xf.sum(2), torch.linalg.vector_norm(xf, dim=2)


def sample0_means(x: torch.Tensor) -> torch.Tensor:
    """Sample 0's channel means, ``(C,)``: the shift of the shifted sums (a value near the mean)."""
    return (x.flatten(2) if x.dim() > 2 else x.unsqueeze(2))[0].mean(1)


class _ChannelMeanVar(torch.autograd.Function):
    """Mean and biased variance over every dimension but 1; see :func:`channel_mean_var`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, key: object = None) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        n = x.numel() // x.shape[1]
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # channels_last (NHWC in memory): the channel reduction is a column reduction, and ATen's
            # BatchNorm statistics kernel does it in one pass, exactly (mean first, then squared
            # deviations), about 2x faster than the sums below, which would need an NCHW copy.
            mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
        else:
            moments = None
            if x.device.type == "cpu" and (key is None or key not in _NEEDS_SHIFT):
                # Two read-only passes (sum and sum of squares per (sample, channel), float64 over N).
                # Their difference E[x^2] - E[x]^2 loses about mean^2 / var of fp32's relative precision;
                # where some channel's mean is large against its spread (SHIFT_RATIO), the shifted sums
                # below are used instead. Checking needs the values on the host: free on CPU, a sync
                # elsewhere.
                moments = _moments(*channel_sums(x), None, n)
                if bool((moments[0] * moments[0] > SHIFT_RATIO * moments[1]).any()):
                    moments = None
                    if key is not None:
                        _NEEDS_SHIFT[key] = True  # this layer's next calls go straight to the shifted sums
            if moments is None:
                # Shift by a value near the mean (sample 0's channel means) so that E[(x-k)^2] - E[x-k]^2
                # does not cancel catastrophically when the mean is large against the spread.
                shift = sample0_means(x)
                moments = _moments(*channel_sums(x, shift), shift, n)
            mean, var = moments[0].to(x.dtype), moments[1].clamp_min_(0).to(x.dtype)
        ctx.save_for_backward(x, mean)
        ctx.n = n
        return mean, var

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor | None, grad_var: torch.Tensor | None):  # type: ignore[override]
        x, mean = ctx.saved_tensors
        n = ctx.n
        gm = grad_mean if grad_mean is not None else torch.zeros_like(mean)
        gv = grad_var if grad_var is not None else torch.zeros_like(mean)
        # d mean / dx = 1/n ; d var / dx = 2 (x - mean) / n  ->  dx = a_c + b_c * x
        b = (2.0 / n) * gv
        a = gm / n - b * mean
        # A per-channel affine map is what inference BatchNorm computes (running stats 0/1, eps 0):
        # its kernel is several times faster than a broadcast addcmul on CPU.
        zeros, ones = torch.zeros_like(mean), torch.ones_like(mean)
        return torch.batch_norm(x, b, a, zeros, ones, False, 0.0, 0.0, False), None


def channel_mean_var(x: torch.Tensor, key: object = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over the batch and spatial dimensions.

    Equals ``torch.var_mean(x, dim=(0, 2, ...), unbiased=False)`` (swapped order) and is
    differentiable, several times faster forward and backward on CPU for NCHW activations.

    Args:
        x: activations, channels on dimension 1.
        key: the layer (any weak-referenceable object, e.g. the module observed): once its activations
            needed the shifted sums (a channel's mean large against its spread, :data:`SHIFT_RATIO`),
            later calls with the same key go straight to them instead of trying the unshifted ones first.

    Returns:
        ``(mean, var)``, each ``(C,)``.

    Shape:
        - x: ``(N, C)`` or ``(N, C, *)``.
    """
    if x.dim() < 2:
        raise ValueError(f"channel_mean_var needs (N, C, ...) input, got shape {tuple(x.shape)}")
    return _ChannelMeanVar.apply(x, key)  # type: ignore[no-any-return]


class StatisticsEMA:
    """The BN batch statistics of a round blended with their running average over earlier rounds.

    Fast-Datafree's and NAYER's reference ``bn_mmt``: the loss sees ``(1 - m) * batch + m * average``
    per layer (the batch statistics alone before the first round ends), and at the end of each round
    the last step's statistics are folded in, ``average = m * average + (1 - m) * last``. With
    momentum 0 nothing is kept and :meth:`blend` returns the batch statistics.

    Args:
        momentum: ``m`` in ``[0, 1)``.
    """

    def __init__(self, momentum: float) -> None:
        self.momentum = float(momentum)
        self.average: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (mean, var)
        self.last: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def blend(
        self, means: list[torch.Tensor], variances: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The statistics the loss compares with the running ones; records them for :meth:`end_round`."""
        if self.momentum == 0:
            return means, variances
        self.last = [(mu.detach(), var.detach()) for mu, var in zip(means, variances, strict=True)]
        if self.average is None:
            return means, variances
        m = self.momentum
        blended_means = [(1 - m) * mu + m * a_mu for mu, (a_mu, _) in zip(means, self.average, strict=True)]
        blended_vars = [(1 - m) * v + m * a_v for v, (_, a_v) in zip(variances, self.average, strict=True)]
        return blended_means, blended_vars

    def end_round(self) -> None:
        """Fold the round's last statistics into the average."""
        if self.momentum == 0 or self.last is None:
            return
        if self.average is None:
            self.average = list(self.last)
            return
        m = self.momentum
        self.average = [
            (m * a_mu + (1 - m) * mu, m * a_var + (1 - m) * var)
            for (a_mu, a_var), (mu, var) in zip(self.average, self.last, strict=True)
        ]

    @staticmethod
    def to(
        stats: list[tuple[torch.Tensor, torch.Tensor]] | None, device: torch.device | str
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """``stats`` moved to ``device`` (None stays None): the form checkpoints store them in."""
        return [(mu.to(device), var.to(device)) for mu, var in stats] if stats is not None else None
