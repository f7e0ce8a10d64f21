"""ZeroQ distilled data: optimise pixels so every BatchNorm layer sees its own statistics, per sample.

Reference: Cai et al., "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020
(``distill_data.py``). Loss, for a batch of B images::

    sum_l ||mu_l - mu_l(x)||^2 / B + ||sigma_l - sigma_l(x)||^2 / B
      + ||0 - mu(x)||^2 / B + ||1 - sigma(x)||^2 / B            # the input term

where ``mu_l(x)``, ``sigma_l(x)`` are the **per-sample** channel mean and std ``(B, C)`` of BN
layer l's input and ``mu_l``, ``sigma_l = sqrt(running_var + eps)`` its running statistics; the
input term pulls each image's channels to mean 0 / std 1 in normalised space. No cross-entropy, no
augmentation; Adam (lr 0.5) with ``ReduceLROnPlateau(patience=100, min_lr=1e-4)``, 500 steps on one
batch.

Two deliberate departures from the reference code (see shared/REFERENCES.md):

* BN layers are found from the module graph (forward hooks on the BN modules themselves, whose
  *input* is what is matched), not by pairing the first N ``Conv2d`` outputs with N BN layers
  by order, which silently mismatches on any network whose convs and BNs do not alternate.
* The pixels start as Gaussian noise with the intended standard deviation 1 (the reference
  ``UniformDataset`` divides by the variance 5418.75 instead of the std, giving std ~0.014).

Pixels are clamped to the valid range after every step (``clamp``), so the batch is a real image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from datafree.hooks import BNStatistics
from datafree.losses import weighted_sum

from .base import Batch, SynthConfig, Synthesizer, register

__all__ = ["ZeroQ", "ZeroQConfig", "zeroq_statistic_loss"]


def zeroq_statistic_loss(
    means: torch.Tensor, stds: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZeroQ's per-sample statistic distance for one layer.

    Args:
        means: per-sample channel means of the layer's input.
        stds: per-sample channel standard deviations.
        target_mean: the statistics to match (BN running mean, or 0 for the input).
        target_std: the standard deviations to match (``sqrt(running_var + eps)``, or 1).

    Returns:
        ``(||target_mean - means||^2 / B, ||target_std - stds||^2 / B)``.

    Shape:
        - means, stds: ``(B, C)``.
        - target_mean, target_std: ``(C,)`` (broadcast over the batch).

    Reference: Cai et al., "ZeroQ", CVPR 2020 (``own_loss`` in ``distill_data.py``).
    """
    b = means.shape[0]
    mean_term = (target_mean - means).pow(2).sum() / b
    std_term = (target_std - stds).pow(2).sum() / b
    return mean_term, std_term


@dataclass
class ZeroQConfig(SynthConfig):
    """ZeroQ settings; defaults are the reference code's (``run.sh`` batch 64)."""

    batch_size: int = 64
    iterations: int = 500
    lr: float = 0.5
    plateau_patience: int = 100
    plateau_factor: float = 0.1
    min_lr: float = 1e-4
    init_std: float = 1.0
    input_weight: float = 1.0  # the input mean-0 / std-1 term
    bn_weight: float = 1.0
    eps: float = 1e-6
    clamp: bool = True


@register
class ZeroQ(Synthesizer):
    """ZeroQ's distilled data: per-sample BN-statistic matching on pixels (no labels)."""

    name = "zeroq"
    Config = ZeroQConfig
    requires_batchnorm = True
    config: ZeroQConfig

    def __init__(self, teacher: nn.Module, card: Any, config: ZeroQConfig) -> None:
        super().__init__(teacher, card, config)
        self.inputs: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.iteration = 0

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Fresh Gaussian pixels ``N(0, init_std^2)`` in normalised space."""
        cfg = self.config
        x = cfg.init_std * torch.randn((n, *self.input_shape), generator=generator)
        x = x.to(self.device)
        if cfg.clamp:
            self.normalizer.clamp_(x)
        self.inputs = x.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.inputs], lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
        self.iteration = 0

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ZeroQ's objective for pixels ``x`` ``(B, C, H, W)``: the total and its named terms."""
        cfg = self.config
        bn_mean = x.new_zeros(())
        bn_std = x.new_zeros(())
        with BNStatistics(self.teacher, per_sample=True) as stats:
            self.teacher(x)
            for mu, var, (rm, rv) in zip(stats.means, stats.vars, stats.running(), strict=True):
                assert mu is not None and var is not None, "a BN layer was not reached by the forward pass"
                m, s = zeroq_statistic_loss(mu, (var + cfg.eps).sqrt(), rm, (rv + cfg.eps).sqrt())
                bn_mean, bn_std = bn_mean + m, bn_std + s
        var_in, mean_in = torch.var_mean(x.flatten(2), dim=2, unbiased=False)  # (B, C, H*W) -> (B, C)
        in_mean, in_std = zeroq_statistic_loss(
            mean_in, (var_in + cfg.eps).sqrt(), x.new_zeros(()), x.new_ones(())
        )
        return weighted_sum(
            {
                "bn_mean": (cfg.bn_weight, bn_mean),
                "bn_std": (cfg.bn_weight, bn_std),
                "input_mean": (cfg.input_weight, in_mean),
                "input_std": (cfg.input_weight, in_std),
            }
        )

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One Adam step on the pixels, then the plateau scheduler on the step's loss."""
        if self.inputs is None:
            self.reset(self.config.batch_size)
        assert self.inputs is not None and self.optimizer is not None and self.scheduler is not None
        loss, logs = self.loss(self.inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            if self.config.clamp:
                self.normalizer.clamp_(self.inputs)
        self.scheduler.step(logs["total"].item())
        self.iteration += 1
        return logs

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Batch:
        """The current batch (or its first ``n`` images); ZeroQ has no target labels."""
        if self.inputs is None:
            raise RuntimeError("call reset() or step() before sample()")
        x = self.inputs.detach()
        n = len(x) if n is None else n
        return Batch(x[:n].clone(), None)

    def state_dict(self) -> dict[str, Any]:
        """Current pixels, optimiser, scheduler and iteration."""
        if self.inputs is None or self.optimizer is None or self.scheduler is None:
            return {"iteration": 0}
        return {
            "inputs": self.inputs.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if "inputs" not in state:
            return
        self.reset(len(state["inputs"]))
        assert self.inputs is not None and self.optimizer is not None and self.scheduler is not None
        with torch.no_grad():
            self.inputs.copy_(state["inputs"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
