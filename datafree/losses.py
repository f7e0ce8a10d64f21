"""Loss terms as pure tensor functions, plus a named weighted sum that logs every term.

References: Hinton et al. 2015 (KD); Yin et al. CVPR 2020 (DeepInversion: BN statistics,
TV/L2 priors, Adaptive DeepInversion's Jensen-Shannon competition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "bn_ce_scale",
    "kd_kl_loss",
    "js_divergence",
    "bn_statistic_loss",
    "BNStatisticLoss",
    "tv_l2",
    "image_priors",
    "tv_l1",
    "l2_prior",
    "weighted_sum",
]


def kd_kl_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch (``batchmean``).

    Shape:
        - student_logits, teacher_logits: ``(B, K)``.
        - Output: scalar.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Jensen-Shannon divergence between ``softmax(a/T)`` and ``softmax(b/T)``, batch mean.

    Adaptive DeepInversion maximises it between teacher and student: the competition term is
    ``1 - clamp(JS, 0, 1)``.
    """
    p = F.softmax(logits_a / temperature, dim=1)
    q = F.softmax(logits_b / temperature, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12).log()
    kl_pm = F.kl_div(m, p, reduction="batchmean")
    kl_qm = F.kl_div(m, q, reduction="batchmean")
    return 0.5 * (kl_pm + kl_qm)


def bn_statistic_loss(
    means: Sequence[torch.Tensor],
    variances: Sequence[torch.Tensor],
    running: Sequence[tuple[torch.Tensor, torch.Tensor]],
    first_layer_weight: float = 1.0,
) -> torch.Tensor:
    """DeepInversion's feature-distribution regulariser.

    ``sum_l s_l (||mu_l - mu_run_l||_2 + ||var_l - var_run_l||_2)`` with ``s_0 = first_layer_weight``
    and ``s_l = 1`` otherwise; ``mu_l``, ``var_l`` are the batch statistics of BN layer l's input.
    Computed over all layers at once (:class:`BNStatisticLoss`) when every statistic is a vector of its
    layer's channels, else layer by layer.
    """
    if means and all(
        m.dim() == 1 and v.shape == m.shape == rm.shape == rv.shape
        for m, v, (rm, rv) in zip(means, variances, running, strict=True)
    ):
        return BNStatisticLoss([rm for rm, _ in running], None, [rv for _, rv in running])(
            means, variances, first_layer_weight
        )
    total = means[0].new_zeros(())
    for i, (mu, var, (rm, rv)) in enumerate(zip(means, variances, running, strict=True)):
        term = torch.linalg.vector_norm(mu - rm) + torch.linalg.vector_norm(var - rv)
        total = total + (first_layer_weight if i == 0 else 1.0) * term
    return total


