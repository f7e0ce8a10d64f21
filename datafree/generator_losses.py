"""Loss terms of the generator backends (DAFL, ZSKT, DFAD), as pure tensor functions.

References:
    Chen et al., "Data-Free Learning of Student Networks", ICCV 2019 (DAFL: one-hot,
    activation and information-entropy losses).
    Micaelli & Storkey, "Zero-shot Knowledge Transfer via Adversarial Belief Matching",
    NeurIPS 2019 (ZSKT: adversarial KL, attention transfer).
    Fang et al., "Data-Free Adversarial Distillation", 2019 (DFAD: L1 between logits).
    Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (attention maps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "one_hot_loss",
    "activation_loss",
    "information_entropy_loss",
    "class_coverage_loss",
    "logit_l1",
    "attention_map",
    "attention_transfer_loss",
]


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's one-hot loss: cross-entropy of the teacher's logits to their own argmax.

    Shape:
        - teacher_logits: ``(B, K)``.
        - Output: scalar.

    Reference: Chen et al., ICCV 2019, Eq. 4.
    """
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(1))


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL's activation loss ``-mean |f|`` over the teacher's penultimate features.

    Shape:
        - features: ``(B, D)`` (any shape: the mean is over every element).
        - Output: scalar.

    Reference: Chen et al., ICCV 2019, Eq. 5.
    """
    return -features.abs().mean()


def information_entropy_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's class-balance loss ``sum_k p_k log p_k`` of the batch-mean prediction (natural log).

    Minimising it maximises the entropy of the average teacher prediction, so the batch covers all
    classes; it is ``-log K`` at balance. (The reference code uses ``log10``; the paper's
    information entropy uses the natural log, and so does this function.)

    Shape:
        - teacher_logits: ``(B, K)``.
        - Output: scalar.

    Reference: Chen et al., ICCV 2019, Eq. 6.
    """
    mean_p = F.softmax(teacher_logits, dim=1).mean(0)  # (K,)
    return (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()


def class_coverage_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the uniform class distribution against the batch-mean prediction, minus ``log K``.

    ``-(1/K) sum_k log pbar_k - log K`` with ``pbar = mean_i softmax(logits_i)``: 0 at balance, large
    when a class is missing. Unlike :func:`information_entropy_loss` (``sum_k pbar_k log pbar_k``), whose
    gradient toward a class vanishes as ``pbar_k log pbar_k`` when no image of the batch is near it, the
    pull toward a missing class here grows as ``1 / pbar_k``: a generator that never makes one class
    keeps being pushed toward it. Our addition (not in DAFL, ZSKT or DFAD; docs/online_generators.md,
    "Session 6"). ``log pbar_k`` is computed as a log-sum-exp of log-probabilities (stable for ``pbar_k``
    far below float precision).

    Shape:
        - teacher_logits: ``(B, K)``.
        - Output: scalar.
    """
    b, k = teacher_logits.shape
    log_mean_p = torch.logsumexp(F.log_softmax(teacher_logits.float(), dim=1), dim=0) - math.log(b)  # (K,)
    return -log_mean_p.mean() - math.log(k)


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between logits: DFAD's discrepancy.

    The student minimises it, the generator maximises it.

    Shape:
        - student_logits, teacher_logits: ``(B, K)``.
        - Output: scalar.

    Reference: Fang et al. 2019, Eq. 3.
    """
    return F.l1_loss(student_logits, teacher_logits)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention ``normalize(mean_c a^2)`` of a feature map, flattened.

    Shape:
        - features: ``(B, C, H, W)``.
        - Output: ``(B, H * W)``, unit L2 norm per sample.

    Reference: Zagoruyko & Komodakis, ICLR 2017 (as used by ZSKT).
    """
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)  # (B, C, H, W) -> (B, H*W)


def attention_transfer_loss(
    student_features: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``sum_blocks mean (at(s) - at(t))^2`` over matched blocks (same H, W; channels may differ).

    Shape:
        - student_features[i], teacher_features[i]: ``(B, C_s, H_i, W_i)``, ``(B, C_t, H_i, W_i)``.
        - Output: scalar.

    Reference: Micaelli & Storkey, NeurIPS 2019, Eq. 2 (weighted by beta = 250 there).
    """
    total = student_features[0].new_zeros(())
    for s, t in zip(student_features, teacher_features, strict=True):
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total
