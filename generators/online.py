"""The shared machinery of the online backends (DAFL, ZSKT, DFAD).

Each trains a generator network inside the KD stage.

A backend subclasses :class:`OnlineSynthesizer` and implements :meth:`~OnlineSynthesizer.objective`,
the generator's loss on a batch of generated images. The base class owns the network, its Adam
optimiser and learning-rate schedule, the latent sampling (its own seeded ``torch.Generator``), the
optional DFQ-style BatchNorm-statistic term, and the resumable state. One ``step(student)`` is one
generator update; ``sample(n)`` draws ``G(z)`` (normalised network input, valid pixels).

The KD stage (:func:`datafree.distill.distill` with :class:`datafree.sources.SynthesizerSource`)
runs the adversarial rounds: ``g_steps`` generator steps, then ``kd_steps`` student steps. Each
backend carries its paper's KD settings in ``kd_defaults`` and, where the paper changes the
student's loss, a :meth:`~OnlineSynthesizer.student_objective`.

Reference: Nagel et al., "Data-Free Quantization", ICCV 2019 and Choi et al. (DFQ in CMI) for the
BatchNorm-statistic term on generated images.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from datafree import precision
from datafree.augment import random_jitter
from datafree.errors import UserInputError
from datafree.generator_losses import class_coverage_loss, information_entropy_loss, one_hot_loss
from datafree.hooks import (
    BNStatistics,
    batchnorm_input_variance,
    batchnorm_layers,
    first_batchnorm,
    input_mean_from_batchnorm,
    input_structure_from_batchnorm,
    spatial_batchnorm_layers,
    variance_scale_fit,
)
from datafree.losses import bn_ce_scale, weighted_sum
from datafree.replay import ReplayMemory, auto_replay_size
from datafree.rules import (
    NOISE_MIN_ENTROPY,
    ONLINE_BN_LESS_MIN_EPOCH_FACTOR,
    noise_answer_entropy,
)
from datafree.utils import eval_mode

from .base import Batch, SynthConfig, Synthesizer
from .networks import make_generator

__all__ = [
    "OnlineConfig",
    "OnlineSynthesizer",
    "AdversarialConfig",
    "AdversarialSynthesizer",
    "LR_SCHEDULES",
    "auto_generator_width",
    "generator_macs",
]


def _constant(step: int, total: int) -> float:
    return 1.0


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


# Schedule name -> factor(step, total) of the generator's base learning rate.
LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {"constant": _constant, "cosine": _cosine}
# Class-balance term forms (OnlineConfig.balance_loss) -> loss on the teacher's logits (B, K).
BALANCE_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "entropy": information_entropy_loss,
    "coverage": class_coverage_loss,
}


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module | None) -> Iterator[None]:
    """Inside the block, BatchNorm layers in train mode leave their running statistics unchanged.

    They still normalise with batch statistics, with momentum 0: the generator's adversarial
    forward passes through the student must not move the statistics the student is evaluated with.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)] if model is not None else []
    saved = [m.momentum for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0
        yield
    finally:
        for m, mom in zip(layers, saved, strict=True):
            m.momentum = mom


#: output_mean "teacher" moves the images only when a channel's recovered mean is at least this far from 0:
#: the recovery's largest error on ten BN teachers was 0.066 (bench/results/s45/input_mean.json). Below it
#: the card's mean / std standardise the data as the papers assume (resnet8_digits: 0.04, where the move
#: cost ZSKT 2.2 and 1.1 points on seeds 0 and 1 against the papers' centre; docs/online_generators.md,
#: "Session 45").
OUTPUT_MEAN_MIN_SHIFT = 0.1
#: output_scale "data" rescales the images only when a channel's recovered spread (in normalised units) is at
#: least this far from the papers' 1, relatively: the recovery's largest error on ten BN teachers was 4%
#: (docs/online_generators.md, "Session 46"); resnet8_digits, whose card standardises its data: 1.006.
OUTPUT_SCALE_MIN_CHANGE = 0.1


def colour_mix(correlation: float, std: torch.Tensor) -> torch.Tensor | None:
    """The ``(C, C)`` map that gives a batch of independent unit channels the correlation ``correlation``.

    The square root of ``(1 - rho) I + rho 11^T`` (the Lucid-style decorrelated colour parametrisation
    of Olah et al., "Feature Visualization", Distill 2017, with the correlation recovered from the
    teacher), applied in pixel units (the channels weighted by the card's ``std`` before, unweighted
    after). None for one channel or no correlation.
    """
    c = std.numel()
    if c == 1 or correlation <= 0:
        return None
    grey = torch.full((c, c), 1.0 / c)  # the projection on the grey direction
    rest = torch.eye(c) - grey
    root = (1 + (c - 1) * correlation) ** 0.5 * grey + max(0.0, 1 - correlation) ** 0.5 * rest
    s = std.flatten().float()
    return root * s[None, :] / s[:, None]


@dataclass
class OnlineConfig(SynthConfig):
    """Settings every online backend has.

    ``iterations`` is the number of generator steps the learning-rate schedule spans
    (:func:`datafree.online_train.train_online` sets it from the KD budget).
    """

    batch_size: int = 256
    iterations: int = 1000
    latent_dim: int = 100
    # 0: automatic (:func:`auto_generator_width`): sized from the input, min(64, max(16, H * W // 16))
    # (16 at 16 px, 64 at 32 px), halved while the generator costs more MACs per image than the teacher.
    generator_width: int = 0
    generator_lr: float = 1e-3
    lr_schedule: str = "cosine"
    generator_grad_clip: float = 0.0
    # DFQ-style BN-statistic term, applied when the teacher has BatchNorm (a BN-less teacher has no
    # such term). Measured: DFAD on resnet8_digits stays at chance without it, 0.67 after 3 epochs with it.
    bn_weight: float = 1.0
    first_bn_weight: float = 1.0
    # BN layers whose input has fewer spatial positions (H x W at the card's input shape) stay out of the
    # BN loss (1: every layer; datafree.hooks.spatial_batchnorm_layers)
    bn_min_hw: int = 1
    # The BN loss in units of each channel's running spread (BNStatisticLoss.standardized; our addition, as
    # deepinversion's bn_standardized); false: the raw loss of DFQ / CMI's DAFL-with-BN. Session 31, paired
    # seed-0 runs: WRN-40-2 DAFL 88.6 -> 96.1%, ZSKT 82.5 -> 97.8%, DFAD 94.4 -> 99.2%; MobileNetV2 DAFL
    # 83.2 -> 92.2%; VGG-8 BN DAFL 97.8 -> 96.1% (docs/online_generators.md, "Session 31").
    bn_standardized: bool = True
    # The BN term's balance against the backend's own terms (as DeepInversion's bn_ce_max_ratio): when
    # bn_weight x BN starts more than bn_max_ratio times the sum of the other weighted terms' sizes (at
    # the run's first generator step), bn_weight is scaled down to that ratio for the whole run; 0: off.
    bn_max_ratio: float = 0.0
    clamp: bool = True  # keep images in the valid pixel range (straight-through gradient)
    # Where the generator's images are centred, per channel, in the teacher's normalised input space. The
    # papers' output heads (DAFL's and DFAD's Tanh + BatchNorm without affine; ZSKT's BatchNorm) start
    # every batch at mean 0 / variance 1 there, right when the card's mean / std are the training data's
    # own (the papers' CIFAR and MNIST teachers), not for a model trained on other data under ImageNet's
    # or CIFAR's constants. "zero": the papers'; "teacher": the mean of the teacher's training data
    # recovered from its first BatchNorm layer (datafree.hooks.input_mean_from_batchnorm; our addition),
    # added to every image; the papers' 0 where it cannot be recovered (no BN, a non-affine stem). Session 45
    # (docs/online_generators.md): on the 32 px BN teachers the digits' mean is -0.45 to -0.79 there, and
    # moved to mean 0 / spread 1 the teachers read 20-50% of them, most as 8s (bench/input_mean.py).
    output_mean: str = "teacher"
    # The images' spread: "one", the papers' (DAFL's and DFAD's heads fix it at 1, ZSKT's affine BatchNorm
    # learns a scale from 1); "learn": a learned scale (log-parametrised, from 1); "teacher" (with
    # output_mean "teacher"; our addition): each batch scaled, by one factor for all channels, so that the
    # variance it gives the teacher's first BatchNorm layer's input best matches that layer's running
    # variance (least squares in units of the running spread; the layers before it run once more, without
    # gradient; datafree.hooks.batchnorm_input_variance); "data" (the default since session 46; our
    # addition): each channel's spread over the batch set to the spread of the teacher's training images,
    # recovered with their colour from the first BatchNorm layer
    # (datafree.hooks.input_structure_from_batchnorm; the batch's own spread, detached, divided out); the
    # papers' 1 where the recovered spread is within OUTPUT_SCALE_MIN_CHANGE of it, or none is recovered (no
    # BN, a non-affine stem). MobileNetV2 at 32 px, with output_colour "teacher": DAFL / DFAD / ZSKT 87.1 /
    # 85.7 / 87.4 -> 99.7 / 96.4 / 94.4%, the real 1s back (docs/online_generators.md, "Session 46").
    output_scale: str = "data"
    # The images' colour: "free", the papers' (each channel its own); "teacher" (our addition): the
    # generator's channels mixed (:func:`colour_mix`) to the correlation between channels that the teacher's
    # first BatchNorm layer says its training images had (datafree.hooks.input_structure_from_batchnorm;
    # grey digits: 1, one grey image in every channel). One channel, or no BN: as "free".
    output_colour: str = "teacher"
    # Class balance for the adversarial backends (our addition, not in the papers): DAFL's
    # information-entropy term on the teacher's batch-mean prediction. -1 (default): the backend's
    # ``auto_balance`` (ZSKT, DFAD: 20) on a teacher without BatchNorm, where no BN-statistic term
    # keeps the generated images diverse, else 0. Measured on lenet5_digits (seed 0): without it
    # DFAD's generator collapsed onto a few classes (teacher argmax on 2048 samples: 41% class 0,
    # none class 1) and its student reached 75.8% of the teacher; see docs/online_generators.md.
    balance: float = -1.0
    # The form of the class-balance term: "coverage" (default: cross-entropy of the uniform distribution
    # against the batch-mean prediction, whose pull toward a missing class does not vanish;
    # :func:`datafree.generator_losses.class_coverage_loss`) or "entropy" (DAFL's information entropy of
    # it, the form before session 6). plain_32: with "entropy" ZSKT's generator made no image the teacher
    # calls "1" (0 of 2048), with "coverage" 188 (docs/online_generators.md, "Session 6").
    balance_loss: str = "coverage"
    # Share of each student batch replaced by Gaussian noise (our addition, not in the papers; see
    # ``training_batch``). -1 (default): ``auto_noise`` (0.25) on a teacher without BatchNorm whose answers to
    # noise are diverse (``noise_share``), 0 otherwise.
    # Measured on lenet5_digits, seed 1 (docs/online_generators.md): DFAD 93.1% -> 96.1% of the teacher.
    noise_fraction: float = -1.0
    # Replay (Binici et al., WACV 2022; :mod:`datafree.replay`): this share of each student batch is drawn
    # from a memory of ``replay_size`` images the generator made earlier in the run (0: automatic,
    # :func:`datafree.replay.auto_replay_size`: 4,096, fewer above 256 MiB; a reservoir, so a
    # uniform sample of the run so far), against the student forgetting what earlier generators showed
    # it; the batch keeps its size, so the run's cost does not grow. 0: off (the default: measured no
    # better than without it on the BN-less teachers; docs/online_generators.md, "Session 13").
    replay: float = 0.0
    replay_size: int = 0
    # Jitter (our addition, not in the papers; DeepInversion's and Fast's synthesis roll their images the
    # same way): in the generator's loss, G(z) is rolled by one random offset of up to this many pixels
    # before the teacher (and the student) see it, so the answers the generator is trained for must hold
    # under small shifts. 0: off (the default: at H // 8 it cost DAFL 16 and DFAD 30 points on resnet18_32,
    # and gave DAFL 6 on mobilenetv2_32 without its missing class; docs/online_generators.md, "Session
    # 14"); -1: ``H // 8``, as ``fast``.
    jitter: int = 0
    # The adversarial backends' (ZSKT, DFAD) student in eval mode in the generator's loss: its BN layers
    # normalise with their running statistics instead of the adversarial batch's own (the running
    # statistics are left as they are either way, ``frozen_bn_statistics``), as Fast's and CMI's
    # adversarial terms run it. Off (the default: the papers' student stays in train mode); a screen of
    # session 17 (docs/online_generators.md).
    student_eval: bool = False

    # the raw BN loss of runs written before the option (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {
        "bn_standardized": False,
        "output_mean": "zero",
        "output_scale": "one",
        "output_colour": "free",
    }

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserInputError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.output_scale not in ("one", "learn", "teacher", "data"):
            raise UserInputError(
                f"output_scale must be 'one', 'learn', 'teacher' or 'data', got {self.output_scale!r}"
            )
        if self.output_colour not in ("free", "teacher"):
            raise UserInputError(f"output_colour must be 'free' or 'teacher', got {self.output_colour!r}")
        if self.output_mean not in ("zero", "teacher"):
            raise UserInputError(f"output_mean must be 'zero' or 'teacher', got {self.output_mean!r}")
        if self.balance_loss not in BALANCE_LOSSES:
            raise UserInputError(
                f"balance_loss must be one of {', '.join(BALANCE_LOSSES)}, got {self.balance_loss!r}"
            )
        if self.latent_dim <= 0:
            raise UserInputError(f"latent_dim must be > 0, got {self.latent_dim}")
        if self.generator_width < 0:
            raise UserInputError(f"generator_width must be >= 0 (0: automatic), got {self.generator_width}")
        if self.bn_max_ratio < 0:
            raise UserInputError(f"bn_max_ratio must be >= 0 (0: off), got {self.bn_max_ratio}")
        if self.balance < 0 and self.balance != -1.0:
            raise UserInputError(f"balance must be >= 0 (or -1: automatic), got {self.balance}")
        if not 0.0 <= self.replay < 1.0:
            raise UserInputError(f"replay must be in [0, 1) (0: off), got {self.replay}")
        if self.replay_size < 0:
            raise UserInputError(f"replay_size must be > 0 (or 0: automatic), got {self.replay_size}")
        if self.jitter < -1:
            raise UserInputError(f"jitter must be >= 0 pixels (or -1: H // 8), got {self.jitter}")
        if not 0.0 <= self.noise_fraction < 1.0 and self.noise_fraction != -1.0:
            raise UserInputError(
                f"noise_fraction must be in [0, 1) (or -1: automatic), got {self.noise_fraction}"
            )