class BNStatisticLoss:
    """:func:`bn_statistic_loss` over all layers in a few vector operations, with a hand-written backward.

    The per-layer form costs about a dozen small operations per BN layer forward and as many autograd
    nodes backward, which on CPU weigh as much as a small teacher's convolutions (52 BN layers in
    MobileNetV2). Here the statistics are concatenated, the per-layer norms are segment sums, and the
    backward is ``w_l (d_l / ||d_l||)`` per layer (0 where a norm is 0, as ``vector_norm``'s).

    The statistics may be of an affine image of the BN input (a BN folded into its convolution,
    :mod:`datafree.bnfold`): with ``centers`` ``k`` and ``scales`` ``s``, layer l's mean term is
    ``||(mu_l - k_l) * s_l||`` and its variance term ``||var_l * s_l^2 - var_run_l||``; without scales,
    ``k`` is the running mean and this is :func:`bn_statistic_loss`.

    Args:
        centers: per layer, ``(C_l,)``.
        scales: per layer, ``(C_l,)``, or None (all ones).
        running_vars: per layer, ``(C_l,)``.
    """

    def __init__(
        self,
        centers: Sequence[torch.Tensor],
        scales: Sequence[torch.Tensor] | None,
        running_vars: Sequence[torch.Tensor],
    ) -> None:
        self.sizes = [int(c.numel()) for c in centers]
        self.center = torch.cat([c.detach().reshape(-1) for c in centers])
        self.scale = None if scales is None else torch.cat([s.detach().reshape(-1) for s in scales])
        self.scale2 = None if self.scale is None else self.scale * self.scale
        self.running_var = torch.cat([v.detach().reshape(-1) for v in running_vars])
        dev = self.center.device
        self.segment = torch.repeat_interleave(torch.arange(len(self.sizes), device=dev),
                                               torch.tensor(self.sizes, device=dev))  # fmt: skip

    def standardized(self, eps: Sequence[float]) -> BNStatisticLoss:
        """The same loss with each channel's statistics in units of its own running spread.

        Layer l's terms become ``||(mu_l - mu_run_l) / sqrt(var_run_l + eps_l)||`` and
        ``||(var_l - var_run_l) / (var_run_l + eps_l)||``: the mean and variance of the BN layer's normalised
        output (before its affine) against the 0 and ~1 it has on data that matches the running statistics.
        In the raw form a layer's terms grow with the scale of its activations, so the late layers of a deep
        network (running variances in the hundreds) weigh most, and those are the layers where even real
        data stays far from the running statistics (WRN-40-2 at 32 px: docs/fidelity.md, "Session 29").
        ``eps``: per layer, the BN layer's ``eps``. Same centers; the scales (a folded layer's) are divided
        by the spread.
        """
        if len(eps) != len(self.sizes):
            raise ValueError(f"{len(eps)} eps values for {len(self.sizes)} layers")
        rv = self.running_var
        eps_c = torch.repeat_interleave(torch.tensor(list(eps), dtype=rv.dtype, device=rv.device),
                                        torch.tensor(self.sizes, device=rv.device))  # fmt: skip
        spread = torch.sqrt(rv + eps_c)
        scale = (self.scale if self.scale is not None else torch.ones_like(rv)) / spread
        return BNStatisticLoss(self.center.split(self.sizes), scale.split(self.sizes),
                               (rv / (rv + eps_c)).split(self.sizes))  # fmt: skip

    def __call__(
        self,
        means: Sequence[torch.Tensor],
        variances: Sequence[torch.Tensor],
        first_layer_weight: float = 1.0,
    ) -> torch.Tensor:
        """The loss of layer statistics ``means[l]``, ``variances[l]`` (``(C_l,)`` each); differentiable."""
        if [int(m.numel()) for m in means] != self.sizes:
            raise ValueError(f"statistics of {len(means)} layers do not match the {len(self.sizes)} layers")
        return _BNStatisticLossFn.apply(self, float(first_layer_weight), *means, *variances)  # type: ignore[no-any-return]


class _BNStatisticLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: BNStatisticLoss, first: float, *stats: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        layers = len(spec.sizes)
        mu = torch.cat(stats[:layers])
        var = torch.cat(stats[layers:])
        dtype = mu.dtype
        dm = mu - spec.center.to(dtype)
        if spec.scale is not None:
            dm = dm * spec.scale.to(dtype)
            var = var * spec.scale2.to(dtype)  # type: ignore[union-attr]
        dv = var - spec.running_var.to(dtype)
        d = torch.stack((dm, dv))  # (2, C)
        sq = torch.zeros((2, layers), dtype=dtype, device=d.device).index_add_(1, spec.segment, d * d)
        norms = sq.sqrt()  # (2, L): ||mean diff||, ||var diff|| per layer
        weights = torch.ones(layers, dtype=dtype, device=d.device)
        weights[0] = first
        ctx.save_for_backward(d, norms, weights)
        ctx.spec = spec
        return (norms.sum(0) * weights).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        d, norms, weights = ctx.saved_tensors
        spec: BNStatisticLoss = ctx.spec
        coef = torch.where(norms > 0, weights * grad / norms, torch.zeros_like(norms))  # (2, L)
        g = coef.index_select(1, spec.segment) * d  # (2, C): d loss / d dm, d loss / d dv
        gm, gv = g[0], g[1]
        if spec.scale is not None:
            gm = gm * spec.scale.to(d.dtype)
            gv = gv * spec.scale2.to(d.dtype)  # type: ignore[union-attr]
        return (None, None, *gm.split(spec.sizes), *gv.split(spec.sizes))


def tv_l2(x: torch.Tensor) -> torch.Tensor:
    """Total variation as in NVlabs DeepInversion: sum of the L2 norms of four directional differences.

    Shape:
        - x: ``(B, C, H, W)``.
    """
    return _TVL2.apply(x, False)[0]  # type: ignore[no-any-return]


# (minuend, subtrahend) index of each of tv_l2's four differences, over dims (H, W)
_TV_PAIRS = (
    ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
)


