"""The one protocol every backend implements, and the pieces backends share.

A :class:`Synthesizer` turns a frozen teacher into surrogate data:

* ``step(student=None) -> dict``: one optimisation step (of pixels or of a generator network);
  adversarial backends (``needs_student``) optimise against the current student.
* ``sample(n) -> Batch``: draw ``n`` surrogate images (normalised network input) with labels.
* ``state_dict()`` / ``load_state_dict()``: everything needed to resume.
* class attributes ``needs_student``, ``online``, ``kd_defaults``, ``pool_kd``, ``kd_warp``,
  ``pool_batch_size``, ``pool_options`` and the methods ``uses_student()`` and ``student_objective()``: what
  :mod:`datafree.plan` reads to choose the KD settings and the student's loss. Callers read them
  directly (every backend has them).

Offline backends (pixel optimisation: DeepInversion, ZeroQ) also implement ``reset(n, generator)``
to start a fresh batch; :meth:`Synthesizer.synthesize` then runs the full per-batch optimisation.
Online backends (a generator network: DAFL, ZSKT, DFAD) are trained inside the KD stage and
sampled on the fly; their ``synthesize`` just samples the trained generator.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from datafree.cards import ModelCard
from datafree.errors import UserInputError
from datafree.metrics import log_step
from datafree.normalize import Normalizer
from datafree.progress import progress
from datafree.registry import Registry
from datafree.utils import device_of, field_defaults

__all__ = [
    "GENERATORS", "Batch", "RoundSynthesizer", "Synthesizer", "SynthConfig", "register", "warmup_cosine",
    "parse_overrides",
]  # fmt: skip


@dataclass
class Batch:
    """Surrogate data: normalised images ``(B, C, H, W)`` and target labels ``(B,)`` (or None)."""

    images: torch.Tensor
    labels: torch.Tensor | None = None


@dataclass
class SynthConfig:
    """Options every backend has. Backends subclass this with their own fields."""

    batch_size: int = 256
    iterations: int = 200
    seed: int = 0
    #: the backend's fields that must be > 0 (besides ``batch_size`` and ``iterations``), and >= 0.
    positive_fields: ClassVar[tuple[str, ...]] = ()
    non_negative_fields: ClassVar[tuple[str, ...]] = ()
    #: a setting added after datasets or KD checkpoints were written, with the value they behaved as when it
    #: is not today's default: resuming one needs that value (:meth:`resume_defaults`).
    previous_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def resume_defaults(cls) -> dict[str, Any]:
        """Each setting's value before it existed: what a dataset or checkpoint that lacks it ran with."""
        return {**field_defaults(cls), **cls.previous_defaults}

    def plain(self) -> dict[str, Any]:
        """The settings as plain values (tuples as lists): what manifests and resume checks store."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the first bad value.

        Checks every field (finite, a C int; ``*weight`` and ``*lr`` >= 0; Adam's ``beta1`` and
        ``beta2`` in [0, 1), where torch would raise a bare ValueError later), then
        ``positive_fields`` and ``non_negative_fields``.
        """
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and f.name in ("batch_size", "iterations") and v <= 0:
                raise UserInputError(f"{f.name} must be > 0, got {v}")
            if isinstance(v, (int, float)) and f.name in ("beta1", "beta2") and not 0.0 <= v < 1.0:
                raise UserInputError(f"{f.name} must be in [0, 1), got {v}")
            if isinstance(v, int) and abs(v) > 2**31 - 1:  # a C int: torch, numpy and tqdm take these
                raise UserInputError(f"{f.name} must be at most {2**31 - 1} in size, got {str(v)[:20]}")
            if isinstance(v, float) and not math.isfinite(v):
                raise UserInputError(f"{f.name} must be finite, got {v}")
            if isinstance(v, (int, float)) and f.name.endswith(("weight", "lr")) and v < 0:
                raise UserInputError(f"{f.name} must be >= 0, got {v}")
        for name in self.positive_fields:
            if getattr(self, name) <= 0:
                raise UserInputError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in self.non_negative_fields:
            if getattr(self, name) < 0:
                raise UserInputError(f"{name} must be >= 0, got {getattr(self, name)}")


