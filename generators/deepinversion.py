"""DeepInversion: optimise pixels so the teacher's BatchNorm statistics and class scores match.

Reference: Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
CVPR 2020. Loss (NVlabs settings, see shared/REFERENCES.md)::

    CE(T(x~), y) + bn_weight * sum_l s_l (||mu_l(x~) - mu_l||_2 + ||var_l(x~) - var_l||_2)
      + tv_l2_weight * TV_L2(x) + tv_l1_weight * TV_L1(x) + l2_weight * ||x||_2
      + competition_weight * (1 - clamp(JS_T(S(x~), T(x~)), 0, 1))       # Adaptive DeepInversion

where ``x~`` is ``x`` after a random roll (jitter) and an optional flip, ``s_0 = first_bn_weight``,
Adam with warm-up + cosine learning rate, pixels kept in the valid range, lowest-loss batch kept.
``bn_standardized`` (not in the paper) measures each layer's terms in units of the channel's running
spread: ``||(mu_l - mu_l,run) / sigma_l|| + ||(var_l - var_l,run) / sigma_l^2||``.

The step runs the teacher with its BN layers folded into the preceding convolutions where that is exact
(:mod:`datafree.bnfold`, ``fold_bn``): the BN input statistics are recovered from the folded outputs, so
the loss is the same up to fp32 rounding without the BN layers' own forward and backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from datafree import precision
from datafree.augment import random_flip, random_jitter
from datafree.bnfold import fold_batchnorm
from datafree.bnstats_loss import forget_shifts
from datafree.errors import UserInputError
from datafree.hooks import (
    BNStatistics,
    input_mean_from_batchnorm,
    input_structure_from_batchnorm,
    spatial_batchnorm_layers,
    structured_images,
)
from datafree.losses import bn_ce_scale, image_priors, js_divergence, l2_prior, tv_l1, weighted_sum
from datafree.rules import deepinversion_defaults

from .base import Batch, SynthConfig, Synthesizer, register, warmup_cosine

#: Whether a CPU step updates the pixels with the fused Adam kernel directly (:func:`_fused_adam_step`)
#: instead of through ``Optimizer.step`` (``bench/di_step_variants.py``'s ``adam=optimizer`` sets it off).
DIRECT_ADAM = True


def _fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.step()`` of a fused single-tensor CPU Adam as its one kernel call; False when not one.

    Same kernel, arguments and state tensors as ``torch.optim.Adam(fused=True).step()`` (its step count
    incremented first, as ``torch.optim.adam._fused_adam`` does), so the update is bit-identical and the
    optimiser's ``state_dict`` (resume) is unchanged. What it leaves out is ``Optimizer.step``'s Python
    around the kernel (hooks, grouping by device, the grad-mode wrapper): right after the teacher's
    backward that code runs from cold caches and took about 0.4 ms against 0.1 ms for the kernel call on
    resnet8_digits' step at batch 128, 2 threads (``bench/di_step_phases.py``). The first step (the state
    is made by ``Optimizer.step``) and every other configuration take the usual path.
    """
    if not DIRECT_ADAM or not hasattr(torch, "_fused_adam_") or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    params = group["params"]
    if len(params) != 1 or not group.get("fused") or group.get("decoupled_weight_decay"):
        return False
    p = params[0]
    state = optimizer.state.get(p)
    if p.grad is None or p.device.type != "cpu" or not state or "exp_avg" not in state:
        return False
    if group["amsgrad"] or group["maximize"] or group["weight_decay"] or group["differentiable"]:
        return False
    if any(isinstance(v, torch.Tensor) for v in (group["lr"], *group["betas"])):
        return False  # tensor hyper-parameters: Optimizer.step converts them
    if not isinstance(state["step"], torch.Tensor):
        return False
    state["step"].add_(1)
    torch._fused_adam_(
        [p], [p.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
        amsgrad=False, lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
        weight_decay=0.0, eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
    )  # fmt: skip
    return True


__all__ = ["DeepInversion", "DeepInversionConfig"]


@dataclass
class DeepInversionConfig(SynthConfig):
    """DeepInversion settings, measured on the 1x16x16 teachers; see REFERENCES.md.

    Through :func:`generators.create_synthesizer` the batch, the step cap and the prior weights come
    from :func:`datafree.rules.deepinversion_defaults` (equal to these at 1x16x16).
    """

    batch_size: int = 256
    iterations: int = 200
    lr: float = 0.1
    beta1: float = 0.5
    beta2: float = 0.9
    warmup: int = 20
    # NVlabs CIFAR-10's r_feature (the paper's parameters; CMI's DeepInversion script too), under the BN/CE
    # balance below, which scales it back on a batch whose BN term starts above 26x the CE (most batches
    # of the 32 px suite teachers, whose cells still moved by -9 to +34 points). Was 1.0 until session 22:
    # the 3x24x24 custom teacher's images were colour blobs the teacher took for digits (agreement 99.9%),
    # its student at 29.8 / 49.9 / 34.8%; at 10: 96.3 / 93.8 / 92.6%, resnet8_digits 99.2 / 99.4 / 99.4%
    # (docs/fidelity.md, "Session 22").
    bn_weight: float = 10.0
    first_bn_weight: float = 10.0
    # BN layers whose input has fewer spatial positions (H x W at the card's input shape) stay out of the
    # BN loss (1: every layer; datafree.hooks.spatial_batchnorm_layers)
    bn_min_hw: int = 1
    # Each BN layer's terms on its statistics in units of the channel's running spread (the BN output's
    # mean against 0 and variance against 1; datafree.losses.BNStatisticLoss.standardized) instead of the
    # raw input's (the paper's; false). Not in the paper: the raw terms weigh a layer by its activations'
    # scale, and on WRN-40-2 at 32 px they made DeepInversion match the last stage better than real digits
    # do and the early layers 10-19x worse (student 10.3% -> 85.0%; docs/fidelity.md, "Session 29").
    bn_standardized: bool = True
    ce_weight: float = 1.0
    tv_l2_weight: float = 1e-2  # 1e-4 left checkerboard artifacts on 16-24 px digits (see README)
    tv_l1_weight: float = 0.0
    l2_weight: float = 1e-5
    # The batch's first pixels: "normal", the paper's N(0, 1) in normalised space; "teacher" (our addition):
    # Gaussian images of the structure the teacher's first BatchNorm layer says its training images had
    # (their mean, spread, colour correlation and grain: datafree.hooks.input_structure_from_batchnorm,
    # structured_images); "normal" where none can be recovered (no BN, a non-affine stem).
    init: str = "normal"
    competition_weight: float = 0.0
    competition_temperature: float = 3.0
    jitter: int = -1  # pixels; -1 means H // 16 (2 px at 32, 1 px at 16)
    flip: bool = False
    keep_best: bool = True
    # A batch stops before ``iterations`` (the cap) when its lowest loss has not improved by more than
    # plateau_tol (relative) over the last plateau_patience steps; -1 = max(20, iterations // 10);
    # plateau_tol 0 runs every step.
    plateau_patience: int = -1
    plateau_tol: float = 0.005
    # BN/CE balance: when the BN term starts more than bn_ce_max_ratio times the cross-entropy (at a
    # batch's first step), bn_weight is scaled down to that ratio for the batch; 0 disables.
    bn_ce_max_ratio: float = 26.0
    # Fold each eval-mode BN that follows a convolution into it for the step's forward/backward and
    # recover the BN input statistics from the folded output (datafree.bnfold): same loss and gradients
    # up to fp32 rounding, without the BN layers' own forward and backward. Off: hooks on every BN.
    fold_bn: bool = True
    # With fold_bn: all BN layers' statistics and the BN loss in one autograd node (datafree.bnstats_loss;
    # same loss and gradients up to fp32 rounding, about 40% fewer small operations a step); less CPU per
    # step than the per-layer nodes on all five BN teachers of the suite (docs/speed.md, "Session 7").
    one_node_stats: bool = True

    # the raw BN loss of datasets written before the option (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {"bn_standardized": False}

    def validate(self) -> None:
        """Also check ``plateau_tol`` (Adam's betas: :meth:`SynthConfig.validate`)."""
        super().validate()
        if not 0.0 <= self.plateau_tol < 1.0:
            raise UserInputError(f"plateau_tol must be in [0, 1), got {self.plateau_tol}")
        if self.init not in ("normal", "teacher"):
            raise UserInputError(f"init must be 'normal' or 'teacher', got {self.init!r}")


@register
class DeepInversion(Synthesizer):
    """Pixel optimisation against BN statistics (DeepInversion / Adaptive DeepInversion)."""

    name = "deepinversion"
    Config = DeepInversionConfig
    requires_batchnorm = True
    #: one teacher pass (forward, backward to the pixels) per step, for the compute budget of a run on a
    #: CPU (datafree.plan.budget_settings; priced by datafree.rules.SYNTH_PRICES' own row). The plateau stop
    #: ends most batches before ``iterations``, so the budget's estimate, at the cap, is an upper bound.
    budget_passes: ClassVar[float | None] = 1
    #: under half of its images classed as their targets, DeepInversion's students failed: in 36 runs of
    #: six teachers (bench/results, sessions 10-23), the five under 40% (MobileNetV2, WRN-40-2 at 32 px)
    #: kept 30-64% of the teacher. One way only: over it, two runs failed too (the 3x24x24 teacher's colour
    #: blobs at BN weight 1; MobileNetV2 at 2,000 steps on 256 images, 65%: 35.6%; docs/fidelity.md,
    #: "Session 23")
    agreement_floor: ClassVar[float | None] = 0.5
    config: DeepInversionConfig

    def __init__(self, teacher: nn.Module, card: Any, config: DeepInversionConfig) -> None:
        super().__init__(teacher, card, config)
        self.jitter = config.jitter if config.jitter >= 0 else max(1, self.input_shape[1] // 16)
        self.inputs: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.best: torch.Tensor | None = None
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.iteration = 0
        self.last_total: torch.Tensor | None = None  # the last step's loss (batch_finite without keep_best)
        self.generator: torch.Generator | None = None
        self.init_structure = None  # init "teacher": (mean, InputStructure) of the teacher's data
        if config.init == "teacher":
            mean = input_mean_from_batchnorm(self.teacher, self.input_shape)
            found = None if mean is None else input_structure_from_batchnorm(
                self.teacher, self.input_shape, mean, card.std)  # fmt: skip
            self.init_structure = None if found is None else (mean, found)
        precision.prepare_module(self.teacher)
        # the network the step runs: the teacher with BN folded into its convolutions where possible
        example = torch.zeros((2, *self.input_shape), device=self.device)  # a trial pass guards the fold
        self.stat_layers = spatial_batchnorm_layers(self.teacher, self.input_shape, config.bn_min_hw)
        self.folded = (
            fold_batchnorm(self.teacher, example, observe=self.stat_layers) if config.fold_bn else None
        )
        if self.folded is not None:
            if config.bn_standardized:
                self.folded.standardize_bn_loss()
            precision.prepare_module(self.folded.net)
        # --compile: the folded network, the BN statistics and the BN loss as one compiled graph (inductor
        # fuses the statistics into the network's passes); compiled on the first step (docs/speed.md)
        self.graph_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        if self.folded is not None and precision.options().compile:
            try:
                self.graph_loss = torch.compile(self.folded.loss_graph(config.first_bn_weight))
            except ValueError:  # a network the rewrite does not cover: the hooks, uncompiled
                self.graph_loss = None
        self.scaler = precision.grad_scaler(self.device)
        self.bn_scale = 1.0  # BN/CE balance of the current batch (bn_ce_max_ratio)

    def uses_student(self) -> bool:
        """Adaptive DeepInversion: the competition term needs the student."""
        return self.config.competition_weight > 0

    @classmethod
    def default_overrides(cls, card: Any) -> dict[str, Any]:
        """Batch, step cap and prior weights scaled by the input shape (:mod:`datafree.rules`)."""
        return deepinversion_defaults(card.input_shape)

    def should_stop(self, steps: int, logs: dict[str, torch.Tensor]) -> bool:
        """Stop the batch when its loss has plateaued; ``iterations`` is the cap.

        The plateau: the lowest loss has not improved by ``plateau_tol`` in ``plateau_patience`` steps
        (after warm-up).
        """
        cfg = self.config
        if cfg.plateau_tol <= 0:
            return False
        patience = cfg.plateau_patience if cfg.plateau_patience > 0 else max(20, cfg.iterations // 10)
        loss = float(logs["total"])  # one host sync per step: negligible next to a teacher pass
        history = self.loss_history
        history.append(min(loss, history[-1]) if history else loss)
        return steps > cfg.warmup + patience and history[-1] > (1 - cfg.plateau_tol) * history[-1 - patience]

    def batch_done(self, steps: int) -> None:
        """Record the steps the batch ran (``steps_per_batch`` in the manifest); take the BN hooks off.

        The folded teacher's statistics hooks stay registered over a batch's steps
        (:class:`datafree.bnfold.FoldedTeacher`); between batches the modules carry none.
        """
        self.steps_taken.append(steps)
        if self.folded is not None:
            self.folded.remove_hooks()

    def batch_finite(self) -> bool:
        """Whether the batch reached a finite loss: with ``keep_best`` its lowest, else its last step's.

        With a huge loss weight the loss can overflow to inf while the pixel gradients stay finite (the
        one-node statistics work in float64), so the images alone would not show the divergence.
        """
        loss = self.best_loss if self.config.keep_best else self.last_total
        return loss is None or bool(torch.isfinite(loss))

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Fresh Gaussian pixels (normalised space) and balanced, shuffled target labels."""
        cfg = self.config
        self.loss_history: list[float] = []  # lowest loss so far, after each step (plateau stop)
        self.generator = generator
        if self.init_structure is not None:
            mean, structure = self.init_structure
            x = structured_images(n, structure, mean, self.card.std, self.input_shape, generator)
            x = x.to(self.device)
        else:
            x = torch.randn((n, *self.input_shape), generator=generator).to(self.device)
        self.normalizer.clamp_(x)
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        self.inputs = x.requires_grad_(True)
        self.targets = labels.to(self.device)
        self.best = x.detach().clone()
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        # fused: one kernel per step instead of about ten passes over the pixels (same update)
        fused = self.device.type in ("cpu", "cuda") and x.dtype in (torch.float32, torch.float64)
        self.optimizer = torch.optim.Adam([self.inputs], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)
        self.iteration = 0
        self.bn_scale = 1.0
        if self.folded is not None:  # the one-node statistics' shifts carry over steps, not batches
            forget_shifts(self.folded.bn_loss)

    def _loss(
        self, x: torch.Tensor, student: nn.Module | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        xa = random_jitter(x, self.jitter, self.generator)
        if cfg.flip:
            xa = random_flip(xa, self.generator)
        xa = precision.prepare_input(xa)
        net = self.teacher if self.folded is None else self.folded.net
        if self.graph_loss is not None:
            with precision.autocast(self.device):
                logits, bn = self.graph_loss(xa)  # statistics and BN loss in fp32 inside
            logits = precision.fp32(logits)
        else:
            # the folded statistics' loss is standardised already (FoldedTeacher.standardize_bn_loss)
            stats_ctx = (BNStatistics(self.teacher, layers=self.stat_layers, standardized=cfg.bn_standardized)
                         if self.folded is None else self.folded.statistics(cfg.one_node_stats))  # fmt: skip
            with stats_ctx as stats:
                with precision.autocast(self.device):
                    logits = net(xa)
                logits = precision.fp32(logits)  # losses in fp32; the hook keeps BN statistics in fp32
                bn = stats.loss(cfg.first_bn_weight)  # all layers at once (datafree.losses.BNStatisticLoss)
        ce = F.cross_entropy(logits, self.targets)
        if self.iteration == 0 and cfg.bn_ce_max_ratio > 0:  # one host sync per batch
            self.bn_scale = bn_ce_scale(bn, ce, cfg.bn_weight, cfg.ce_weight, cfg.bn_ce_max_ratio)
        terms = {"ce": (cfg.ce_weight, ce), "bn": (cfg.bn_weight * self.bn_scale, bn)}
        # a prior with weight 0 is neither computed nor logged (weighted_sum leaves it out either way);
        # tv_l2 and l2 together in one node (datafree.losses.image_priors)
        if cfg.tv_l2_weight != 0:
            tv, l2 = image_priors(x, l2=cfg.l2_weight != 0)
            terms["tv_l2"] = (cfg.tv_l2_weight, tv)
        if cfg.tv_l1_weight != 0:
            terms["tv_l1"] = (cfg.tv_l1_weight, tv_l1(x))
        if cfg.l2_weight != 0:
            terms["l2"] = (cfg.l2_weight, l2 if cfg.tv_l2_weight != 0 else l2_prior(x))
        if cfg.competition_weight > 0:
            with precision.autocast(self.device):
                s_logits = precision.fp32(self.check_student(student)(xa))
            js = js_divergence(s_logits, logits, cfg.competition_temperature)
            terms["competition"] = (cfg.competition_weight, 1.0 - js.clamp(0.0, 1.0))
        return weighted_sum(terms)

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One Adam step on the pixels."""
        if self.inputs is None or self.optimizer is None:
            self.reset(self.config.batch_size)
        assert self.inputs is not None and self.optimizer is not None and self.best is not None
        cfg = self.config
        lr = warmup_cosine(self.iteration, cfg.iterations, cfg.lr, cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, logs = self._loss(self.inputs, student)
        self.last_total = logs["total"].detach()
        self.inputs.grad = None  # the optimiser's one tensor: zero_grad(set_to_none=True) without its Python
        self.scaler.scale(loss).backward()  # loss scaling in fp16 only; a plain backward otherwise
        with torch.no_grad():
            if cfg.keep_best:
                # logs["total"] is the loss of the pixels before this update: keep them when lowest.
                better = logs["total"] < self.best_loss
                if self.device.type == "cpu":
                    # a copy only when better, into the same buffer (the plateau check reads the loss
                    # on the host every step anyway); torch.where would allocate and write a batch
                    if bool(better):
                        self.best_loss = logs["total"]
                        self.best.copy_(self.inputs.detach())
                else:  # tensor ops only: no host sync on GPU
                    self.best_loss = torch.where(better, logs["total"], self.best_loss)
                    self.best = torch.where(better, self.inputs.detach(), self.best)
            if self.scaler.is_enabled() or not _fused_adam_step(self.optimizer):
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.normalizer.clamp_(self.inputs)
        self.iteration += 1
        return logs

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Batch:
        """The current batch (the lowest-loss one when ``keep_best``), or its first ``n`` images."""
        if self.inputs is None:
            raise RuntimeError("call reset() or step() before sample()")
        x = (self.best if self.config.keep_best and torch.isfinite(self.best_loss) else self.inputs).detach()
        n = len(x) if n is None else n
        return Batch(x[:n].clone(), None if self.targets is None else self.targets[:n].clone())

    def state_dict(self) -> dict[str, Any]:
        """Current pixels, targets, optimiser and iteration."""
        if self.inputs is None or self.optimizer is None:
            return {"iteration": 0}
        return {
            "inputs": self.inputs.detach().cpu(),
            "targets": self.targets.cpu() if self.targets is not None else None,
            "best": self.best.cpu() if self.best is not None else None,
            "best_loss": self.best_loss.cpu(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "bn_scale": self.bn_scale,
            "generator": self.generator.get_state() if self.generator is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if "inputs" not in state:
            return
        self.reset(len(state["inputs"]))
        assert self.inputs is not None and self.optimizer is not None
        with torch.no_grad():
            self.inputs.copy_(state["inputs"].to(self.device))
        self.targets = state["targets"].to(self.device)
        self.best = state["best"].to(self.device)
        self.best_loss = state["best_loss"].to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.bn_scale = float(state.get("bn_scale", 1.0))
        if state.get("generator") is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
