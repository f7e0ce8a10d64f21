"""DFAD: data-free adversarial distillation with the L1 distance between logits.

Reference: Fang et al., "Data-Free Adversarial Distillation", 2019. The generator maximises
``mean |S(G(z)) - T(G(z))|`` against the current (real) student; the student minimises the same
L1 distance on fresh ``G(z)``, 5 student steps per generator step. Generator: ``GeneratorA``
(Tanh then BatchNorm without affine parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.errors import UserInputError
from datafree.generator_losses import information_entropy_loss, logit_l1

from . import register
from .online import OnlineConfig, OnlineSynthesizer

__all__ = ["DFAD", "DFADConfig"]


@dataclass
class DFADConfig(OnlineConfig):
    """DFAD settings (generator Adam 1e-3 as in the paper)."""

    batch_size: int = 64
    generator_lr: float = 1e-3
    lr_schedule: str = "cosine"
    adv_weight: float = 1.0
    # Class balance (our addition, not in the paper): DAFL's information-entropy term on the teacher's
    # batch-mean prediction. -1 (default): 20 on a teacher without BatchNorm, where no BN-statistic
    # term keeps the generator's images diverse, else 0. Measured on lenet5_digits (seed 0): without
    # it the generator's images collapsed onto a few classes (teacher argmax on 2048 samples: 41%
    # class 0, none class 1) and the student reached 75.8% of the teacher (30 epochs or a 4x wider
    # generator did not help: 71-72%); with weight 5: 92.8% (15 epochs) / 95.6% (30), 20: 94.7% / 96.4%.
    balance: float = -1.0

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.balance < 0 and self.balance != -1.0:
            raise UserInputError(f"balance must be >= 0 (or -1: automatic), got {self.balance}")


@register
class DFAD(OnlineSynthesizer):
    """Adversarial distillation: the generator maximises the student-teacher L1 logit distance."""

    name = "dfad"
    Config = DFADConfig
    needs_student = True
    output_head = "tanh_bn"
    # Paper: 5 student steps (L1) per generator step. Adam (instead of SGD 0.1) measured faster here
    # (lenet5_digits, 15 epochs: SGD 0.1 65.6%, Adam 75.8%). 30 epochs: resnet8_digits 95.5% of the
    # teacher at 15, 98.3% at 30.
    kd_defaults = {
        "epochs": 30, "steps_per_epoch": 100, "batch_size": 64, "g_steps": 1, "kd_steps": 5, "loss": "l1",
        "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "augment": True,
    }  # fmt: skip
    config: DFADConfig

    @property
    def balance_weight(self) -> float:
        """The class-balance weight used: ``balance``, or when -1, 20 without the BN term."""
        if self.config.balance >= 0:
            return self.config.balance
        return 0.0 if self.use_bn_term else 20.0

    def objective(self, images: torch.Tensor, student: nn.Module | None) -> dict[str, tuple[float, torch.Tensor]]:
        """``-L1(S(x), T(x))``: the generator seeks images where the student disagrees."""
        student = self.check_student(student)
        t_logits = self.teacher(images)
        s_logits = student(images)
        terms = {"adversarial": (self.config.adv_weight, -logit_l1(s_logits, t_logits))}
        if self.balance_weight > 0:
            terms["balance"] = (self.balance_weight, information_entropy_loss(t_logits))
        return terms
