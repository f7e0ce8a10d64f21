"""NAYER: a persistent generator fed label embeddings through a noisy layer re-initialised every round.

Reference: Tran et al., "NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free
Knowledge Distillation", CVPR 2024 (code: tmtuan1307/NAYER ``datafree/synthesis/nayer.py``,
``datafree/models/generator.py::NLGenerator``, ``run/nayer_*.sh``). One *round* synthesises one batch:

1. the *noisy layer*, a linear map ``le_size -> le_emb_size`` (one per group of ``group_size``
   samples), is re-initialised (weights ``N(0, 1)``, biases 0); the rest of the generator persists
   across rounds (and is re-initialised every ``g_life`` rounds when ``g_life > 0``);
2. the generator maps each target label's embedding (``le_size``) through BatchNorm1d, the noisy
   layer and the CMI / Fast-Datafree generator body (:class:`generators.fast.FastGenerator`) to an
   image; a fresh Adam (``lr``, betas 0.5 / 0.999) trains the whole generator for ``iterations``
   steps (the paper's ``g_steps``, 30-40 on CIFAR) on::

       bn_weight * sum_l (||mu_l - mu_run_l||_2 + ||var_l - var_run_l||_2)
         + oh_weight * CE(T(aug(x)), y) + adv_weight * L_adv(S, T)

   with ``aug`` a random crop after ``H / 8`` zero padding (and a flip, off by default: digits are
   not mirror-symmetric);
3. the lowest-loss batch of the round is its output.

Labels are balanced, ``0 .. K-1`` repeated, so every noisy-layer group holds one image per class.

**Label embeddings, offline.** NAYER embeds the class names with CLIP's text encoder (512-d).
There are no CLIP weights offline, so ``embedding`` selects a substitute: ``"random"`` (default:
fixed ``N(0, I)`` vectors of size ``le_size``, one per class, drawn from ``embedding_seed``;
like CLIP's they are distinct, fixed codes of the classes, but carry no similarity between related
class names), ``"learned"`` (the same initial vectors, trained with the generator) or
``"onehot"`` (the class index, zero-padded to ``le_size``). docs/methods.md gives what each changes.

Deviations, each for the 16 px digits teachers and the CPU: the generator body of ``fast`` (``ngf``
16); loss weights bn 1 / oh 1 instead of the scripts' 10 / 0.5 (with 10 / 0.5 the BN term dominated
and the teacher agreed with the target labels on 12% of a 60-step batch, 81% with 1 / 1; bn 3 lost
3 points in ``compress``); rounds of 256 images x 40 steps (the scripts: 400 x 30-40) when writing a
dataset, but rounds of 32 x 20 steps in the growing-pool loop (``pool_batch_size``,
``pool_options``: 5, 10 and 40 steps were slower to 95% of the teacher); ``group_size`` defaults to the
number of classes (the reference uses groups of 100 images, so on 10 classes each group repeats
every image ten times); ``adv_weight`` 0 by default (the paper's 1.33 needs a student, e.g.
``distill --pool --set adv_weight=1.33``); the paper's warm-up epochs of synthesis without KD belong
to its training script, not to the synthesizer. The reference's ``bn_mmt`` (0.9 in its
``datafree_kd.py``: each round's BN batch statistics blended with an EMA over earlier rounds, as
Fast-Datafree's) is ``bn_momentum``, 0 by default: 0.9 was slower to 95% of the teacher in the pool
loop here (380 against 320 KD steps, docs/methods.md "Session 5"). DeepInversion's BN/CE balance is
``bn_ce_max_ratio`` (fixed once, at the run's first step), 0 by default: on a 32 px MobileNetV2 whose
BN term starts 374x its CE it raised the teacher's agreement with the targets but lowered the
student (docs/methods.md "Session 6").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import UserInputError
from datafree.hooks import BNStatistics, spatial_batchnorm_layers
from datafree.losses import bn_ce_scale, weighted_sum
from datafree.stats import StatisticsEMA
from datafree.utils import eval_mode

from .base import RoundSynthesizer, SynthConfig, register
from .cmi import random_crop_view
from .fast import FastGenerator, adversarial_agreement_loss

__all__ = ["NAYER", "NAYERConfig", "NoisyLayerGenerator", "EMBEDDINGS"]

EMBEDDINGS = ("random", "learned", "onehot")


def label_embeddings(kind: str, num_classes: int, size: int, seed: int) -> torch.Tensor:
    """The offline substitute for NAYER's CLIP text embeddings: ``(num_classes, size)``."""
    if kind == "onehot":
        if size < num_classes:
            raise UserInputError(f"embedding 'onehot' needs le_size >= the {num_classes} classes, got {size}")
        return torch.eye(num_classes, size)
    return torch.randn((num_classes, size), generator=torch.Generator().manual_seed(seed))


