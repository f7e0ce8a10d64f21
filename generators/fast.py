"""Fast-Datafree: a meta-learned generator that adapts to each new batch in a few steps.

Reference: Fang et al., "Up to 100x Faster Data-free Knowledge Distillation", AAAI 2022
(code: ``fast_meta.py``, ``hooks.py``; settings in shared/REFERENCES.md, "Fast-Datafree").

One *round* synthesises one batch:

1. draw ``z ~ N(0, I)`` and target labels; clone the persistent generator ``G`` into ``G'``;
2. for ``iterations`` (the paper's ``g_steps``: 2 to 10) inner steps, Adam on ``G'`` (``lr``) and
   ``z`` (``lr_z``) minimises::

       bn_weight * sum_l (||mu_run_l - mu~_l||_2 + ||var_run_l - var~_l||_2)
         + oh_weight * CE(T(aug(G'(z))), y) + adv_weight * L_adv(S, T)

   where ``mu~ = (1 - bn_momentum) * mu_batch + bn_momentum * mu_ema`` blends the batch statistic
   with an exponential average over previous rounds (``bn_mmt`` in the code), and ``L_adv`` is
   the negative KL between student and teacher on samples where both agree (CMI/Fast);
3. the meta-update moves ``G`` with the outer Adam (``lr * iterations``): first-order MAML sums
   the inner gradients of ``G'`` into ``G``'s gradient (the default, ``is_maml 1``); Reptile
   uses ``G - G'`` as the gradient;
4. the lowest-loss images of the round are the round's output; the EMA statistics are updated.

Because ``G`` keeps what it learned, each round needs only a few steps instead of DeepInversion's
hundreds. In this package a round is ``reset(n)`` + ``iterations`` x ``step()`` + ``sample()``,
i.e. exactly the offline protocol, so ``synthesize_dataset`` (one shard per round, the generator
persisting across shards) and a growing pool (:class:`datafree.sources.PoolSource`, Fast's own
"synthesise a batch, then ``kd_steps`` of KD" loop) both work.

Defaults are scaled to the shipped 16x16 digits teachers: a small generator (``ngf`` 16) so a
step costs about one teacher pass, batch 128, 5 inner steps; the loss weights are the paper's
CIFAR ones (bn 10, oh 0.5). ``adv_weight`` is 0 by default so ``datafree synthesize`` needs no
student; set it (e.g. 1.0) when a student is trained alongside.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from datafree import precision
from datafree.augment import random_jitter
from datafree.dataset import shard_seed
from datafree.errors import UserInputError
from datafree.hooks import BNStatistics, spatial_batchnorm_layers
from datafree.losses import weighted_sum
from datafree.progress import progress
from datafree.stats import StatisticsEMA
from datafree.utils import eval_mode

from .base import Batch, RoundSynthesizer, SynthConfig, register

__all__ = ["FastDatafree", "FastDatafreeConfig", "FastGenerator", "adversarial_agreement_loss"]


class FastGenerator(nn.Module):
    """CMI / Fast-Datafree generator: Linear -> BN -> (Up, Conv, BN, LReLU) x 2 -> Conv -> Sigmoid.

    Outputs pixels in ``[0, 1]``.

    Shape:
        - z: ``(B, nz)``.
        - Output: ``(B, C, H, W)``.
    """

    def __init__(self, nz: int, ngf: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = image_shape
        self.nz, self.ngf = nz, ngf
        self.init_hw = (max(1, h // 4), max(1, w // 4))
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_hw[0] * self.init_hw[1])
        blocks: list[nn.Module] = [
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        if (4 * self.init_hw[0], 4 * self.init_hw[1]) != (h, w):
            blocks.append(nn.Upsample(size=(h, w), mode="bilinear", align_corners=False))
        blocks += [nn.Conv2d(ngf, c, 3, 1, 1), nn.Sigmoid()]
        self.conv_blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.l1(z).view(len(z), 2 * self.ngf, *self.init_hw)  # (B, nz) -> (B, 2 ngf, H/4, W/4)
        return self.conv_blocks(x)


def adversarial_agreement_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """CMI / Fast-Datafree adversarial term: minus the student-teacher KL where their argmax agree.

    Minimising it makes the generator produce samples on which the student, though it still agrees
    with the teacher, has the largest divergence from it.

    Shape:
        - student_logits, teacher_logits: ``(B, K)``.

    Reference: Fang et al., "Contrastive Model Inversion", IJCAI 2021; Fast-Datafree, AAAI 2022.
    """
    mask = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    kl = F.kl_div(
        F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1), reduction="none", log_target=True
    )
    return -(kl.sum(1) * mask).mean()


@dataclass
class FastDatafreeConfig(SynthConfig):
    """Fast-Datafree settings (``iterations`` is the paper's ``g_steps``)."""

    batch_size: int = 128
    iterations: int = 5
    nz: int = 64
    ngf: int = 16
    lr: float = 4e-3  # inner lr of the generator copy (paper: 5e-3 / 3e-3 / 2e-3 for 2 / 5 / 10 steps)
    lr_z: float = 0.01
    beta1: float = 0.5
    beta2: float = 0.999
    bn_weight: float = 10.0
    first_bn_weight: float = 1.0
    oh_weight: float = 0.5
    adv_weight: float = 0.0
    bn_momentum: float = 0.9  # EMA blend of BN batch statistics across rounds (``bn_mmt``)
    meta: str = "fomaml"  # fomaml | reptile
    reptile_scale: float = 67.0  # Reptile's gradient multiplier in the reference code
    jitter: int = -1  # pixels of random roll; -1 means H // 8
    # BN layers whose input has fewer spatial positions (H x W at the card's input shape) stay out of the
    # BN loss (1: every layer): 5 leaves out the 1 x 1 and 2 x 2 maps (session 28; session 27's 2: 1 x 1)
    bn_min_hw: int = 5
    # The BN loss in units of each channel's running spread (BNStatisticLoss.standardized; our addition, as
    # deepinversion's bn_standardized); false: the paper's raw loss.
    bn_standardized: bool = False
    # synthesis-only rounds (meta-updates) of the meta-generator before its first sampled batch: the
    # paper's 20-epoch warm-up (``warmup``); the growing pool runs none (``pool_options``)
    warmup_rounds: int = 20

    positive_fields: ClassVar[tuple[str, ...]] = ("nz", "ngf")
    # no warm-up before session 9 (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {"warmup_rounds": 0}

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.meta not in _META_GRADIENTS:
            raise UserInputError(f"meta must be one of {', '.join(_META_GRADIENTS)}, got {self.meta!r}")
        if self.warmup_rounds < 0:
            raise UserInputError(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise UserInputError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")


def _fomaml_accumulate(meta: nn.Module, fast: nn.Module, scale: float) -> None:
    """First-order MAML: add the inner-step gradients of ``fast`` to ``meta``'s gradients."""
    for p, q in zip(meta.parameters(), fast.parameters(), strict=True):
        if q.grad is not None:
            p.grad = q.grad.detach().clone() if p.grad is None else p.grad.add_(q.grad)


def _reptile_gradient(meta: nn.Module, fast: nn.Module, scale: float) -> None:
    """Reptile: the meta gradient is ``scale * (theta - theta')``."""
    for p, q in zip(meta.parameters(), fast.parameters(), strict=True):
        p.grad = (p.detach() - q.detach()).mul_(scale)


# The warm-up rounds draw from shard_seed(seed, _WARMUP_STREAM + round): apart from a dataset's shards.
_WARMUP_STREAM = 2**40

# meta rule -> (called after every inner step?, gradient function)
_META_GRADIENTS = {"fomaml": (True, _fomaml_accumulate), "reptile": (False, _reptile_gradient)}


@register
class FastDatafree(RoundSynthesizer):
    """Fast-Datafree (Fang et al. 2022): meta-learned generator, a few adaptation steps per batch."""

    name = "fast"
    Config = FastDatafreeConfig
    # the growing-pool settings: RoundSynthesizer's (measured on this backend)
    budget_passes: ClassVar[float | None] = 1  # one teacher pass per step (the compute budget's estimate)
    # The growing pool keeps the loop it was measured with (docs/fidelity.md, "Session 8"): its first
    # rounds are a small share of a pool that grows for hundreds of rounds. A written dataset is
    # ``num_images / batch_size`` rounds only (8 at the defaults), so it warms up first.
    pool_options: ClassVar[dict[str, Any]] = {"warmup_rounds": 0}
    # A written dataset where the CPU budget leaves room: 1,024 -> 2,048 -> 4,096 images while the run fits
    # (the KD steps grow with them, rules.kd_budget). Five generator steps a batch make an image cheap;
    # the 1,024 images' KD was the limit on the teachers it changes (docs/fidelity.md, "Session 11":
    # resnet8_digits 93.8 / 96.1 / 96.7% -> 4,096 images, mobilenetv2_32 95.8 / 97.8% -> 4,096 images).
    budget_max_images: ClassVar[int | None] = 4096
    config: FastDatafreeConfig

    def __init__(self, teacher: nn.Module, card: Any, config: FastDatafreeConfig) -> None:
        super().__init__(teacher, card, config)
        cfg = config
        torch.manual_seed(cfg.seed)  # the generator's initial weights follow the seed
        precision.prepare_module(self.teacher)  # channels_last when asked (the generator stays as it is)
        self.meta_generator = FastGenerator(cfg.nz, cfg.ngf, self.input_shape).to(self.device).train()
        self.meta_optimizer = torch.optim.Adam(
            self.meta_generator.parameters(), lr=cfg.lr * cfg.iterations, betas=(cfg.beta1, cfg.beta2)
        )
        self.jitter = cfg.jitter if cfg.jitter >= 0 else max(1, self.input_shape[1] // 8)
        self.bn_ema = StatisticsEMA(cfg.bn_momentum)  # the reference's bn_mmt
        self.stat_layers = spatial_batchnorm_layers(self.teacher, self.input_shape, cfg.bn_min_hw)
        self.rounds = 0
        self._clear_round()

    def warm_up(self, n: int, student: nn.Module | None = None) -> int:
        """Run the synthesis-only rounds of ``n`` images still due (``warmup_rounds`` minus the rounds done).

        Fast-Datafree's warm-up (``fast_meta.py``: 20 epochs of synthesis before the first KD epoch): a
        fresh meta-generator has learned nothing, and a written dataset of 8 rounds of 5 steps would be
        the noise of its first meta-updates (docs/fidelity.md, "Session 9: offline fast"). Each round is
        an ordinary one (``reset`` + ``iterations`` steps + the meta-update) whose images are dropped;
        its ``z`` and labels come from a stream of ``seed``, so a run is reproducible. ``n`` is the
        run's batch (the first one asked for), so a warm-up round costs what a written round costs.

        Returns:
            The rounds run.
        """
        cfg = self.config
        due = max(0, cfg.warmup_rounds - self.rounds)
        for _ in progress(range(due), desc=f"{self.name} warm-up"):  # visible: minutes on a large teacher
            generator = torch.Generator().manual_seed(shard_seed(cfg.seed, _WARMUP_STREAM + self.rounds))
            self.reset(n, generator)
            for _ in range(cfg.iterations):
                self.step(student)
        self._clear_round()
        return due

    def synthesize(
        self,
        n: int,
        generator: torch.Generator | None = None,
        student: nn.Module | None = None,
        desc: str = "",
    ) -> Batch:
        """One round (:meth:`RoundSynthesizer.synthesize`), after the warm-up rounds still due."""
        self.warm_up(n, student)
        return super().synthesize(n, generator, student=student, desc=desc)

    def _clear_round(self) -> None:
        self.fast: FastGenerator | None = None
        self.z: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.best: torch.Tensor | None = None
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        self.bn_ema.last = None  # the statistics of this round's steps only
        self.iteration = 0
        self.generator: torch.Generator | None = None

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start a round: fresh ``z`` and balanced shuffled labels, a copy of the meta-generator."""
        cfg = self.config
        self._clear_round()
        self.generator = generator
        self.z = torch.randn((n, cfg.nz), generator=generator).to(self.device).requires_grad_(True)
        labels = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=generator)]
        self.targets = labels.to(self.device)
        self.fast = copy.deepcopy(self.meta_generator)
        self.optimizer = torch.optim.Adam(
            [{"params": self.fast.parameters()}, {"params": [self.z], "lr": cfg.lr_z}],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
        )

    def _loss(self, student: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        assert self.fast is not None and self.z is not None
        pixels = self.fast(self.z)  # (B, C, H, W) in [0, 1]
        x = self.normalizer(pixels)
        xa = precision.prepare_input(random_jitter(x, self.jitter, self.generator))
        with BNStatistics(self.teacher, layers=self.stat_layers, standardized=cfg.bn_standardized) as stats:
            # the teacher's forward under --precision (the small generator stays fp32); the hook
            # keeps the BN statistics in fp32 and the losses are reduced in fp32
            with precision.autocast(self.device):
                logits = self.teacher(xa)
            logits = precision.fp32(logits)
            means, variances = self.bn_ema.blend(stats.means, stats.vars)  # type: ignore[arg-type]
            bn = stats.loss(cfg.first_bn_weight, means, variances)
        terms = {
            "bn": (cfg.bn_weight, bn),
            "oh": (cfg.oh_weight, F.cross_entropy(logits, self.targets)),
        }
        if cfg.adv_weight > 0:
            with precision.autocast(self.device):
                s_logits = precision.fp32(self.check_student(student)(xa))
            terms["adv"] = (cfg.adv_weight, adversarial_agreement_loss(s_logits, logits))
        loss, logs = weighted_sum(terms)
        return loss, x, logs

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One inner step of the round (and the meta-update after the last one)."""
        if self.fast is None:
            self.reset(self.config.batch_size)
        assert self.fast is not None and self.optimizer is not None
        cfg = self.config
        with eval_mode(student):
            loss, x, logs = self._loss(student)
        with torch.no_grad():
            # keep the lowest-loss images of the round, with tensor ops only (no host sync on GPU)
            better = logs["total"] < self.best_loss
            self.best_loss = torch.where(better, logs["total"], self.best_loss)
            self.best = x.detach() if self.best is None else torch.where(better, x.detach(), self.best)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        every_step, meta_grad = _META_GRADIENTS[cfg.meta]
        if self.iteration == 0:
            self.meta_optimizer.zero_grad(set_to_none=True)
        if every_step:
            meta_grad(self.meta_generator, self.fast, cfg.reptile_scale)
        self.optimizer.step()
        self.iteration += 1
        if self.iteration == cfg.iterations:
            self._end_round()
        return logs

    def _end_round(self) -> None:
        """Meta-update of the persistent generator and the EMA of BN statistics."""
        cfg = self.config
        every_step, meta_grad = _META_GRADIENTS[cfg.meta]
        if not every_step:
            meta_grad(self.meta_generator, self.fast, cfg.reptile_scale)  # type: ignore[arg-type]
        self.meta_optimizer.step()
        self.bn_ema.end_round()
        self.rounds += 1

    def state_dict(self) -> dict[str, Any]:
        """Meta-generator, meta-optimiser, EMA statistics and the current round."""
        state: dict[str, Any] = {
            "meta_generator": self.meta_generator.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "ema": StatisticsEMA.to(self.bn_ema.average, "cpu"),
            "rounds": self.rounds,
            "iteration": self.iteration,
        }
        if self.fast is not None and self.optimizer is not None and self.z is not None:
            state.update(
                fast=self.fast.state_dict(),
                optimizer=self.optimizer.state_dict(),
                z=self.z.detach().cpu(),
                targets=self.targets.cpu() if self.targets is not None else None,
                best=self.best.cpu() if self.best is not None else None,
                best_loss=self.best_loss.cpu(),
                last_stats=StatisticsEMA.to(self.bn_ema.last, "cpu"),
                generator=self.generator.get_state() if self.generator is not None else None,
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        dev = self.device
        self.meta_generator.load_state_dict(state["meta_generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.bn_ema.average = StatisticsEMA.to(state.get("ema"), dev)
        self.rounds = int(state["rounds"])
        self._clear_round()
        if "fast" not in state:
            return
        self.reset(len(state["z"]))
        assert self.fast is not None and self.optimizer is not None and self.z is not None
        self.fast.load_state_dict(state["fast"])
        with torch.no_grad():
            self.z.copy_(state["z"].to(dev))
        self.optimizer.load_state_dict(state["optimizer"])
        self.targets = state["targets"].to(dev) if state["targets"] is not None else None
        self.best = state["best"].to(dev) if state["best"] is not None else None
        self.best_loss = state["best_loss"].to(dev)
        self.bn_ema.last = StatisticsEMA.to(state["last_stats"] or None, dev)
        self.iteration = int(state["iteration"])
        if state.get("generator") is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