class _TVL2(torch.autograd.Function):
    """:func:`tv_l2`, and with ``with_l2`` also :func:`l2_prior`, of the same pixels in one autograd node.

    The backward is hand-written: ``dx = sum_k (g / ||d_k||) (e_a - e_b)^T d_k`` (+ ``g_l2 x_i / (B ||x_i||)``
    per image): autograd's version zero-fills and copies an image-sized gradient per slice and adds them up
    (about fifty operations on the image per step); this one adds each difference into one buffer twice.
    On small images the step's cost is these operations' count, not their work: one node for both priors
    (one gradient buffer, no second node and no sum of their gradients) saved about 0.15 ms of a 15 ms
    DeepInversion step on resnet8_digits (docs/speed.md, session 8).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, with_l2: bool) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        diffs = [x[:, :, a[0], a[1]] - x[:, :, b[0], b[1]] for a, b in _TV_PAIRS]
        norms = torch.stack([torch.linalg.vector_norm(d) for d in diffs])
        images = torch.linalg.vector_norm(x.flatten(1), dim=1) if with_l2 else None  # (B,)
        ctx.save_for_backward(norms, *diffs, *((x, images) if with_l2 else ()))
        ctx.with_l2 = with_l2
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None (no zero-filled tensor)
        if images is None:
            dummy = norms.new_zeros(())
            ctx.mark_non_differentiable(dummy)
            return norms.sum(), dummy
        return norms.sum(), images.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, grad_l2: torch.Tensor | None):  # type: ignore[override]
        norms, *rest = ctx.saved_tensors
        diffs = rest[:4]
        gx = torch.zeros((*diffs[0].shape[:2], diffs[1].shape[2] + 1, diffs[0].shape[3] + 1),
                         dtype=diffs[0].dtype, device=diffs[0].device)  # fmt: skip
        if grad is not None:
            coef = torch.where(norms > 0, grad / norms, torch.zeros_like(norms))  # vector_norm's 0 at 0
            on_cpu = gx.device.type == "cpu"
            for (a, b), d, c in zip(_TV_PAIRS, diffs, coef.tolist() if on_cpu else coef, strict=True):
                if on_cpu:  # a scalar on the host: one fused pass per slice
                    gx[:, :, a[0], a[1]].add_(d, alpha=c)
                    gx[:, :, b[0], b[1]].add_(d, alpha=-c)
                else:
                    cd = d * c
                    gx[:, :, a[0], a[1]].add_(cd)
                    gx[:, :, b[0], b[1]].sub_(cd)
        if ctx.with_l2 and grad_l2 is not None:
            x, images = rest[4:]
            # d mean_i ||x_i|| / d x_i = x_i / (B ||x_i||), 0 at a zero image (as vector_norm's)
            r = torch.where(images > 0, grad_l2 / (images * len(images)), torch.zeros_like(images))
            gx.addcmul_(x, r.view(-1, *([1] * (x.dim() - 1))))
        return gx, None


def image_priors(x: torch.Tensor, l2: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(tv_l2(x), l2_prior(x))`` (``l2_prior`` None when not asked for) in one autograd node.

    Shape:
        - x: ``(B, C, H, W)``.
    """
    tv, l2_value = _TVL2.apply(x, l2)
    return tv, (l2_value if l2 else None)


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation, mean absolute neighbour difference."""
    return (x[:, :, :, :-1] - x[:, :, :, 1:]).abs().mean() + (x[:, :, :-1, :] - x[:, :, 1:, :]).abs().mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean per-image L2 norm of the (normalised) image, DeepInversion's ``l2`` prior."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


def bn_ce_scale(
    bn: torch.Tensor, ce: torch.Tensor, bn_weight: float, ce_weight: float, max_ratio: float
) -> float:
    """DeepInversion's BN/CE balance: a factor (at most 1) for ``bn_weight``; one host sync.

    With it the weighted BN term is at most ``max_ratio`` times the weighted cross-entropy (1 when it
    already is). Used at a batch's (DeepInversion) or a run's (NAYER) first step, then kept fixed.
    """
    ratio = float(bn_weight * bn.detach()) / max(float(ce_weight * ce.detach()), 1e-8)
    return min(1.0, max_ratio / ratio) if ratio > 0 else 1.0


def weighted_sum(
    terms: Mapping[str, tuple[float, torch.Tensor]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine ``{name: (weight, value)}``; terms with weight 0 are skipped.

    Returns:
        ``(total, {name: detached value})``; callers convert to floats only when they log, so the
        hot loop does not synchronise with the device every step.
    """
    total = None
    logs: dict[str, torch.Tensor] = {}
    for name, (w, v) in terms.items():
        if w == 0:
            continue
        total = w * v if total is None else total + w * v
        logs[name] = v.detach()
    if total is None:
        from .errors import UserInputError

        raise UserInputError(
            f"all loss weights are zero ({', '.join(terms)}); give at least one term a weight > 0 with --set"
        )
    logs["total"] = total.detach()
    return total, logs
