"""CMI: Contrastive Model Inversion, DeepInversion's losses plus an instance-level contrastive loss.

Reference: Fang et al., "Contrastive Model Inversion for Data-Free Knowledge Distillation",
IJCAI 2021 (code: zju-vipa/CMI ``datafree/synthesis/contrastive.py``; settings in
shared/REFERENCES.md, "CMI"). One *round* synthesises one batch:

1. the generator (the CMI / Fast-Datafree ``Generator``, :class:`generators.fast.FastGenerator`) is
   re-initialised (weights ``N(0, 0.02)``, BN scales ``N(1, 0.02)``), and a fresh ``z ~ N(0, I)``
   and balanced target labels are drawn; Adam (``lr``, betas 0.5 / 0.999) optimises both;
2. every step renders the images, takes a *global* view (random crop after ``H / 8`` zero padding)
   and a *local* view (random resized crop, 25-100% of the area) and minimises::

       bn_weight * sum_l (||mu_l - mu_run_l||_2 + ||var_l - var_run_l||_2)      (global view)
         + oh_weight * CE(T(global), y) + adv_weight * L_adv(S, T)
         + cr_weight * InfoNCE(local -> global, temperature cr_temperature)

   The contrastive features of an image are the spatial means of the input of every teacher
   BatchNorm layer, concatenated, through a 2-layer MLP head (``head_dim``, L2-normalised; the
   head persists across rounds and is trained with its own Adam; on a teacher whose BN layers sum
   to too many channels for that head, every ``s``-th layer: :func:`contrastive_layers`). Each
   local view must pick its own global view among the batch *and* ``negatives`` features drawn
   from a memory bank of the best batches of earlier rounds (``bank_size``), which pushes every
   new batch away from all earlier images; as in the reference code the cross entropy of the
   current rows and of the cached rows are averaged separately and added;
3. the lowest-loss batch of the round is its output, and its (local, global) features join the
   memory bank.

Defaults are scaled to the shipped 16x16 digits teachers: the generator of ``fast`` (``ngf`` 16,
``nz`` 64, about one teacher pass per step), a bank of 4096 and 1024 negatives (the paper: 40,960 /
4,096 at 50k images), ``flip`` off (digits are not mirror-symmetric; CIFAR's recipe flips), and the
loss weights and step count of the CIFAR scripts (bn 1, oh 1, cr 0.8, T 0.1, 200 steps of 256
images) with lr 2e-3 instead of 1e-3 (docs/methods.md). ``adv_weight`` is 0 by default so ``datafree
synthesize`` needs no student. Not in the paper: DeepInversion's BN/CE balance (``bn_ce_max_ratio`` 26,
set at each round's first step): on the 32 px ResNet-18 and MobileNetV2 the BN term starts 78-249x the
CE and drowns it (docs/methods.md "Session 9: CMI's BN/CE balance"). A dataset written for
``compress`` / ``distill`` is distilled for 60 epochs instead of the shared 30 (``kd_defaults``;
docs/methods.md "Session 5"). On a CPU, a run whose estimated cost passes the compute budget
(:func:`datafree.plan.budget_settings`; the 32 px teachers of the suite) goes back to 30 epochs first,
then to fewer images, a smaller KD batch and fewer steps.

The bank lives in the synthesizer, so it spans the shards of one ``datafree synthesize`` process;
a resumed run or another rank starts with an empty bank (its images stay valid, only the
diversity pressure against shards written by another process is lost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import UserInputError
from datafree.hooks import BNStatistics, FeatureRecorder, batchnorm_layers, spatial_batchnorm_layers
from datafree.losses import bn_ce_scale, weighted_sum
from datafree.rules import cmi_bank_step_s, conv_linear_macs

from .base import RoundSynthesizer, SynthConfig, register
from .fast import FastGenerator, adversarial_agreement_loss

__all__ = [
    "CMI",
    "CMIConfig",
    "MemoryBank",
    "contrastive_layers",
    "random_crop_view",
    "random_resized_crop_view",
    "reinit_generator",
]


def _grid_views(
    pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Resample ``pixels`` (B, C, H, W) through per-sample affine maps (zero padding outside)."""
    b = len(pixels)
    theta = torch.zeros(b, 2, 3, dtype=pixels.dtype)
    theta[:, 0, 0] = scale[:, 0] * flip
    theta[:, 1, 1] = scale[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(pixels.device), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flips(b: int, flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not flip:
        return torch.ones(b)
    return torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)


def random_crop_view(
    pixels: torch.Tensor, pad: int, flip: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random crop of the image zero-padded by ``pad`` pixels (kornia ``RandomCrop(padding)``).

    Shape:
        - pixels: ``(B, C, H, W)`` in [0, 1]; output: the same shape.
    """
    b, _, h, w = pixels.shape
    offsets = torch.randint(-pad, pad + 1, (b, 2), generator=generator).float()  # (dx, dy) in pixels
    shift = offsets * torch.tensor([2.0 / w, 2.0 / h])
    return _grid_views(pixels, torch.ones(b, 2), shift, _flips(b, flip, generator))


def random_resized_crop_view(
    pixels: torch.Tensor, min_area: float = 0.25, flip: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random resized crop (area ``[min_area, 1]``, aspect ratio ``[3/4, 4/3]``) back to H x W.

    Shape:
        - pixels: ``(B, C, H, W)`` in [0, 1]; output: the same shape.
    """
    b = len(pixels)
    area = min_area + (1 - min_area) * torch.rand(b, generator=generator)
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(b, generator=generator)
    ratio = log_r.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width / W
    sy = (area / ratio).sqrt().clamp(max=1.0)  # crop height / H
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * torch.stack([1 - sx, 1 - sy], 1)
    return _grid_views(pixels, torch.stack([sx, sy], 1), shift, _flips(b, flip, generator))


def reinit_generator(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """CMI's per-round reset: conv / linear weights ``N(0, 0.02)`` and biases 0, BN scales ``N(1, 0.02)``.

    Drawn on the CPU from ``generator`` so that a round's start depends only on its seed.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=generator) * 0.02)
                m.bias.zero_()
                m.reset_running_stats()


class MLPHead(nn.Module):
    """CMI's projection head: Linear -> ReLU -> Linear, L2-normalised output.

    Shape:
        - x: ``(B, dim_in)``; output ``(B, dim_out)`` with unit rows.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.normalize(self.head(x), dim=1)


class MemoryBank:
    """A ring buffer of feature rows; ``sample(k)`` draws ``k`` stored rows without replacement."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.data = torch.zeros(size, dim, device=device)
        self.ptr = 0
        self.count = 0

    def add(self, feats: torch.Tensor) -> None:
        """Append ``feats`` (n, dim), overwriting the oldest rows when full."""
        size = len(self.data)
        feats = feats.detach()[-size:]
        idx = (self.ptr + torch.arange(len(feats))) % size
        self.data[idx.to(self.data.device)] = feats.to(self.data.device)
        self.ptr = int((self.ptr + len(feats)) % size)
        self.count = min(size, self.count + len(feats))

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Up to ``k`` random stored rows (``(0, dim)`` when empty)."""
        k = min(k, self.count)
        idx = torch.randperm(self.count, generator=generator)[:k]
        return self.data[idx.to(self.data.device)]

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"data": self.data[: self.count].cpu(), "ptr": self.ptr, "size": len(self.data)}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        n = len(state["data"])
        self.data.zero_()
        self.data[:n] = state["data"].to(self.data.device)
        self.count, self.ptr = n, int(state["ptr"])


@dataclass
class CMIConfig(SynthConfig):
    """CMI settings (``iterations`` is the paper's ``g_steps`` per round)."""

    batch_size: int = 256
    iterations: int = 200  # the paper's g_steps (its lr: 1e-3; see docs/methods.md)
    nz: int = 64
    ngf: int = 16
    lr: float = 2e-3
    beta1: float = 0.5
    beta2: float = 0.999
    bn_weight: float = 1.0
    first_bn_weight: float = 1.0
    # BN layers whose input has fewer spatial positions (H x W at the card's input shape) stay out of the
    # BN loss (1: every layer; datafree.hooks.spatial_batchnorm_layers)
    bn_min_hw: int = 1
    # Each BN layer's terms in units of the channel's running spread (DeepInversion's option since session
    # 29: datafree.losses.BNStatisticLoss.standardized); false: the paper's raw terms. Paired runs, seed 0
    # (docs/fidelity.md, "Session 30"): wrn40_2_32 79.4 -> 92.2%, mobilenetv2_32 95.5 -> 96.6%,
    # resnet18_32 96.9 -> 98.0%, resnet8_digits 99.4 -> 99.4%, vgg8_bn_32 99.2 -> 98.1%.
    bn_standardized: bool = True
    oh_weight: float = 1.0
    adv_weight: float = 0.0
    # BN/CE balance (DeepInversion's rule and default, once per round since every round starts a fresh
    # generator): when bn_weight x BN starts more than bn_ce_max_ratio times oh_weight x CE (at the
    # round's first step), bn_weight is scaled down to that ratio for the round; 0 disables it. Seed 0
    # (docs/methods.md "Session 9: CMI's BN/CE balance"): resnet18_32 88.0 -> 91.9%, mobilenetv2_32
    # 92.7 -> 96.4%; resnet8_digits (BN/CE 7.7) is never scaled.
    bn_ce_max_ratio: float = 26.0
    cr_weight: float = 0.8
    cr_temperature: float = 0.1
    head_dim: int = 128
    bank_size: int = 4096
    negatives: int = 1024
    local_min_area: float = 0.25
    pad: int = -1  # global view's crop padding; -1 means H // 8 (4 px at 32, the paper's)
    flip: bool = False
    # contrastive features from every feature_stride-th BN input (the s-th, 2s-th, ...); 0: the rule
    # of :func:`contrastive_layers` (the head may cost at most the teacher's passes of a step)
    feature_stride: int = 0

    # the raw BN loss of datasets written before the option (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {"bn_standardized": False}
    positive_fields: ClassVar[tuple[str, ...]] = ("nz", "ngf", "head_dim", "bank_size", "cr_temperature")
    non_negative_fields: ClassVar[tuple[str, ...]] = ("negatives", "feature_stride")

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.bn_ce_max_ratio < 0:
            raise UserInputError(f"bn_ce_max_ratio must be >= 0, got {self.bn_ce_max_ratio}")
        if not 0.0 < self.local_min_area <= 1.0:
            raise UserInputError(f"local_min_area must be in (0, 1], got {self.local_min_area}")


def contrastive_layers(
    bn_layers: list[nn.Module], teacher_macs: int, batch_size: int, negatives: int, head_dim: int,
    stride: int = 0,
) -> tuple[list[nn.Module], int]:  # fmt: skip
    """The BN layers whose inputs make CMI's contrastive features, and the stride that chose them.

    The features are the spatial means of the chosen layers' inputs, concatenated (``d`` values per
    image), and the head is ``Linear(d, d) -> ReLU -> Linear(d, head_dim)`` over ``2 x (batch_size +
    negatives)`` rows per step. Rule (``stride`` 0): every BN layer, as the reference does, unless
    the head's forward then costs more multiply-adds than the step's two teacher forward passes,
    ``2 (B + k) (d^2 + d h) > 2 B x teacher_macs``; then every ``s``-th layer (the ``s``-th,
    ``2s``-th, ... in forward order, so spread over the depth), with the smallest ``s`` that fits.
    On the suite's teachers this keeps every layer of ResNet-8 (336 values), VGG-8 (1,472) and
    WRN-40-2 (2,704), every 2nd of ResNet-18 (2,560 of 4,800) and every 6th of MobileNetV2 (632 of
    17,056: with every layer a step took 18.4 s of CPU, its 17k x 17k head nearly all of it, against
    0.71 s for a whole NAYER step). The reference picks fewer layers by hand where the sum is
    large (the block outputs of ResNet-34, 960 values instead of 8,512).

    Args:
        bn_layers: the teacher's BN layers, in forward order.
        teacher_macs: the teacher's multiply-adds per image (0: unknown, every layer).
        batch_size: images per step.
        negatives: memory-bank rows per step.
        head_dim: the head's output width.
        stride: a given stride (> 0), or 0 for the rule.

    Returns:
        ``(layers, stride)``, the layers in forward order.
    """

    def pick(s: int) -> list[nn.Module]:
        return bn_layers[s - 1 :: s]

    def dim(layers: list[nn.Module]) -> int:
        return sum(int(getattr(m, "num_features", 0)) for m in layers)

    if stride > 0:
        return pick(stride), stride
    rows = 2 * (batch_size + negatives)
    for s in range(1, max(1, len(bn_layers)) + 1):
        d = dim(pick(s))
        if not teacher_macs or rows * (d * d + d * head_dim) <= 2 * batch_size * teacher_macs:
            return pick(s), s
    return pick(len(bn_layers)), len(bn_layers)


def instance_means(features: list[torch.Tensor | None]) -> torch.Tensor:
    """Per-sample spatial means of recorded feature maps, concatenated: ``(B, sum C_l)``."""
    return torch.cat([f.flatten(2).mean(2) if f.dim() > 2 else f for f in features if f is not None], 1)


@register
class CMI(RoundSynthesizer):
    """Contrastive Model Inversion (Fang et al. 2021): per-round generator, contrastive memory bank."""

    name = "cmi"
    Config = CMIConfig
    # CMI's published loop is the growing pool (``synthesize(); train(kd_steps)``); with its 200
    # steps per round the pool recipe uses the default KD settings.
    pool_batch_size: ClassVar[int] = 256
    pool_kd: ClassVar[dict[str, Any]] = {"kd_steps": 40}
    # The KD stage warps the student's images (rules.KD_AFFINE, as the online backends'; our rule over the
    # paper's crop and flip): mobilenetv2_32 seeds 0 / 1 96.9 / 97.2 -> 97.8 / 99.2%,
    # resnet18_32 seed 1 98.9 -> 100.0%, resnet8_digits seed 1 99.2 -> 98.6% (docs/methods.md, "Session 40").
    kd_warp: ClassVar[bool] = True
    # A written dataset: twice the shared KD epochs. Rule: the KD stage may take as long as the
    # synthesis; CMI's synthesis costs ~5x DeepInversion's per image, so doubling the shared KD
    # (~35 s -> ~70 s of the ~180 s synthesis at 1,024 images on one core) stays under it. Measured
    # on seeds 0-2 (docs/methods.md, "Session 5"): 99.2 / 98.9 / 97.8% against 99.2 / 97.8 / 97.2%.
    kd_defaults: ClassVar[dict[str, Any]] = {"epochs": 60}
    # A global and a local view through the teacher every step (the compute budget's estimate).
    budget_passes: ClassVar[float | None] = 2
    # A written dataset where the CPU budget leaves room doubles its images while the run fits, up to
    # 4,096 (``fast``'s and ``nayer``'s rule): resnet8_digits 1,024 -> 2,048 (623 s estimated; 4,096 would
    # be 1,109 s), seeds 0-2 99.2 / 97.2 / 98.6% -> 98.9 / 99.2 / 99.2% (docs/methods.md, "Session 22").
    # The 32 px suite teachers are cut by the budget already and do not grow.
    budget_max_images: ClassVar[int | None] = 4096
    config: CMIConfig

    @classmethod
    def budget_round_step_s(
        cls, teacher: nn.Module, input_shape: tuple[int, ...], config: Mapping[str, Any],
        teacher_macs: int | None = None,
    ) -> Callable[[int, int], float] | None:  # fmt: skip
        """The memory bank's negatives: round ``r`` of ``batch`` images sees ``min(negatives, r x batch)``.

        Priced by :func:`datafree.rules.cmi_bank_step_s` on the teacher's contrastive feature width
        (the layers :func:`contrastive_layers` picks for this config); the first round (empty bank) is
        what :data:`datafree.rules.SYNTH_PRICES` measured.
        """
        macs = conv_linear_macs(teacher, tuple(input_shape)) if teacher_macs is None else int(teacher_macs)
        layers, _ = contrastive_layers(
            batchnorm_layers(teacher), macs, int(config["batch_size"]), int(config["negatives"]),
            int(config["head_dim"]), int(config["feature_stride"]),
        )  # fmt: skip
        dim = sum(int(getattr(m, "num_features", 0)) for m in layers)
        cap, head_dim = min(int(config["negatives"]), int(config["bank_size"])), int(config["head_dim"])
        return lambda r, batch: cmi_bank_step_s(dim, head_dim, batch, min(cap, r * batch))

    def __init__(self, teacher: nn.Module, card: Any, config: CMIConfig) -> None:
        super().__init__(teacher, card, config)
        cfg = config
        torch.manual_seed(cfg.seed)
        self.bn_layers = batchnorm_layers(teacher)
        self.feature_layers, self.feature_stride = contrastive_layers(
            self.bn_layers, conv_linear_macs(teacher, self.input_shape), cfg.batch_size, cfg.negatives,
            cfg.head_dim, cfg.feature_stride,
        )  # fmt: skip
        self.stat_layers = spatial_batchnorm_layers(teacher, self.input_shape, cfg.bn_min_hw)
        with torch.no_grad(), FeatureRecorder(self.feature_layers, "input") as rec:
            teacher(torch.zeros(1, *self.input_shape, device=self.device))
            dim = instance_means(rec.features).shape[1]
        self.net = FastGenerator(cfg.nz, cfg.ngf, self.input_shape).to(self.device).train()
        self.head = MLPHead(dim, cfg.head_dim).to(self.device).train()
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.lr)
        self.bank = MemoryBank(cfg.bank_size, 2 * dim, self.device)  # (local, global) per image
        self.pad = cfg.pad if cfg.pad >= 0 else max(1, self.input_shape[1] // 8)
        self.rounds = 0
        self._clear_round()

    def _clear_round(self) -> None:
        self.z: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.best: torch.Tensor | None = None
        self.best_feats: torch.Tensor | None = None
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        self.iteration = 0
        self.generator: torch.Generator | None = None
        self.bn_scale = 1.0  # BN/CE balance of the current round (bn_ce_max_ratio)

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start a round: re-initialised generator, fresh ``z``, balanced shuffled labels."""
        cfg = self.config
        self._clear_round()
        self.generator = generator
        reinit_generator(self.net, generator)
        self.z = torch.randn((n, cfg.nz), generator=generator).to(self.device).requires_grad_(True)
        labels = (torch.arange(n) % self.num_classes)[torch.randperm(n, generator=generator)]
        self.targets = labels.to(self.device)
        self.optimizer = torch.optim.Adam(
            [{"params": self.net.parameters()}, {"params": [self.z]}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
        )

    def _contrastive(self, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """InfoNCE of local views against global views of the batch plus memory-bank negatives."""
        cfg = self.config
        n = len(local)
        cached = self.bank.sample(cfg.negatives, self.generator)
        c_local, c_global = cached.chunk(2, dim=1)
        proj = self.head(torch.cat([local, c_local, glob, c_global]))
        p_local, p_global = proj.chunk(2)
        logits = p_local @ p_global.detach().T / cfg.cr_temperature  # (n + k, n + k)
        ce = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
        return ce[:n].mean() + ce[n:].mean() if len(ce) > n else ce.mean()

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One Adam step of the round's generator and ``z`` (and of the projection head)."""
        if self.z is None:
            self.reset(self.config.batch_size)
        assert self.z is not None and self.optimizer is not None
        cfg = self.config
        pixels = self.net(self.z)  # (B, C, H, W) in [0, 1]
        glob = self.normalizer(random_crop_view(pixels, self.pad, cfg.flip, self.generator))
        local = self.normalizer(
            random_resized_crop_view(pixels, cfg.local_min_area, cfg.flip, self.generator)
        )
        stats_ctx = BNStatistics(self.teacher, layers=self.stat_layers, standardized=cfg.bn_standardized)
        with FeatureRecorder(self.feature_layers, "input") as rec:
            with stats_ctx as stats:
                logits = self.teacher(glob)
                bn = stats.loss(cfg.first_bn_weight)
            g_feat = instance_means(rec.features)
            self.teacher(local)
            l_feat = instance_means(rec.features)
        ce = F.cross_entropy(logits, self.targets)
        if self.iteration == 0 and cfg.bn_ce_max_ratio > 0:  # one host sync per round
            self.bn_scale = bn_ce_scale(bn, ce, cfg.bn_weight, cfg.oh_weight, cfg.bn_ce_max_ratio)
        terms = {
            "bn": (cfg.bn_weight * self.bn_scale, bn),
            "oh": (cfg.oh_weight, ce),
            "cr": (cfg.cr_weight, self._contrastive(l_feat, g_feat)),
        }
        if cfg.adv_weight > 0:
            was_training = self.check_student(student).training
            student.eval()  # type: ignore[union-attr]
            terms["adv"] = (cfg.adv_weight, adversarial_agreement_loss(student(glob), logits))  # type: ignore[misc]
            student.train(was_training)  # type: ignore[union-attr]
        loss, logs = weighted_sum(terms)
        with torch.no_grad():  # keep the lowest-loss batch of the round (tensor ops: no host sync)
            better = logs["total"] < self.best_loss
            self.best_loss = torch.where(better, logs["total"], self.best_loss)
            x = self.normalizer(pixels.detach())
            feats = torch.cat([l_feat, g_feat], 1).detach()
            self.best = x if self.best is None else torch.where(better, x, self.best)
            self.best_feats = (
                feats if self.best_feats is None else torch.where(better, feats, self.best_feats)
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.head_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.head_optimizer.step()
        self.iteration += 1
        if self.iteration == cfg.iterations:
            self.bank.add(self.best_feats)  # type: ignore[arg-type]
            self.rounds += 1
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Head, memory bank and the current round (generator, ``z``, optimisers, best batch)."""
        state: dict[str, Any] = {
            "head": self.head.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "bank": self.bank.state_dict(),
            "rounds": self.rounds,
            "iteration": self.iteration,
            "bn_scale": self.bn_scale,
        }
        if self.z is not None and self.optimizer is not None:
            state.update(
                net=self.net.state_dict(),
                optimizer=self.optimizer.state_dict(),
                z=self.z.detach().cpu(),
                targets=self.targets.cpu() if self.targets is not None else None,
                best=self.best.cpu() if self.best is not None else None,
                best_feats=self.best_feats.cpu() if self.best_feats is not None else None,
                best_loss=self.best_loss.cpu(),
                generator=self.generator.get_state() if self.generator is not None else None,
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        dev = self.device
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
        self.rounds = int(state["rounds"])
        self._clear_round()
        if "z" not in state:
            return
        self.reset(len(state["z"]))
        assert self.z is not None and self.optimizer is not None
        self.net.load_state_dict(state["net"])
        with torch.no_grad():
            self.z.copy_(state["z"].to(dev))
        self.optimizer.load_state_dict(state["optimizer"])
        self.targets = state["targets"].to(dev) if state["targets"] is not None else None
        self.best = state["best"].to(dev) if state["best"] is not None else None
        self.best_feats = state["best_feats"].to(dev) if state["best_feats"] is not None else None
        self.best_loss = state["best_loss"].to(dev)
        self.iteration = int(state["iteration"])
        self.bn_scale = float(state.get("bn_scale", 1.0))
        if state.get("generator") is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