def parse_overrides(cls: type[SynthConfig], overrides: dict[str, Any]) -> SynthConfig:
    """Build ``cls`` from keyword overrides; unknown keys and wrong types are user errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in overrides.items():
        k = key.replace("-", "_")
        if k not in fields:
            valid = ", ".join(sorted(k for k in fields if k != "seed"))  # the seed is --seed
            raise UserInputError(f"unknown option {key!r} for {cls.__name__}; valid: {valid}")
        default = getattr(cls(), k)
        if isinstance(value, str) and not isinstance(default, str):
            try:
                value = _parse_value(value, default)
            except ValueError:
                raise UserInputError(f"option {key}={value!r} must be a {type(default).__name__}") from None
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise UserInputError(f"option {key}={value!r} must be a {type(default).__name__}")
        kwargs[k] = value
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        return tuple(type(default[0])(t) for t in text.split(","))
    return text


def warmup_cosine(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 (NVlabs ``lr_cosine_policy``)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e = step - warmup
    es = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


class Synthesizer(ABC):
    """Base class of every backend. See the module docstring for the protocol.

    Args:
        teacher: the frozen teacher (eval mode); its device is used for everything.
        card: the teacher's card (input shape, classes, normalisation).
        config: the backend's config dataclass.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[SynthConfig]] = SynthConfig
    #: adversarial: every step optimises against the current student (ZSKT, DFAD).
    needs_student: ClassVar[bool] = False
    requires_batchnorm: ClassVar[bool] = False
    #: a generator network trained inside the KD stage (DAFL, ZSKT, DFAD), not per-batch pixels.
    online: ClassVar[bool] = False
    #: the paper's KD settings (fields of :class:`datafree.distill.KDConfig`) for this backend's student.
    kd_defaults: ClassVar[dict[str, Any]] = {}
    #: KD settings over ``kd_defaults`` when the teacher has no BatchNorm (online backends; our tuning,
    #: not the papers': no BN-statistic term shapes the images; docs/online_generators.md). The user's win.
    kd_defaults_bn_less: ClassVar[dict[str, Any]] = {}
    #: KD settings of the growing-pool loop (``distill --pool``; :class:`datafree.sources.PoolSource`).
    pool_kd: ClassVar[dict[str, Any]] = {}
    #: the KD stage warps this backend's student images by :data:`datafree.rules.KD_AFFINE` degrees by
    #: default (``kd_defaults``, ``pool_kd`` and the user's ``--kd affine`` override it); True on the backends
    #: where it gained (the online ones, CMI, NAYER); DeepInversion and Fast-Datafree were level (session 41).
    kd_warp: ClassVar[bool] = False
    #: images synthesised per pool round (None: ``config.batch_size``).
    pool_batch_size: ClassVar[int | None] = None
    #: backend options of the growing-pool loop over the config's defaults (``--set`` wins), when
    #: the pool's short rounds want other settings than a written dataset (NAYER's steps per round).
    pool_options: ClassVar[dict[str, Any]] = {}
    #: a written dataset's images the CPU compute budget may grow the default to, doubling while the
    #: estimated run still fits (:func:`datafree.rules.budget_grow_images`); None: the default stays.
    #: Not the pool's, never a ``-n`` the user gave.
    budget_max_images: ClassVar[int | None] = None
    #: the teacher's agreement with the target classes on a written dataset under which the run warns
    #: that the images did not reach their classes (:func:`datafree.quality.agreement_warning`); None:
    #: agreement does not predict the student for this backend (Fast-Datafree's pools agree on about 10%
    #: and keep 96-100% of their teachers), so it is reported, never judged.
    agreement_floor: ClassVar[float | None] = None
    #: teacher passes (forward and backward to the pixels) per synthesis step, for the compute budget
    #: of a run on a CPU (:func:`datafree.plan.budget_settings`); None: the backend has no budget.
    budget_passes: ClassVar[float | None] = None
    #: the default student's BatchNorm (:func:`datafree.rules.default_student_arch`): ``"prefer"`` a
    #: student with BN whatever the teacher's, or follow the ``"teacher"``'s (DFAD).
    student_batchnorm: ClassVar[str] = "prefer"

    @classmethod
    def budget_round_step_s(
        cls, teacher: nn.Module, input_shape: tuple[int, ...], config: Mapping[str, Any],
        teacher_macs: int | None = None,
    ) -> Callable[[int, int], float] | None:  # fmt: skip
        """The compute budget's round term: ``f(r, batch)``, CPU s per step of round ``r`` beyond its price.

        What each step of round ``r`` (0, 1, ...) of ``batch`` images costs besides the priced step
        (:func:`datafree.rules.offline_run_cost`); None: nothing. ``config`` is the run's backend
        config as a dict (``dataclasses.asdict``); ``teacher_macs``, the teacher's
        :func:`datafree.rules.conv_linear_macs` where the caller has counted them (None: counted here).
        """
        return None

    @classmethod
    def bn_less_kd_defaults(cls, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """KD settings over ``kd_defaults`` on a teacher without BatchNorm taking ``input_shape`` inputs.

        ``kd_defaults_bn_less`` unless a backend makes one of them a rule of the input shape (DAFL's
        student lr: :func:`datafree.rules.dafl_bn_less_lr`); ``None``: the reference 16 px values.
        """
        return dict(cls.kd_defaults_bn_less)

    def __init__(self, teacher: nn.Module, card: ModelCard, config: SynthConfig) -> None:
        self.teacher = teacher.eval()
        self.card = card
        self.config = config
        self.normalizer: Normalizer = card.normalizer()
        self.device = device_of(teacher)
        self.input_shape: tuple[int, int, int] = tuple(card.input_shape)  # type: ignore[assignment]
        self.num_classes = card.num_classes
        # steps each batch of synthesize() ran, for backends that stop early (``steps_per_batch``)
        self.steps_taken: list[int] = []

    @classmethod
    def default_overrides(cls, card: ModelCard) -> dict[str, Any]:
        """Config values computed from the teacher's card (see :mod:`datafree.rules`); none by default."""
        return {}

    @abstractmethod
    def step(self, student: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the named loss terms (detached tensors)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Batch:
        """``n`` surrogate images (normalised) and their target labels."""

    def training_batch(self, n: int) -> torch.Tensor:
        """The student's batch of ``n`` images from an online backend: :meth:`sample`'s by default."""
        return self.sample(n).images

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (tensors and plain Python values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Restore :meth:`state_dict`."""

    def reset(self, n: int, generator: torch.Generator | None = None) -> None:  # noqa: B027 - optional
        """Offline backends: start a fresh batch of ``n`` images."""

    def synthesize(
        self,
        n: int,
        generator: torch.Generator | None = None,
        student: nn.Module | None = None,
        desc: str = "",
    ) -> Batch:
        """Offline: optimise a fresh batch for ``config.iterations`` steps. Online: sample."""
        if self.online:
            with torch.no_grad():
                return self.sample(n, generator)
        self.reset(n, generator)
        total = self.config.iterations
        bar = progress(range(total), desc=desc or self.name)
        steps = 0
        for i in bar:
            logs = self.step(student)
            steps = i + 1
            # tensors in, numbers out only on the logged steps (no per-step host sync)
            record = log_step("synthesize", steps, logs, total=total, lr=self._current_lr(), images=n,
                              extra={"method": self.name, "batch": desc or self.name})  # fmt: skip
            if record is not None and "total" in record:
                bar.set_postfix(loss=record["total"])
            if self.should_stop(steps, logs):
                break
        self.batch_done(steps)
        return self.sample(n)

    def should_stop(self, steps: int, logs: dict[str, torch.Tensor]) -> bool:
        """Whether :meth:`synthesize` ends the batch before ``iterations`` (a plateau stop); never here."""
        return False

    def batch_done(self, steps: int) -> None:
        """Called by :meth:`synthesize` with the steps a batch ran (nothing here)."""
        return None

    def batch_finite(self) -> bool:
        """Whether the last batch's optimisation reached a finite loss (here: always; one check per batch).

        A backend whose step can diverge without the images becoming NaN says so here, and the dataset
        writer (:func:`datafree.synthesis.synthesize_dataset`) then refuses the batch as diverged.
        """
        return True

    def uses_student(self) -> bool:
        """Whether :meth:`step` uses the student in this configuration.

        ``needs_student``, or an optional student term switched on (Adaptive DeepInversion's
        competition, Fast-Datafree's ``adv_weight``).
        """
        return self.needs_student

    def student_objective(
        self, temperature: float = 1.0
    ) -> Callable[[nn.Module, nn.Module, torch.Tensor], torch.Tensor] | None:
        """The student's loss in the KD stage, when the paper replaces KD's.

        A ``(student, teacher, x) -> loss`` (ZSKT's attention transfer), or None to use the KD
        config's loss. ``temperature``: the KD stage's (``KDConfig.temperature``), for an objective
        with a KL term, so ``--kd temperature`` is not silently ignored.
        """
        return None

    def _current_lr(self) -> float | None:
        """The learning rate of the backend's optimizer (``self.optimizer``), if it has one."""
        opt = getattr(self, "optimizer", None)
        return float(opt.param_groups[0]["lr"]) if isinstance(opt, torch.optim.Optimizer) else None

    def check_student(self, student: nn.Module | None) -> nn.Module:
        """Adversarial backends need a student; a clear error when none is given."""
        if student is None:
            raise UserInputError(f"method {self.name!r} is adversarial and needs a student to train against")
        return student


GENERATORS: Registry[Synthesizer] = Registry("method")


def register(cls: type[Synthesizer]) -> type[Synthesizer]:
    """Class decorator: register a backend under ``cls.name`` (the backends import it from here)."""
    GENERATORS.register(cls.name)(cls)
    return cls


class RoundSynthesizer(Synthesizer):
    """An offline backend that optimises one batch per round and keeps its lowest-loss images.

    Subclasses set ``best`` (the round's lowest-loss images, normalised) and ``targets`` (their labels).
    Their configs have an ``adv_weight`` (the optional adversarial term against the student) and they
    match the teacher's BatchNorm statistics.
    """

    requires_batchnorm = True
    # The published loop (``synthesise(); train(kd_steps)`` on a growing pool,
    # :class:`datafree.sources.PoolSource`), scaled to the 16 px digits teachers: rounds of 32 images
    # and 20 KD steps of batch 64 at SGD lr 0.1 (Fast-Datafree's and NAYER's; CMI sets its own).
    # Measured on ``fast`` with bench/time_to_accuracy.py on resnet8_digits (1 thread): 95% of the
    # teacher after 21.4 s, against 52.2 s with rounds of 128 and the plain KD settings (batch 128,
    # lr 0.05); a KD step is ~90% of the loop's time, and a smaller KD batch halves its cost without
    # needing more images.
    pool_batch_size: ClassVar[int] = 32
    pool_kd: ClassVar[dict[str, Any]] = {"batch_size": 64, "kd_steps": 20, "lr": 0.1}
    best: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def uses_student(self) -> bool:
        """The optional adversarial term (``adv_weight`` > 0) needs the student."""
        return self.config.adv_weight > 0  # type: ignore[attr-defined]  # every round backend's config has it

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> Batch:
        """The round's lowest-loss images (normalised) and their labels, or its first ``n``."""
        if self.best is None:
            raise RuntimeError("call reset() and step() before sample()")
        n = len(self.best) if n is None else n
        return Batch(self.best[:n].clone(), None if self.targets is None else self.targets[:n].clone())