def generator_macs(latent_dim: int, input_shape: tuple[int, int, int], width: int) -> int:
    """MACs per image of :class:`~generators.networks.DCGANGenerator` (its linear and conv layers).

    Counted on the network itself (:func:`datafree.rules.conv_linear_macs`), built with a fixed seed so
    the run's RNG does not move.
    """
    from datafree.rules import conv_linear_macs

    return conv_linear_macs(make_generator(latent_dim, input_shape, width, "tanh_bn", 0), (latent_dim,))


def auto_generator_width(teacher: nn.Module, input_shape: tuple[int, int, int], latent_dim: int = 100) -> int:
    """The generator width of ``generator_width=0``.

    ``min(64, max(16, H * W // 16))`` (the papers' ``ngf`` 64 at CIFAR's 32 px), halved while the
    generator costs more MACs per image than the teacher, down to 16. The generator runs once per
    student batch and once more (forward and backward) per generator step, so a generator ten times
    the teacher's cost makes the whole run several times slower: on ``plain_32`` (a BN-less CNN of
    10.8M MACs) width 64 costs 113M MACs per image, width 16 7.7M.
    """
    from datafree.rules import conv_linear_macs

    _, h, w = input_shape
    width = min(64, max(16, h * w // 16))
    if width <= 16:
        return 16
    try:
        t_macs = conv_linear_macs(teacher, input_shape)
    except Exception:  # noqa: BLE001 - a teacher the counter cannot run: the size rule alone
        return width
    while width > 16 and generator_macs(latent_dim, input_shape, width) > t_macs:
        width //= 2
    return max(16, width)


class OnlineSynthesizer(Synthesizer):
    """Base of the generator backends.

    Subclasses set ``name``, ``Config``, ``output_head`` and implement :meth:`objective`.

    Args:
        teacher: frozen teacher in eval mode.
        card: the teacher's card.
        config: an :class:`OnlineConfig` subclass.
    """

    online = True
    kd_warp = True  # every teacher (rules.KD_AFFINE: sessions 38-39)
    Config: ClassVar[type[SynthConfig]] = OnlineConfig
    output_head: ClassVar[str] = "tanh_bn"
    hidden_bn_eps: ClassVar[float] = 1e-5
    reuse_z: ClassVar[bool] = False  # ZSKT: the student trains on the z batch the generator just used
    auto_balance: ClassVar[float] = 0.0  # class-balance weight on BN-less teachers when balance is -1
    auto_noise: ClassVar[float] = 0.25  # noise share of the student's batches on BN-less teachers (-1)
    # the least factor of the method's KD epochs on a BN-less teacher (datafree.rules.online_kd_epochs); 1:
    # the MAC rule's alone (DAFL: plain_32 at 60 epochs 96.1 / 96.1 / 99.4% against 96.9 / 95.0 / 98.9% at 30)
    bn_less_epoch_factor: ClassVar[float] = 1.0
    config: OnlineConfig

    def __init__(self, teacher: nn.Module, card: Any, config: OnlineConfig) -> None:
        super().__init__(teacher, card, config)
        self.use_bn_term = config.bn_weight > 0 and bool(batchnorm_layers(teacher))
        self.stat_layers = spatial_batchnorm_layers(teacher, self.input_shape, config.bn_min_hw)
        _, h, w = self.input_shape
        width = config.generator_width or auto_generator_width(teacher, self.input_shape, config.latent_dim)
        self.generator = make_generator(
            config.latent_dim, self.input_shape, width, self.output_head, config.seed, self.hidden_bn_eps
        ).to(self.device)
        if config.output_scale == "learn":
            scale = torch.zeros((self.input_shape[0], 1, 1), device=self.device)
            self.generator.out_log_scale = nn.Parameter(scale)  # registered: optimised, checkpointed
        self.generator.train()
        structured = config.output_scale == "data" or config.output_colour == "teacher"
        teacher_mean = config.output_mean == "teacher"
        recovered = None
        if teacher_mean or structured:
            recovered = input_mean_from_batchnorm(teacher, self.input_shape)
        shift = recovered if teacher_mean else None
        self.structure = None  # the teacher's data structure (output_scale "data", output_colour "teacher")
        if structured and recovered is not None:
            self.structure = input_structure_from_batchnorm(teacher, self.input_shape, recovered, card.std)
        self.colour_mix: torch.Tensor | None = None
        self.data_spread: torch.Tensor | None = None  # (C, 1, 1), normalised units
        if self.structure is not None:
            card_std = torch.as_tensor(list(card.std), dtype=torch.float32)
            if config.output_colour == "teacher":
                mix = colour_mix(self.structure.correlation, card_std)
                self.colour_mix = None if mix is None else mix.to(self.device)
            spread = self.structure.spread / card_std
            if config.output_scale == "data" and float((spread - 1).abs().max()) >= OUTPUT_SCALE_MIN_CHANGE:
                self.data_spread = spread.view(-1, 1, 1).to(self.device)
        if shift is not None and float(shift.abs().max()) < OUTPUT_MEAN_MIN_SHIFT:
            shift = None  # the card standardises the data, as far as the recovery can tell: the papers' 0
        self.output_shift = None if shift is None else shift.view(-1, 1, 1).to(self.device)
        self.scale_layer = None  # output_scale "teacher": the first BN layer, and its input's variance at
        self.border_var: torch.Tensor | None = None  # the constant image output_shift (the padded borders')
        if config.output_scale == "teacher" and self.output_shift is not None:
            self.scale_layer = first_batchnorm(teacher, self.input_shape)
            flat = self.output_shift.expand(1, *self.input_shape)
            self.border_var = batchnorm_input_variance(teacher, self.scale_layer, flat)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.generator_lr)
        factor = LR_SCHEDULES[config.lr_schedule]
        total = config.iterations
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: factor(s, total))
        self.rng = torch.Generator().manual_seed(config.seed)
        self.scaler = precision.grad_scaler(self.device, "generator")
        self.steps = 0
        self.z: torch.Tensor | None = None  # the current z batch (reuse_z backends)
        self.z_consumed = True
        self._noise_entropy: float | None = None
        self.bn_scale: float | None = None  # bn_max_ratio's factor, set at the run's first generator step
        size = config.replay_size or auto_replay_size(self.input_shape)
        self.memory = ReplayMemory(size, self.rng) if config.replay > 0 else None
        self.jitter = config.jitter if config.jitter >= 0 else max(1, self.input_shape[1] // 8)
        weights = {**self.objective_weights(), "bn": config.bn_weight if self.use_bn_term else 0.0,
                   "balance": self.balance_weight}  # fmt: skip
        if not any(w > 0 for w in weights.values()):  # refused before a generator or an output is made
            raise UserInputError(
                f"all loss weights are zero ({', '.join(weights)}); give at least one term a weight > 0 with "
                "--set"
            )

    @classmethod
    def generator_cpu_s(
        cls, teacher: nn.Module, input_shape: tuple[int, int, int], config: OnlineConfig
    ) -> tuple[float, float]:
        """CPU seconds per image of the generator's ``(training step, forward)``: the online budget's.

        :func:`datafree.rules.cpu_seconds_per_image` of the generator ``config`` builds (its width, or
        :func:`auto_generator_width`'s), on a latent input; counted, not timed.
        """
        from datafree.rules import cpu_seconds_per_image

        width = config.generator_width or auto_generator_width(teacher, input_shape, config.latent_dim)
        gen = make_generator(config.latent_dim, input_shape, width, cls.output_head, 0, cls.hidden_bn_eps)
        latent = (config.latent_dim,)
        return cpu_seconds_per_image(gen, latent, "train"), cpu_seconds_per_image(gen, latent, "forward")

    def objective_weights(self) -> dict[str, float]:
        """The weights of :meth:`objective`'s terms by name (an adversarial discrepancy counts as 1)."""
        return {"objective": 1.0}

    # -- generation ---------------------------------------------------------------------------
    def draw_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latent vectors from ``generator`` (default: the backend's own seeded stream)."""
        z = torch.randn((n, self.config.latent_dim), generator=generator or self.rng)
        return z.to(self.device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)`` in normalised space.

        With ``clamp`` the values are clamped to valid pixels in the forward pass while the
        gradient passes straight through (the papers do not clamp at all).

        Shape:
            - z: ``(B, latent_dim)``.
            - Output: ``(B, C, H, W)``.
        """
        x = self.generator(z)
        log_scale = getattr(self.generator, "out_log_scale", None)
        if log_scale is not None:
            x = x * log_scale.exp()
        if self.colour_mix is not None:
            x = torch.einsum("dc,nchw->ndhw", self.colour_mix, x)
        if self.data_spread is not None:  # each channel's spread over the batch set to the data's
            x = x * (self.data_spread / x.detach().std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))
        if self.scale_layer is not None:
            x = x * self.first_bn_scale(x.detach())
        if self.output_shift is not None:
            x = x + self.output_shift
        if self.config.clamp:
            lo, hi = self.normalizer.bounds(x)
            x = x + (torch.max(torch.min(x, hi), lo) - x).detach()
        return x

    @torch.no_grad()
    def first_bn_scale(self, x: torch.Tensor) -> torch.Tensor:
        """output_scale "teacher": the factor ``s`` for images ``output_shift + s x`` (``x`` centred).

        ``s^2`` is :func:`datafree.hooks.variance_scale_fit`'s at the first BN layer (``v0``: the constant
        image's variance there, its padded borders), kept within ``[1/4, 4]``.
        """
        layer, v0 = self.scale_layer, self.border_var
        assert layer is not None and v0 is not None and self.output_shift is not None
        v1 = batchnorm_input_variance(self.teacher, layer, x + self.output_shift)
        s2, _ = variance_scale_fit(layer, v0, v1)
        return s2.clamp(1 / 16, 16).sqrt()

    # -- the generator objective --------------------------------------------------------------
    def objective(
        self, images: torch.Tensor, student: nn.Module | None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The backend's named, weighted generator loss terms on generated ``images``."""
        raise NotImplementedError

    def without_bn_term(self, value: float, auto: float) -> float:
        """A BN-less rule's setting: ``value``, or if -1 (automatic) ``auto`` without the BN term, else 0."""
        if value >= 0:
            return value
        return 0.0 if self.use_bn_term else auto

    @property
    def balance_weight(self) -> float:
        """The class-balance weight used: ``balance``, or when -1, ``auto_balance`` without the BN term."""
        return self.without_bn_term(self.config.balance, self.auto_balance)

    @property
    def noise_share(self) -> float:
        """The noise share used: ``noise_fraction``, or when -1, ``auto_noise`` without the BN term.

        ... and only when the teacher's answers to noise are diverse (:attr:`noise_entropy` at least
        :data:`datafree.rules.NOISE_MIN_ENTROPY`): a teacher that calls all noise one of a few classes
        teaches the student that unfamiliar inputs are never the other classes.
        """
        if self.config.noise_fraction >= 0:
            return self.config.noise_fraction
        if self.use_bn_term or self.auto_noise <= 0:
            return 0.0
        return self.auto_noise if self.noise_entropy >= NOISE_MIN_ENTROPY else 0.0

    @property
    def noise_entropy(self) -> float:
        """:func:`datafree.rules.noise_answer_entropy` of the teacher (computed once)."""
        if self._noise_entropy is None:
            self._noise_entropy = noise_answer_entropy(self.teacher, self.card)
        return self._noise_entropy

    def balance_terms(self, teacher_logits: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """The class-balance term on the teacher's logits ``(B, K)`` when its weight is > 0."""
        w = self.balance_weight
        loss = BALANCE_LOSSES[self.config.balance_loss]
        return {"balance": (w, loss(teacher_logits))} if w > 0 else {}

    def generator_loss(
        self, z: torch.Tensor, student: nn.Module | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss on ``G(z)`` (backend terms plus the optional BN term) and its log."""
        images = random_jitter(self.generate(z), self.jitter, self.rng)
        cfg = self.config
        if self.use_bn_term:
            stats_ctx = BNStatistics(self.teacher, layers=self.stat_layers, standardized=cfg.bn_standardized)
            with stats_ctx as stats:
                terms = self.objective(images, student)
                bn = stats.loss(cfg.first_bn_weight)
            if self.bn_scale is None:  # the run's first step (one host sync): the BN term's balance
                self.bn_scale = self._bn_balance(bn, terms)
            terms["bn"] = (cfg.bn_weight * self.bn_scale, bn)
        else:
            terms = self.objective(images, student)
        return weighted_sum(terms)

    def _bn_balance(self, bn: torch.Tensor, terms: dict[str, tuple[float, torch.Tensor]]) -> float:
        """``bn_max_ratio``'s factor for ``bn_weight``: at most 1, 1 when off or already within it."""
        if self.config.bn_max_ratio <= 0:
            return 1.0
        others = sum(abs(w * float(v.detach())) for w, v in terms.values() if w != 0)
        return bn_ce_scale(bn, torch.tensor(others), self.config.bn_weight, 1.0, self.config.bn_max_ratio)

    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One Adam update of the generator; the student (if any) is not changed."""
        if self.needs_student:
            student = self.check_student(student)
        if self.reuse_z:
            if self.z is None or self.z_consumed:
                self.z, self.z_consumed = self.draw_z(self.config.batch_size), False
            z = self.z
        else:
            z = self.draw_z(self.config.batch_size)
        with frozen_bn_statistics(student), precision.autocast(self.device, "generator"):
            loss, logs = self.generator_loss(z, student)
        loss = precision.fp32(loss)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        # Gradients for the generator only: the student's .grad stays untouched.
        scaled = self.scaler.scale(loss)  # scaled in fp16 only
        grads = (
            torch.autograd.grad(scaled, params, allow_unused=True)
            if loss.requires_grad
            else [None] * len(params)
        )
        if all(g is None for g in grads):
            raise UserInputError(
                f"{self.name}: the generator's output does not reach the loss (every term that depends on it "
                "has "
                "weight 0, or the teacher gives no gradient); give such a term a weight > 0 with --set"
            )
        for p, g in zip(params, grads, strict=True):
            p.grad = g if g is not None else torch.zeros_like(p)
        if self.config.generator_grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(params, self.config.generator_grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.steps += 1
        return logs

    def sample(self, n: int, generator: torch.Generator | None = None) -> Batch:
        """``G(z)`` for ``n`` fresh latents from ``generator``.

        A ``reuse_z`` backend without a ``generator`` returns (the first ``n`` of) the batch its
        last generator step used.
        """
        with torch.no_grad():
            if generator is None and self.reuse_z and self.z is not None and n <= len(self.z):
                self.z_consumed = True
                return Batch(self.generate(self.z[:n]))
            return Batch(self.generate(self.draw_z(n, generator)))

    def training_batch(self, n: int) -> torch.Tensor:
        """The student's batch of ``n``: :meth:`sample`, some of it replayed images and Gaussian noise.

        In that order: generated images, ``replay`` of the batch from the replay memory (once it holds
        images), :attr:`noise_share` of it noise.

        The noise is ``N(0, 1)`` in normalised space clamped to valid pixels (what
        :class:`datafree.sources.NoiseSource` feeds the noise baseline), drawn from the backend's
        own latent stream, so a resumed run draws the same batches.
        """
        k = min(int(round(n * self.noise_share)), n - 1) if n >= 2 else 0
        r = 0 if self.memory is None else min(int(round(n * self.config.replay)), n - k - 1, len(self.memory))
        images = self.sample(n - k - r).images
        parts = [images]
        if self.memory is not None:
            if r > 0:  # drawn before this batch joins the memory: images of earlier batches only
                parts.append(self.memory.draw(r).to(images.dtype))
            self.memory.add(images)
        if k > 0:
            noise = torch.randn((k, *images.shape[1:]), generator=self.rng).to(images.device, images.dtype)
            parts.append(self.normalizer.clamp_(noise))
        return torch.cat(parts) if len(parts) > 1 else images

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Generator, optimiser, scheduler, latent RNG, step count and the current z batch."""
        return {
            "generator": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.get_state(),
            "steps": self.steps,
            "z": None if self.z is None else self.z.cpu(),
            "z_consumed": self.z_consumed,
            "bn_scale": self.bn_scale,
            "memory": None if self.memory is None else self.memory.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.set_state(state["rng"])
        self.steps = int(state["steps"])
        self.z = None if state.get("z") is None else state["z"].to(self.device)
        self.z_consumed = bool(state.get("z_consumed", True))
        scale = state.get("bn_scale")
        self.bn_scale = None if scale is None else float(scale)
        if self.memory is not None and state.get("memory") is not None:
            self.memory.load_state_dict(state["memory"], self.device)

    def load_generator(self, weights: dict[str, torch.Tensor]) -> None:
        """Load trained generator weights (e.g. from ``generator.safetensors``)."""
        try:
            self.generator.load_state_dict(weights)
        except RuntimeError as e:
            raise UserInputError(
                f"generator weights do not fit a {self.name} generator with "
                f"latent_dim={self.config.latent_dim}, "
                f"generator_width={self.config.generator_width}: {str(e).splitlines()[0]}"
            ) from None


@dataclass
class AdversarialConfig(OnlineConfig):
    """Settings of the adversarial backends (ZSKT, DFAD) on top of :class:`OnlineConfig`."""

    # The confidence term (our addition, not in the papers): DAFL's one-hot loss, the cross-entropy of
    # the teacher's answer on G(z) against its own argmax, added to the generator's loss with this
    # weight, so the generator seeks disagreement among images the teacher answers as confidently as
    # it answers data. -1 (default): the backend's ``auto_confidence`` (3) where no BN-statistic term gives
    # the generator a prior of the data (a teacher without BatchNorm, or ``bn_weight`` 0), else 0. Measured on
    # plain_32 (seed 0): ZSKT 86.0 -> 96.9%, DFAD 85.2 -> 96.9% (real 1s read as 8s: 3% -> 70% right);
    # docs/online_generators.md, "Session 35".
    confidence: float = -1.0
    # the discrepancy term's weight (the papers': 1)
    adv_weight: float = 1.0

    # runs written before the option had no confidence term (SynthConfig.previous_defaults)
    previous_defaults: ClassVar[dict[str, Any]] = {**OnlineConfig.previous_defaults, "confidence": 0.0}

    def validate(self) -> None:  # noqa: D102
        super().validate()
        if self.confidence < 0 and self.confidence != -1.0:
            raise UserInputError(f"confidence must be >= 0 (or -1: automatic), got {self.confidence}")


class AdversarialSynthesizer(OnlineSynthesizer):
    """Base of the adversarial backends (ZSKT, DFAD).

    The generator maximises a student-teacher discrepancy against the real student, plus the
    class-balance term on BN-less teachers. Subclasses implement :meth:`discrepancy`.
    """

    needs_student = True
    auto_balance = 20.0  # on BN-less teachers (OnlineConfig.balance)
    auto_confidence: ClassVar[float] = 3.0  # on BN-less teachers (AdversarialConfig.confidence)
    bn_less_epoch_factor = ONLINE_BN_LESS_MIN_EPOCH_FACTOR  # 2: at least 60 KD epochs on a BN-less teacher
    config: AdversarialConfig

    @property
    def confidence_weight(self) -> float:
        """``confidence``, or when -1, ``auto_confidence`` without the BN term (as :attr:`balance_weight`)."""
        return self.without_bn_term(self.config.confidence, self.auto_confidence)

    def discrepancy(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The disagreement the generator maximises (a scalar; logits ``(B, K)``)."""
        raise NotImplementedError

    def objective(
        self, images: torch.Tensor, student: nn.Module | None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """``-discrepancy(S(x), T(x))`` (weight ``adv_weight``) and the class-balance term."""
        student = self.check_student(student)
        t_logits = self.teacher(images)
        with eval_mode(student if self.config.student_eval else None):  # None: the mode it is in
            s_logits = student(images)
        adversarial = -self.discrepancy(s_logits, t_logits)
        terms = {"adversarial": (self.config.adv_weight, adversarial), **self.balance_terms(t_logits)}
        confidence = self.confidence_weight
        if confidence > 0:
            terms["confidence"] = (confidence, one_hot_loss(t_logits))
        return terms
