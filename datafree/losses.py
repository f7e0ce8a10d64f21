"""Loss terms as pure tensor functions, plus a named weighted sum that logs every term.

References: Hinton et al. 2015 (KD); Yin et al. CVPR 2020 (DeepInversion: BN statistics,
TV/L2 priors, Adaptive DeepInversion's Jensen-Shannon competition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "kd_kl_loss",
    "js_divergence",
    "bn_statistic_loss",
    "tv_l2",
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
    """
    total = means[0].new_zeros(())
    for i, (mu, var, (rm, rv)) in enumerate(zip(means, variances, running, strict=True)):
        term = torch.linalg.vector_norm(mu - rm) + torch.linalg.vector_norm(var - rv)
        total = total + (first_layer_weight if i == 0 else 1.0) * term
    return total


def tv_l2(x: torch.Tensor) -> torch.Tensor:
    """Total variation as in NVlabs DeepInversion: sum of the L2 norms of four directional differences.

    Shape:
        - x: ``(B, C, H, W)``.
    """
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))  # type: ignore[return-value]


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation, mean absolute neighbour difference."""
    return (x[:, :, :, :-1] - x[:, :, :, 1:]).abs().mean() + (x[:, :, :-1, :] - x[:, :, 1:, :]).abs().mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """Mean per-image L2 norm of the (normalised) image, DeepInversion's ``l2`` prior."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


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