class NoisyLayerGenerator(nn.Module):
    """NAYER's ``NLGenerator``: label embedding -> BatchNorm1d -> noisy layer -> generator body.

    The noisy layer has one ``(le_size, le_emb_size)`` weight per group of ``group_size`` samples
    (applied with a batched matrix product); :meth:`reset_noisy_layer` re-draws it for ``n`` samples.

    Shape:
        - targets: ``(B,)`` class indices; output ``(B, C, H, W)`` pixels in ``[0, 1]``.
    """

    def __init__(
        self, embeddings: torch.Tensor, learned: bool, le_emb_size: int, ngf: int, group_size: int,
        image_shape: tuple[int, int, int],
    ) -> None:  # fmt: skip
        super().__init__()
        if learned:
            self.embeddings = nn.Parameter(embeddings.clone())
        else:
            self.register_buffer("embeddings", embeddings.clone())
        self.group_size = group_size
        self.le_emb_size = le_emb_size
        self.norm = nn.BatchNorm1d(embeddings.shape[1])
        self.noisy_weight = nn.Parameter(torch.zeros(1, embeddings.shape[1], le_emb_size))
        self.noisy_bias = nn.Parameter(torch.zeros(1, 1, le_emb_size))
        self.body = FastGenerator(le_emb_size, ngf, image_shape)

    def reset_noisy_layer(self, n: int, generator: torch.Generator | None = None) -> None:
        """Fresh noisy layer for batches of ``n``: weights ``N(0, 1)``, biases 0 (NAYER's ``re_init_le``)."""
        groups = math.ceil(n / self.group_size)
        dev = self.noisy_weight.device
        w = torch.randn((groups, self.noisy_weight.shape[1], self.le_emb_size), generator=generator)
        self.noisy_weight = nn.Parameter(w.to(dev))
        self.noisy_bias = nn.Parameter(torch.zeros(groups, 1, self.le_emb_size, device=dev))

    def persistent_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the noisy layer's."""
        return [p for n, p in self.named_parameters() if not n.startswith("noisy_")]

    def forward(self, targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        le = self.embeddings[targets]  # (B, le_size)
        if len(le) > 1 or not self.training:
            le = self.norm(le)
        else:  # batch statistics of one sample are undefined: the running ones (a last shard of 1 image)
            le = F.batch_norm(
                le, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias
            )
        groups = self.noisy_weight.shape[0]
        b = len(le)
        pad = groups * self.group_size - b
        if pad < 0:
            raise ValueError(
                f"the noisy layer was drawn for at most {groups * self.group_size} samples, got {b}"
            )
        x = F.pad(le, (0, 0, 0, pad)).view(groups, self.group_size, -1)  # (G, g, le_size)
        v = torch.baddbmm(self.noisy_bias, x, self.noisy_weight).reshape(groups * self.group_size, -1)[:b]
        return self.body(v)


@dataclass
class NAYERConfig(SynthConfig):
    """NAYER settings (``iterations`` is the paper's ``g_steps`` per round)."""

    batch_size: int = 256  # a written dataset's rounds (the paper's synthesis batch: 400); the pool's: 32
    iterations: int = 40  # the paper's g_steps (30-40 on CIFAR); the pool loop's: 20 (pool_options)
    ngf: int = 16
    le_size: int = 512
    le_emb_size: int = 256
    group_size: int = 0  # samples per noisy-layer group; 0 means the number of classes
    embedding: str = "random"  # random | learned | onehot (offline substitutes for CLIP's)
    embedding_seed: int = 0
    lr: float = 4e-3
    beta1: float = 0.5
    beta2: float = 0.999
    bn_weight: float = 1.0  # the paper's 10 and 0.5: its CE barely moved on the digits teacher
    first_bn_weight: float = 1.0
    # BN layers whose input has fewer spatial positions (H x W at the card's input shape) stay out of the
    # BN loss (1: every layer; datafree.hooks.spatial_batchnorm_layers)
    bn_min_hw: int = 1
    # Each BN layer's terms in units of the channel's running spread (DeepInversion's option since session
    # 29: datafree.losses.BNStatisticLoss.standardized); false: the paper's raw terms. Paired runs, seed 0
    # (docs/fidelity.md, "Session 30"): wrn40_2_32 94.2 -> 97.8%, resnet18_32 98.6 -> 99.4%,
    # resnet8_digits 99.2 -> 99.4%, vgg8_bn_32 100.0 -> 100.0%, mobilenetv2_32 97.8 -> 97.5%.
    bn_standardized: bool = True
    oh_weight: float = 1.0
    adv_weight: float = 0.0
    g_life: int = 0  # re-initialise the whole generator every g_life rounds (0: never)
    bn_momentum: float = 0.0  # EMA blend of BN batch statistics across rounds (the paper's ``bn_mmt``)
    # BN/CE balance (DeepInversion's rule, once per run): when bn_weight x BN starts more than
    # bn_ce_max_ratio times oh_weight x CE (at the untrained generator's first step), bn_weight is
    # scaled down to that ratio for the whole run. 0 (default) disables it: on mobilenetv2_32 it raised
    # the teacher's agreement with the targets but lowered the student (docs/methods.md, "Session 6").
    bn_ce_max_ratio: float = 0.0
    pad: int = -1  # crop padding of the augmentation; -1 means H // 8
    flip: bool = False

    # the raw BN loss of datasets written before the option (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {"bn_standardized": False}
    positive_fields: ClassVar[tuple[str, ...]] = ("ngf", "le_size", "le_emb_size")
    non_negative_fields: ClassVar[tuple[str, ...]] = ("group_size", "g_life")

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.bn_ce_max_ratio < 0:
            raise UserInputError(f"bn_ce_max_ratio must be >= 0, got {self.bn_ce_max_ratio}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise UserInputError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.embedding not in EMBEDDINGS:
            raise UserInputError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")


@register
class NAYER(RoundSynthesizer):
    """NAYER (Tran et al. 2024): label embeddings through a re-drawn noisy layer, persistent generator."""

    name = "nayer"
    Config = NAYERConfig
    # The published loop (``synthesize(); train(kd_steps)`` on a growing pool) with the pool settings
    # of ``fast`` (RoundSynthesizer's: rounds of 32 images, 20 KD steps of batch 64 at lr 0.1) and 20
    # generator steps per round; a written dataset uses the paper's 40 steps on rounds of 256
    # (docs/methods.md gives the runs that measured both).
    pool_options: ClassVar[dict[str, Any]] = {"iterations": 20}
    # The KD stage warps the student's images (rules.KD_AFFINE, as the online backends'; our rule over the
    # paper's crop and flip): mobilenetv2_32 seeds 0 / 1 97.8 / 97.5 -> 98.6 / 98.3%,
    # resnet8_digits seed 1 98.9 -> 99.4% (docs/methods.md, "Session 40").
    kd_warp: ClassVar[bool] = True
    budget_passes: ClassVar[float | None] = 1  # one teacher pass per step (the compute budget's estimate)
    # A written dataset (a cheap teacher; an expensive one runs the pool) where the CPU budget leaves room
    # doubles its images while the run fits, up to 8,192, as ``fast``'s (the KD steps grow with them,
    # rules.kd_budget). Every doubling helped on both teachers it was measured on, seeds 0-2 (1,024 / 2,048 /
    # 4,096 / 8,192 images; docs/methods.md, "Session 22"): resnet8_digits mean 97.1 / 98.0 / 98.9 / 99.5%,
    # the 3x24x24 custom teacher 83.3 / 89.1 / 89.9 / 92.9% of the teacher.
    budget_max_images: ClassVar[int | None] = 8192
    config: NAYERConfig

    def __init__(self, teacher: nn.Module, card: Any, config: NAYERConfig) -> None:
        super().__init__(teacher, card, config)
        self.group_size = config.group_size or self.num_classes
        self.pad = config.pad if config.pad >= 0 else max(1, self.input_shape[1] // 8)
        self.rounds = 0
        self.bn_ema = StatisticsEMA(config.bn_momentum)  # NAYER's and Fast-Datafree's ``bn_mmt``
        self.stat_layers = spatial_batchnorm_layers(self.teacher, self.input_shape, config.bn_min_hw)
        self.bn_scale: float | None = None  # the BN/CE balance, fixed at the run's first step
        self._build()
        self._clear_round()

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed + 7919 * self.rounds)  # a re-initialised generator follows seed and round
        emb = label_embeddings(cfg.embedding, self.num_classes, cfg.le_size, cfg.embedding_seed)
        self.net = NoisyLayerGenerator(
            emb, cfg.embedding == "learned", cfg.le_emb_size, cfg.ngf, self.group_size, self.input_shape
        ).to(self.device).train()  # fmt: skip

    def _clear_round(self) -> None:
        self.targets: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.best: torch.Tensor | None = None
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        self.iteration = 0
        self.generator: torch.Generator | None = None

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start a round: balanced labels, a fresh noisy layer, a fresh Adam over the whole generator."""
        cfg = self.config
        self._clear_round()
        if cfg.g_life and self.rounds and self.rounds % cfg.g_life == 0:
            self._build()
        self.generator = generator
        self.targets = (torch.arange(n) % self.num_classes).to(self.device)
        self.net.reset_noisy_layer(n, generator)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One Adam step of the generator (noisy layer included)."""
        if self.targets is None:
            self.reset(self.config.batch_size)
        assert self.targets is not None and self.optimizer is not None
        cfg = self.config
        pixels = self.net(self.targets)
        xa = self.normalizer(random_crop_view(pixels, self.pad, cfg.flip, self.generator))
        with BNStatistics(self.teacher, layers=self.stat_layers, standardized=cfg.bn_standardized) as stats:
            logits = self.teacher(xa)
            means, variances = self.bn_ema.blend(stats.means, stats.vars)  # type: ignore[arg-type]
            bn = stats.loss(cfg.first_bn_weight, means, variances)
        ce = F.cross_entropy(logits, self.targets)
        if self.bn_scale is None:  # one host sync per run, none when the balance is off
            self.bn_scale = 1.0
            if cfg.bn_ce_max_ratio > 0:
                self.bn_scale = bn_ce_scale(bn, ce, cfg.bn_weight, cfg.oh_weight, cfg.bn_ce_max_ratio)
        terms = {"bn": (cfg.bn_weight * self.bn_scale, bn), "oh": (cfg.oh_weight, ce)}
        if cfg.adv_weight > 0:
            with eval_mode(self.check_student(student)):
                terms["adv"] = (cfg.adv_weight, adversarial_agreement_loss(student(xa), logits))  # type: ignore[misc]
        loss, logs = weighted_sum(terms)
        with torch.no_grad():  # keep the lowest-loss batch of the round (tensor ops: no host sync)
            better = logs["total"] < self.best_loss
            self.best_loss = torch.where(better, logs["total"], self.best_loss)
            x = self.normalizer(pixels.detach())
            self.best = x if self.best is None else torch.where(better, x, self.best)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        if self.iteration == cfg.iterations:
            self.bn_ema.end_round()
            self.rounds += 1
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Generator (noisy layer included), the round's optimiser, labels and best batch."""
        state: dict[str, Any] = {
            "net": self.net.state_dict(),
            "rounds": self.rounds,
            "iteration": self.iteration,
            "ema": StatisticsEMA.to(self.bn_ema.average, "cpu"),
            "last_stats": StatisticsEMA.to(self.bn_ema.last, "cpu"),
            "bn_scale": self.bn_scale,
        }
        if self.targets is not None and self.optimizer is not None:
            state.update(
                optimizer=self.optimizer.state_dict(),
                targets=self.targets.cpu(),
                best=self.best.cpu() if self.best is not None else None,
                best_loss=self.best_loss.cpu(),
                generator=self.generator.get_state() if self.generator is not None else None,
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        dev = self.device
        self.rounds = int(state["rounds"])
        self.bn_ema.average = StatisticsEMA.to(state.get("ema"), dev)
        self.bn_ema.last = StatisticsEMA.to(state.get("last_stats"), dev)
        # a checkpoint from before the balance ran without it (scale 1) once it had taken a step
        self.bn_scale = state.get("bn_scale", 1.0 if state.get("rounds") or state.get("iteration") else None)
        self._clear_round()
        groups = state["net"]["noisy_weight"].shape[0]
        self.net.reset_noisy_layer(groups * self.group_size)  # shapes of the saved noisy layer
        if "targets" in state:
            self.reset(len(state["targets"]))
        self.net.load_state_dict(state["net"])
        if "targets" not in state:
            return
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["optimizer"])
        self.best = state["best"].to(dev) if state["best"] is not None else None
        self.best_loss = state["best_loss"].to(dev)
        self.iteration = int(state["iteration"])
        if state.get("generator") is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
