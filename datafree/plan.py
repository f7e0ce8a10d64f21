"""The one place that decides which surrogate data feeds the KD stage, and with which settings.

Every job (``distill``, ``synthesize`` of an online method, ``compress``, ``prune``, ``quantize``'s
calibration data, the benches) asks :func:`plan`::

    p = plan(teacher, method="dafl", kd={"epochs": 5}, seed=0)   # validates; nothing is written
    source = p.open_source(out / "data")                      # offline methods synthesise here
    distill(teacher.model, student, source, p.kd, student_objective=p.student_objective)

KD settings come from one rule (:func:`kd_settings`): :class:`~datafree.distill.KDConfig`'s
defaults, then the warp of the student's images where the backend's ``kd_warp`` says so (the online
backends, CMI and NAYER), then the backend's paper settings (``kd_defaults``; ``pool_kd`` for the
growing-pool loop), then the user's overrides.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generators import Synthesizer, create_synthesizer, list_methods, method_class
from generators.base import parse_overrides

from . import rules as _rules
from .cards import LoadedModel, ModelCard, check_forward
from .distill import KDConfig, check_objective_settings
from .errors import UserInputError
from .hooks import batchnorm_layers
from .models import create_model, default_student_for
from .rules import MethodChoice, default_method, kd_budget, warn_if_not_smaller
from .sources import DatasetSource, PoolSource, SurrogateSource, SynthesizerSource
from .synthesis import synthesize_dataset
from .utils import device_of

__all__ = [
    "AUTO",
    "DEFAULT_NUM_IMAGES",
    "Plan",
    "plan",
    "kd_settings",
    "auto_defaults",
    "path_settings",
    "auto_choice",
    "budget_settings",
    "make_student",
    "check_student",
]

DEFAULT_NUM_IMAGES = 1024
# ``method=AUTO``: the backend (and the pool) chosen by :func:`datafree.rules.default_method`.
AUTO = "auto"

StudentObjective = Callable[[nn.Module, nn.Module, torch.Tensor], torch.Tensor]


def kd_settings(
    method: str | None = None,
    overrides: KDConfig | Mapping[str, Any] | None = None,
    *,
    pool: bool = False,
    method_options: Mapping[str, Any] | None = None,
    num_images: int | None = None,
    teacher: nn.Module | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> KDConfig:
    """The KD settings of a run: ``KDConfig`` defaults < the backend's < ``overrides``.

    Args:
        method: the backend; its student's warp (:data:`datafree.rules.KD_AFFINE`) where its
            ``kd_warp`` says so, then: an online one brings its paper's ``kd_defaults`` (and its config's
            ``batch_size``, or ``method_options["batch_size"]`` when given), ``pool`` its ``pool_kd``,
            an offline one writing a dataset its ``kd_defaults`` over the budget rule.
        overrides: fields the user gave (a ``KDConfig`` is taken as it is).
        pool: the growing-pool loop (``distill --pool``).
        method_options: the backend options the user gave (only ``batch_size`` matters here).
        num_images: images an offline backend writes: the KD steps per epoch grow with them
            (:func:`datafree.rules.kd_budget`; 40 at the default 1024).
        teacher: the teacher network; an online backend's ``bn_less_kd_defaults(input_shape)`` apply when
            it has no BatchNorm layer, and its epochs follow :func:`datafree.rules.online_kd_epochs`
            (with ``input_shape``; at least the backend's ``bn_less_epoch_factor`` of them on a BN-less
            teacher).
        input_shape: the teacher's ``(C, H, W)`` (rules of the input size; None: the 16 px reference).
    """
    if isinstance(overrides, KDConfig):
        overrides.validate()
        return overrides
    values: dict[str, Any] = {}
    if method is not None:
        cls = method_class(method)
        if cls.kd_warp:  # the KD stage's warp of the student's images (our rule over the papers' KD)
            values["affine"] = _rules.KD_AFFINE
        if pool:
            values.update(cls.pool_kd)
        elif not cls.online:  # a written dataset: the budget rule, then the paper's KD settings
            if num_images is not None:
                values["steps_per_epoch"] = kd_budget(num_images)
            values.update(cls.kd_defaults)
        elif cls.online:  # the generator's batch is the student's batch unless the paper says otherwise
            values.update({"batch_size": cls.Config().batch_size, **cls.kd_defaults})
            bn_less = teacher is not None and not batchnorm_layers(teacher)
            if bn_less:
                values.update(cls.bn_less_kd_defaults(input_shape))
            if teacher is not None and input_shape is not None:  # cheap and BN-less teachers train longer
                macs = _teacher_macs(teacher, input_shape)
                least = cls.bn_less_epoch_factor if bn_less else 1.0  # type: ignore[attr-defined]
                values["epochs"] = _rules.online_kd_epochs(values["epochs"], macs, least)
            if method_options and "batch_size" in method_options:  # "16" (--set): parsed as the backend does
                given = {"batch_size": method_options["batch_size"]}
                values["batch_size"] = parse_overrides(cls.Config, given).batch_size
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    fields = {f.name for f in dataclasses.fields(KDConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise UserInputError(f"unknown KD option {unknown[0]!r}; valid: {', '.join(sorted(fields))}")
    cfg = KDConfig(**values)
    cfg.validate()
    return cfg


def _teacher_macs(teacher: nn.Module, input_shape: tuple[int, ...]) -> int:
    """:func:`datafree.rules.conv_linear_macs` of the teacher; 0 when it cannot be counted."""
    try:
        return _rules.conv_linear_macs(teacher, input_shape)
    except Exception:  # noqa: BLE001 - a teacher the counter cannot run: no MAC rule
        return 0


def auto_choice(
    teacher: nn.Module,
    card: ModelCard,
    num_images: int = DEFAULT_NUM_IMAGES,
    student: nn.Module | None = None,
    budget_s: float | None = None,
) -> MethodChoice:
    """:func:`datafree.rules.default_method`, with Fast-10 where it fits and the pool's compute cap on a CPU.

    Above :data:`datafree.rules.FAST10_MAX_COST_RATIO` the pool runs Fast-10's recipe
    (:data:`datafree.rules.POOL_FAST10_OPTIONS`) instead of Fast-5's when that run keeps its KD epochs and
    its 10 steps per round under the compute cap and the CPU budget, the KD batch halved at most
    (:func:`_fast10_capped`; on a GPU, with neither, always): measured on MobileNetV2 at 3x64x64 (21x
    the reference), 78.3 / 86.6% of the teacher with Fast-5's pool and 91.9 / 96.7% with Fast-10's
    (students LeNet-5 BN / ResNet-10), and on ResNet-18 and VGG-8 BN at 3x32x32 (99.2 and 100.0%
    against Fast-5's 99.4 and 100.0%; docs/fidelity.md, "Session 25").

    When the pool run's estimated compute (:func:`datafree.rules.pool_run_macs`, KD with the noise
    baseline plus the pool's synthesis) passes :data:`datafree.rules.RUN_MAX_MACS`, the KD takes
    :data:`datafree.rules.POOL_CAPPED_KD` and as many epochs as fit (docs/fidelity.md, "Session 6").
    A ``budget_s`` other than :data:`datafree.rules.RUN_BUDGET_CPU_S` (``--budget``) scales the cap by the
    same factor (:func:`datafree.rules.run_max_macs`; ``math.inf``: no cap).
    The cap lives here, not in :mod:`datafree.rules`, because it reads the pool's and the KD stage's
    own defaults (``fast``'s pool settings, :class:`datafree.distill.KDConfig`).

    Args:
        teacher: the teacher network.
        card: its card.
        num_images: the images DeepInversion would write.
        student: the student the run distils (its MACs enter the estimate); default: the one
            ``compress`` would choose.
        budget_s: the run's compute budget (None: :data:`datafree.rules.RUN_BUDGET_CPU_S`).
    """
    choice = default_method(teacher, card, num_images)
    macs = choice["teacher_macs"]
    if choice["pool"] and macs:
        max_macs = _rules.run_max_macs(budget_s)
        capped = None
        if not choice["options"]:  # Fast-5's pool above 10x: Fast-10's where its run fits
            capped = _fast10_capped(teacher, card, macs, student, budget_s, max_macs)
            if capped is not None:
                choice.update(options=dict(_rules.POOL_FAST10_OPTIONS), kd=dict(_rules.POOL_FAST10_KD))
                choice["rule"] += ", Fast-10's recipe: its run fits the compute budget with its KD epochs"
        if capped is None:
            capped = _pool_epoch_cap(teacher, card, macs, choice["options"], choice["kd"], student, max_macs)
        if "epochs" not in capped[1]:  # the cap left the KD whole: twice the epochs where that fits too
            grown = _pool_grown_epochs(teacher, card, macs, choice["options"], capped[0], student, budget_s,
                                       max_macs)  # fmt: skip
            if grown is not None:
                capped = grown
                g = grown[1]
                choice["rule"] += (
                    f"; {g['grown_epochs']} KD epochs: the run with twice the pool's fits the compute budget "
                    f"(estimated {g['grown_estimate_s']:.0f} s <= {g['growth_budget_s']:.0f} s of one CPU "
                    "core, the default path's 10-minute share of the budget)"
                )
        choice["kd"], choice["compute"] = capped
        c = choice["compute"]
        if "epochs" in c:
            est, cap = c["run_macs"] / 1e12, max_macs / 1e12
            choice["rule"] += f"; {c['epochs']} KD epochs: estimated {est:.0f}e12 MACs > {cap:.0f}e12"
    return choice


def _pool_grown_epochs(
    teacher: nn.Module, card: Any, macs: int, options: dict[str, Any], kd: dict[str, Any],
    student: nn.Module | None, budget_s: float | None, max_macs: float,
) -> tuple[dict[str, Any], dict[str, Any]] | None:  # fmt: skip
    """The pool with :data:`datafree.rules.POOL_EPOCH_GROWTH` times its KD epochs, if that run fits: or None.

    The pool's rounds follow its KD steps, so twice the epochs is twice the pooled images and twice the
    KD. It fits when the compute cap (:func:`_pool_epoch_cap`) takes none of the grown epochs, the CPU
    budget (:func:`budget_settings`) changes none of its settings and its estimate fits the default path's
    10 minutes (:func:`datafree.rules.pool_growth_budget`, since session 37); on a GPU (no budget) and with
    ``--budget off`` the pool keeps its epochs, as a written dataset keeps its images (docs/fidelity.md,
    "Session 26"). Returns :func:`_pool_epoch_cap`'s ``(kd, compute)`` with ``grown_epochs``,
    ``grown_estimate_s``, ``budget_s`` and ``growth_budget_s`` in ``compute``.
    """
    epochs = kd_settings("fast", kd, pool=True).epochs * _rules.POOL_EPOCH_GROWTH
    capped = _pool_epoch_cap(teacher, card, macs, options, {**kd, "epochs": epochs}, student, max_macs)
    if "epochs" in capped[1]:
        return None
    budget = _pool_budget(teacher, card, options, capped[0], student, budget_s)
    if budget is None or budget["budget_s"] is None or budget["capped"] or budget["over_budget"]:
        return None
    room = _rules.pool_growth_budget(budget_s)  # the default path's 10 minutes
    if budget["capped_estimate_s"] > room:
        return None
    info = {**capped[1], "grown_epochs": epochs, "grown_estimate_s": budget["capped_estimate_s"],
            "budget_s": budget["budget_s"], "growth_budget_s": room}  # fmt: skip
    return capped[0], info


def _fast10_capped(
    teacher: nn.Module, card: Any, macs: int, student: nn.Module | None, budget_s: float | None,
    max_macs: float,
) -> tuple[dict[str, Any], dict[str, Any]] | None:  # fmt: skip
    """Fast-10's pool (:data:`datafree.rules.POOL_FAST10_OPTIONS`) under the compute cap, if it fits: or None.

    It fits when neither the compute cap (:func:`_pool_epoch_cap`) nor the CPU budget
    (:func:`budget_settings`, its 10 steps per round kept) takes any of its KD epochs or steps: at most
    the KD batch is halved. On a GPU, where neither applies, it always fits. Returns
    :func:`_pool_epoch_cap`'s ``(kd, compute)`` for Fast-10's settings, for the caller to keep.
    """
    options, kd = dict(_rules.POOL_FAST10_OPTIONS), dict(_rules.POOL_FAST10_KD)
    epochs = kd_settings("fast", kd, pool=True).epochs
    capped = _pool_epoch_cap(teacher, card, macs, options, kd, student, max_macs)
    if capped[1].get("epochs", epochs) < epochs:
        return None
    budget = _pool_budget(teacher, card, options, capped[0], student, budget_s)
    if budget is None:
        return capped
    fits = not budget["over_budget"] and all(n.startswith("batch_size") for n in budget["notches"])
    return capped if fits else None


def _pool_budget(
    teacher: nn.Module, card: Any, options: dict[str, Any], kd: dict[str, Any], student: nn.Module | None,
    budget_s: float | None,
) -> dict[str, Any] | None:  # fmt: skip
    """:func:`budget_settings` of ``auto``'s pool (``fast``) with these options and KD settings."""
    cfg = kd_settings("fast", kd, pool=True)
    return budget_settings(teacher, card, "fast", pool=True, kd=cfg, kd_given=None, options=options,
                           num_images=None, student=student, budget_s=budget_s)  # fmt: skip


def _pool_epoch_cap(
    teacher: nn.Module, card: Any, macs: int, options: dict[str, Any], kd: dict[str, Any],
    student: nn.Module | None, max_macs: float,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The pool's KD settings under the cap ``max_macs``; the estimate."""
    cls = method_class("fast")
    kd_cfg = dataclasses.asdict(kd_settings("fast", kd, pool=True))  # the pool's KD settings under the path's
    synth = {**dataclasses.asdict(cls.Config()), **cls.pool_options, **options}
    shape = tuple(int(v) for v in card.input_shape)
    if student is not None:
        s_macs = _rules.conv_linear_macs(student, shape)
    else:
        s_macs = _rules.default_student_macs(teacher, card)

    def est(k: dict[str, Any]) -> float:
        return _rules.pool_run_macs(
            macs, s_macs, epochs=int(k["epochs"]), steps_per_epoch=k["steps_per_epoch"],
            kd_steps=k["kd_steps"], batch_size=k["batch_size"], pool_batch=cls.pool_batch_size,
            iterations=synth["iterations"], adversarial=synth["adv_weight"] > 0,
        )  # fmt: skip

    total = est(kd_cfg)
    cap = max_macs if math.isfinite(max_macs) else None  # JSON has no infinity
    info: dict[str, Any] = {"student_macs": s_macs, "run_macs": total, "max_run_macs": cap}
    p = next(teacher.parameters(), None)
    on_cpu = p is None or p.device.type == "cpu"
    if on_cpu and total > max_macs:
        small = {**kd_cfg, **_rules.POOL_CAPPED_KD}  # smaller KD batches, more rounds ...
        epochs = int(kd_cfg["epochs"])  # ... and as many epochs as fit
        while epochs > _rules.POOL_MIN_EPOCHS and est({**small, "epochs": epochs}) > max_macs:
            epochs -= 1
        kd = {**kd, **_rules.POOL_CAPPED_KD, "epochs": epochs}
        info.update(epochs=epochs, capped_run_macs=est({**small, "epochs": epochs}))
    return kd, info


def budget_settings(
    teacher: nn.Module,
    card: Any,
    method: str,
    *,
    pool: bool,
    kd: KDConfig,
    kd_given: KDConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    num_images: int | None,
    student: nn.Module | None = None,
    budget_s: float | None = None,
    max_iterations: int | None = None,
) -> dict[str, Any] | None:
    """The compute budget of a run on a CPU (docs/fidelity.md, "Session 7").

    Applies to an online backend (``dafl``, ``zskt``, ``dfad``: :func:`_online_budget`) and to one with
    ``budget_passes`` (``cmi``, ``nayer``, ``fast``, ``deepinversion``), written dataset or growing pool, on a
    CPU. An offline backend's cost is estimated from the teacher's and the student's
    :func:`datafree.rules.cpu_seconds_per_image` (:func:`datafree.rules.offline_run_cost`, noise baseline
    included; DeepInversion's steps at its cap, which its plateau stop may not reach: an upper bound),
    and when it passes :data:`datafree.rules.RUN_BUDGET_CPU_S`, the settings the user did not give are
    scaled down by :func:`datafree.rules.budget_ladder`; when it fits untouched, a backend with
    ``budget_max_images`` (``fast``) doubles its written images while the run still fits
    (:func:`datafree.rules.budget_grow_images`). Nothing is timed: the same
    teacher and settings always give the same plan.

    Args:
        teacher: the teacher network.
        card: its card.
        method: the backend.
        pool: the growing-pool loop (else a written dataset of ``num_images``).
        kd: the run's KD settings before the budget.
        kd_given: the user's KD overrides (a ``KDConfig``: every KD setting is the user's).
        options: the backend options the user gave (``--set``; ``iterations`` there is kept).
        num_images: the images the user asked for (None: :data:`DEFAULT_NUM_IMAGES`, which the budget may
            lower).
        student: the student the run distils (default: the one ``compress`` would choose).
        budget_s: the budget (default :data:`datafree.rules.RUN_BUDGET_CPU_S`; ``--budget``); ``math.inf``
            (``--budget off``): none, the estimate is reported and nothing is cut or grown.
        max_iterations: on the pool, a run the budget leaves alone raises its synthesis steps per batch
            up to this while it still fits (:func:`datafree.rules.budget_grow_iterations`; ``compress``'s
            NAYER path), unless the user gave ``iterations``.

    Returns:
        None when the budget does not apply (an offline backend without ``budget_passes``, a GPU);
        otherwise ``{"estimate_s", "budget_s", "capped": bool, "grown": bool, "notches", "settings",
        "capped_estimate_s", "kd", "options", "num_images", "rule"}``, where ``kd``, ``options`` and
        ``num_images`` are the changed settings to apply; ``capped``: the settings changed (cut to fit,
        or ``grown`` into the room left: a backend's ``budget_max_images``,
        :func:`datafree.rules.budget_grow_images`).
    """
    cls = method_class(method)
    passes = getattr(cls, "budget_passes", None)
    p = next(teacher.parameters(), None)
    if not (cls.online or passes) or (p is not None and p.device.type != "cpu"):
        return None
    budget = _rules.RUN_BUDGET_CPU_S if budget_s is None else float(budget_s)
    shape = tuple(int(v) for v in card.input_shape)
    features = _rules.cost_features(teacher, shape)  # one counting forward serves both prices
    t_fwd = _rules.cpu_seconds_per_image(features, shape, "forward")
    t_train = _rules.cpu_seconds_per_image(features, shape, "train")
    if student is not None:
        s_train = _rules.cpu_seconds_per_image(student, shape, "train")
    else:
        s_train = _rules.default_student_train_s(teacher, card, cls.student_batchnorm)
    per_image = {"teacher_forward": t_fwd, "teacher_train": t_train, "student_train": s_train}
    given_kd = (
        {f.name for f in dataclasses.fields(KDConfig)}
        if isinstance(kd_given, KDConfig)
        else {k for k, v in (kd_given or {}).items() if v is not None}
    )
    if cls.online:
        return _online_budget(teacher, cls, shape, per_image, kd, given_kd, options, budget)
    # the backend's config as create_synthesizer builds it: the rules of the teacher's input shape
    # (DeepInversion's batch and step cap, datafree.rules.deepinversion_defaults) < the pool's < --set
    base = {**cls.default_overrides(card), **(cls.pool_options if pool else {})}
    synth = dataclasses.asdict(parse_overrides(cls.Config, {**base, **options}))
    synth_batch = int(cls.pool_batch_size or synth["batch_size"]) if pool else int(synth["batch_size"])
    fixed = {k for k in ("epochs", "batch_size") if k in given_kd}
    if "iterations" in (options or {}):
        fixed.add("iterations")
    settings = {"epochs": kd.epochs, "batch_size": kd.batch_size, "iterations": int(synth["iterations"])}
    if not pool:
        settings["num_images"] = int(num_images or DEFAULT_NUM_IMAGES)
        if num_images is not None:
            fixed.add("num_images")
    backend_kd = cls.pool_kd if pool else cls.kd_defaults
    spe_fixed = "steps_per_epoch" in given_kd or "steps_per_epoch" in backend_kd

    def steps_per_epoch(s: Mapping[str, int]) -> int:
        return kd.steps_per_epoch if pool or spe_fixed else _rules.kd_budget(s["num_images"])

    # the student in every synthesis step: an adversarial term (fast, nayer), Adaptive DeepInversion's
    # competition
    adversarial = any(float(synth.get(k, 0) or 0) > 0 for k in ("adv_weight", "competition_weight"))
    # CMI's memory bank; the counting forward above has the teacher's MACs (conv_linear_macs' count)
    round_step_s = cls.budget_round_step_s(teacher, shape, synth, teacher_macs=int(features["macs"]))

    def cost(s: Mapping[str, int]) -> dict[str, float]:
        return _rules.offline_run_cost(
            t_fwd, s_train, shape, passes=passes, iterations=s["iterations"],
            synth_batch=synth_batch, kd_epochs=s["epochs"], kd_steps_per_epoch=steps_per_epoch(s),
            kd_batch=s["batch_size"],
            num_images=None if pool else s["num_images"], kd_steps=kd.kd_steps,
            adversarial=adversarial, method=method.lower(),
            round_step_s=round_step_s,
            warmup_rounds=int(synth.get("warmup_rounds", 0) or 0),  # fast's (pool_options: none in the pool)
        )  # fmt: skip

    after_settings, notches = _rules.budget_ladder(
        settings, cost, fixed, budget, synth_batch, kd_steps_per_epoch=steps_per_epoch
    )
    room = math.isfinite(budget) and not notches  # a run left alone grows into the room (off: no growth)
    grow = getattr(cls, "budget_max_images", None)
    if room and not pool and grow and "num_images" not in fixed:  # cheap images grow
        after_settings, notches = _rules.budget_grow_images(after_settings, cost, int(grow), budget)
    if room and pool and max_iterations and "iterations" not in fixed:  # more steps
        after_settings, notches = _rules.budget_grow_iterations(after_settings, cost, max_iterations, budget)
    info = _budget_info(settings, after_settings, notches, cost, budget, per_image)
    changed = {k: v for k, v in after_settings.items() if settings[k] != v}
    if "num_images" in changed and not spe_fixed:
        info["kd"]["steps_per_epoch"] = steps_per_epoch(after_settings)
    info["options"] = {"iterations": changed["iterations"]} if "iterations" in changed else {}
    info["num_images"] = changed.get("num_images")
    return info


def _online_budget(
    teacher: nn.Module, cls: type[Synthesizer], shape: tuple[int, ...], per_image: dict[str, float],
    kd: KDConfig, given_kd: set[str], options: Mapping[str, Any], budget: float,
) -> dict[str, Any]:  # fmt: skip
    """:func:`budget_settings` of an online backend (DAFL, ZSKT, DFAD; docs/online_generators.md, session 10).

    The run's estimate is :func:`datafree.rules.online_run_cost`'s (the generator's steps, the student's,
    the noise baseline's); the knobs are the KD epochs and batch (:func:`datafree.rules.budget_ladder`),
    the generator's batch and steps per round stay the backend's. ``--set batch_size`` (the KD batch too,
    :func:`kd_settings`) counts as given.
    """
    config = parse_overrides(cls.Config, dict(options or {}))
    gen_s = cls.generator_cpu_s(teacher, shape, config)  # type: ignore[attr-defined]
    per_image = {**per_image, "generator_train": gen_s[0], "generator_forward": gen_s[1]}
    fixed = {k for k in ("epochs", "batch_size") if k in given_kd}
    if "batch_size" in (options or {}):
        fixed.add("batch_size")

    def cost(s: Mapping[str, int]) -> dict[str, float]:
        return _rules.online_run_cost(
            per_image["teacher_forward"], per_image["student_train"], gen_s, method=cls.name,
            epochs=s["epochs"], rounds=kd.rounds, g_steps=kd.g_steps, kd_steps=kd.kd_steps,
            generator_batch=int(config.batch_size), kd_batch=s["batch_size"], adversarial=cls.needs_student,
        )  # fmt: skip

    settings = {"epochs": kd.epochs, "batch_size": kd.batch_size}
    after_settings, notches = _rules.budget_ladder(
        settings, cost, fixed, budget, kd_steps_per_epoch=lambda _s: kd.steps_run_per_epoch
    )
    info = _budget_info(settings, after_settings, notches, cost, budget, per_image)
    info.update(options={}, num_images=None)
    return info


def _budget_info(
    settings: dict[str, int], after_settings: dict[str, int], notches: list[str],
    cost: Callable[[Mapping[str, int]], dict[str, float]], budget: float, per_image: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    """The plan's ``compute_budget``: the estimates before and after the ladder, its notches, the rule."""
    before, after = cost(settings), cost(after_settings)
    changed = {k: v for k, v in after_settings.items() if settings[k] != v}
    info: dict[str, Any] = {
        "estimate_s": before["total_s"], "estimate": before, "capped": bool(notches),
        "budget_s": budget if math.isfinite(budget) else None,  # off: JSON has no infinity
        "notches": notches, "settings": after_settings, "capped_estimate_s": after["total_s"],
        "capped_estimate": after, "over_budget": after["total_s"] > budget, "per_image_s": per_image,
        "kd": {k: changed[k] for k in ("epochs", "batch_size") if k in changed},
        "grown": bool(notches) and before["total_s"] <= budget,
    }  # fmt: skip
    est = f"estimated {before['total_s']:.0f} s of one CPU core (noise baseline included)"
    if not math.isfinite(budget):
        info["rule"] = f"{est}; no compute budget (--budget off): the backend's settings"
    elif notches:
        rel = ">" if before["total_s"] > budget else "<="  # cut to fit, or grown into the room left
        info["rule"] = f"{est} {rel} {budget:.0f} s: {', '.join(notches)} ({after['total_s']:.0f} s)"
    elif before["total_s"] > budget:  # nothing left to cut: the user gave every setting the budget may change
        info["rule"] = f"{est} > {budget:.0f} s: the settings given are kept, the run goes over the budget"
    else:
        info["rule"] = f"{est} <= {budget:.0f} s: the backend's settings"
    return info


def budget_note(info: Mapping[str, Any]) -> str | None:
    """The line that tells the user the compute budget changed the plan, or None (``Plan.info``)."""
    b = info.get("compute_budget")
    if not b or not b.get("capped"):
        return None
    return f"compute budget: {b['rule']}; --budget TIME|off changes it"


def auto_defaults(
    choice: Mapping[str, Any],
    method_options: Mapping[str, Any] | None,
    kd: KDConfig | Mapping[str, Any] | None,
) -> tuple[dict[str, Any], KDConfig | dict[str, Any] | None]:
    """The backend and KD settings of ``method="auto"``'s path, under the user's.

    Those are :func:`datafree.rules.default_method`'s ``options`` and ``kd``; ``--set`` and KD
    options win, a ``None`` KD value counts as not given, and a ``KDConfig`` is kept as it is.
    """
    options = {**choice.get("options", {}), **(method_options or {})}
    if isinstance(kd, KDConfig):
        return options, kd
    given = {k: v for k, v in (kd or {}).items() if v is not None}
    return options, {**choice.get("kd", {}), **given}


def path_settings(
    choice: Mapping[str, Any] | None,
    method_options: Mapping[str, Any] | None,
    kd: KDConfig | Mapping[str, Any] | None,
    run_student: bool = True,
) -> tuple[bool, Any, Any, int | None]:
    """``(pool, method_options, kd, max_iterations)`` for :func:`plan` from a path choice.

    ``choice`` is ``auto``'s (:func:`auto_choice`) or a named backend's own loop
    (:func:`datafree.rules.named_method_path`), or None. Its pool needs a student stage to feed
    (``run_student``); a pool brings the path's backend and KD defaults under the user's
    (:func:`auto_defaults`) and the steps per round the budget may grow to (NAYER's). Otherwise the
    settings pass through unchanged.
    """
    if choice is None or not choice["pool"] or not run_student:
        return False, method_options, kd, None
    options, kd = auto_defaults(choice, method_options, kd)
    return True, options, kd, choice.get("max_iterations")


def _student_batchnorm(method: str | None) -> str:
    """The backend's ``student_batchnorm``; ``"prefer"`` for None, ``auto`` or a name not registered."""
    if method and method in list_methods():
        return str(method_class(method).student_batchnorm)
    return "prefer"


def make_student(
    arch: str | nn.Module | None, card: ModelCard | LoadedModel, seed: int = 0, method: str | None = None
) -> tuple[nn.Module, str]:
    """A freshly initialised student (``arch``, or the default for the teacher) and its arch name.

    The default, given a loaded teacher, is :func:`datafree.rules.default_student_arch`'s for ``method``
    (the field's pair for a known arch, else chosen by size, with BatchNorm unless the backend keeps
    the teacher's BN-ness: :func:`datafree.rules.choose_student`), and a given ``arch`` that is not
    smaller than the teacher gets a warning; given only a card, the registry's pairing
    (:func:`datafree.models.default_student_for`).

    The weights follow ``seed``; the global RNG is left as it was. An ``nn.Module`` is returned as
    it is. An unknown ``arch`` is a user error, so calling this early validates ``--student``.
    """
    teacher = card.model if isinstance(card, LoadedModel) else None
    if isinstance(card, LoadedModel):
        card = card.card
    if isinstance(arch, nn.Module):
        return arch, type(arch).__name__.lower()
    if arch is not None:
        name = arch
    elif teacher is not None:  # the field's pair (resnet34 -> resnet18, ...), else chosen by size
        name = _rules.default_student_arch(teacher, card, _student_batchnorm(method))
    else:
        name = default_student_for(card.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name, card.num_classes, card.in_channels)
    check_student(model, name, card)
    if arch is not None and teacher is not None:
        warn_if_not_smaller(model, teacher, name)
    return model, name


@dataclass
class Plan:
    """What feeds the KD stage: from :func:`plan`.

    Attributes:
        teacher: the teacher the data is for.
        kd: the KD settings.
        data: a synthetic dataset directory (``--data``), or None.
        method: the backend (``--method``), or None.
        synthesizer: the backend, built and validated (None with ``data``).
        pool: the growing-pool loop (offline backends).
        num_images: images an offline backend writes before the KD stage.
        seed: seed of synthesis and data order.
        allow_other_teacher: accept a dataset synthesised from another model of the same input spec.
        info: a JSON-able description for reports.
    """

    teacher: LoadedModel
    kd: KDConfig
    data: Path | None = None
    method: str | None = None
    synthesizer: Synthesizer | None = None
    pool: bool = False
    num_images: int = DEFAULT_NUM_IMAGES
    seed: int = 0
    allow_other_teacher: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    dataset_source: DatasetSource | None = None  # ``data``, opened (and so checked) by :func:`plan`

    @property
    def online(self) -> bool:
        """A generator trained inside the KD stage (DAFL, ZSKT, DFAD)."""
        return self.synthesizer is not None and self.synthesizer.online

    @property
    def student_objective(self) -> StudentObjective | None:
        """The backend's replacement of the KD loss (ZSKT's attention transfer), or None."""
        if not self.online or self.synthesizer is None:
            return None
        return self.synthesizer.student_objective(self.kd.temperature)

    @property
    def writes_dataset(self) -> bool:
        """An offline backend without the pool writes a dataset before the KD stage."""
        return self.method is not None and not self.online and not self.pool

    def open_source(self, synth_dir: str | Path | None = None) -> SurrogateSource:
        """The surrogate source of this plan.

        An offline backend first writes ``num_images`` to ``synth_dir`` (resumable, reusable with
        ``--data``).
        """
        synth = self.synthesizer
        if self.dataset_source is not None:
            src = self.dataset_source
            method = src.dataset.manifest.get("method")
            self.info.update(data=str(self.data), method=method, num_images=len(src))
            return src
        assert synth is not None and self.method is not None
        if self.online:
            self.info.update(method=self.method, online=True)
            return SynthesizerSource(synth, g_steps=self.kd.g_steps)
        if self.pool:
            self.info.update(method=self.method, pool=True)
            return PoolSource(synth, batch_size=synth.pool_batch_size, seed=self.seed)
        if synth_dir is None:
            raise UserInputError(f"method {self.method!r} writes a dataset first: give an output directory")
        ds = synthesize_dataset(self.teacher, self.method, synth_dir, self.num_images, seed=self.seed,
                                **self.method_options)  # fmt: skip
        src = DatasetSource(ds.root, self.teacher.card, device_of(self.teacher.model), seed=self.seed)
        self.info.update(method=self.method, data=str(ds.root), num_images=len(src), online=False)
        return src


def plan(
    teacher: LoadedModel,
    *,
    data: str | Path | None = None,
    method: str | None = None,
    pool: bool = False,
    kd: KDConfig | Mapping[str, Any] | None = None,
    method_options: Mapping[str, Any] | None = None,
    num_images: int | None = None,
    seed: int = 0,
    allow_other_teacher: bool = False,
    student: nn.Module | None = None,
    max_iterations: int | None = None,
    budget_s: float | None = None,
    auto_path: bool = False,
) -> Plan:
    """Decide the surrogate source, the KD settings and the student objective; validate everything.

    Nothing is written: a bad ``--set``, a BN backend on a BN-less teacher, a dataset of another
    teacher or an unknown KD option fails here, before any output directory is touched.

    Args:
        teacher: the (frozen) teacher.
        data: a synthetic dataset directory; exclusive with ``method``.
        method: a backend name, or ``"auto"`` (:data:`AUTO`): the backend and the pool chosen from
            the teacher's cost by :func:`datafree.rules.default_method` (``compress``'s default; the
            choice is in ``info["method_choice"]``).
        pool: Fast-Datafree's growing pool (offline backends only).
        kd: the user's KD overrides (a ``KDConfig`` is used as it is); ``seed`` is added.
        method_options: backend config overrides (``--set``).
        num_images: images an offline backend writes (default :data:`DEFAULT_NUM_IMAGES`).
        seed: seed of the backend, the data order and the KD stage.
        allow_other_teacher: accept a dataset synthesised from another model of the same input spec.
        student: the student the run distils (its cost enters the compute budget); default: the one
            ``compress`` would choose.
        max_iterations: the pool's synthesis steps per batch may grow up to this where the compute
            budget leaves room (:func:`budget_settings`; ``compress``'s NAYER path,
            :func:`datafree.rules.named_method_path`).
        budget_s: the compute budget (``--budget``; None: :data:`datafree.rules.RUN_BUDGET_CPU_S`,
            ``math.inf``: none), for :func:`budget_settings` and ``"auto"``'s pool cap (:func:`auto_choice`).
        auto_path: ``method`` is the one ``auto`` chose (``compress`` resolves it first): the warning of
            a run over the budget at every floor then does not send the user back to ``auto``.

    On a CPU, a backend with a compute budget (``cmi``, ``nayer``, ``fast``, ``deepinversion``; not
    ``method="auto"``, whose pool has :func:`auto_choice`'s cap) has the settings the user did not give
    scaled down to fit :data:`datafree.rules.RUN_BUDGET_CPU_S` (:func:`budget_settings`;
    ``info["compute_budget"]``).

    Returns:
        The :class:`Plan`.
    """
    if (data is None) == (method is None):
        raise UserInputError("give exactly one of --data DIR (a synthetic dataset) or --method NAME")
    options = dict(method_options or {})
    choice = None
    if method == AUTO:  # the rule of the teacher's cost (docs/fidelity.md)
        choice = auto_choice(teacher.model, teacher.card, num_images or DEFAULT_NUM_IMAGES, budget_s=budget_s)
        method = choice["method"]
        chosen_pool, options, kd, _ = path_settings(choice, options, kd)  # a pool: its defaults under yours
        pool = pool or chosen_pool
    if data is not None and options:
        first = next(iter(options))
        raise UserInputError(f"--set {first} configures a synthesis backend and needs --method, not --data")
    online = method is not None and method_class(method).online
    if pool and (method is None or online):
        raise UserInputError(
            "--pool needs an offline --method (for example fast), not --data or an online method"
        )
    overrides = kd if isinstance(kd, KDConfig) else {"seed": seed, **(kd or {})}
    cfg = kd_settings(
        method, overrides, pool=pool, method_options=options, num_images=num_images or DEFAULT_NUM_IMAGES,
        teacher=teacher.model, input_shape=tuple(teacher.card.input_shape),
    )  # fmt: skip
    budget = None
    if method is not None and choice is None and data is None:  # auto's path has its own cap (auto_choice)
        budget = budget_settings(teacher.model, teacher.card, method, pool=pool, kd=cfg, kd_given=kd,
                                 options=options, num_images=num_images, student=student,
                                 budget_s=budget_s, max_iterations=max_iterations)  # fmt: skip
    if budget is not None and budget["capped"]:  # the budget's settings under the user's (which it kept)
        options = {**options, **budget["options"]}
        num_images = budget["num_images"] or num_images
        cfg = dataclasses.replace(cfg, **budget["kd"])
        cfg.validate()
    if budget is not None and budget["over_budget"]:  # every knob at its floor: say so before the long run
        warnings.warn(
            f"{method} on this teacher is estimated at {budget['capped_estimate_s']:.0f} s of one CPU core "
            "with every setting the compute budget may lower at its floor "
            f"(budget {budget['budget_s']:.0f} s): "
            "the run takes longer, and so little data or KD may leave a weak student (DeepInversion on "
            "WRN-40-2 at 32 px: 85% of the teacher from one batch of 32 images; docs/fidelity.md); "
            + (
                "--budget off runs auto's path at its full settings"
                if auto_path
                else "--method auto picks a path by the teacher's cost"
            ),
            UserWarning,
            stacklevel=2,
        )
    synth = dataset = None
    if data is not None:  # the whole dataset (manifest, every shard, teacher) is checked when opened
        data = Path(data)
        dataset = DatasetSource(data, teacher.card, device_of(teacher.model), seed=seed,
                                allow_other_teacher=allow_other_teacher)  # fmt: skip
    else:
        assert method is not None
        synth_options = dict(options)
        if pool:  # the backend's settings of the pool loop, under the user's --set
            synth_options = {**method_class(method).pool_options, **synth_options}
        if online:  # the generator trains for as many steps as the KD stage runs rounds
            synth_options.setdefault("iterations", cfg.epochs * cfg.rounds * cfg.g_steps)
        synth = create_synthesizer(method, teacher.model, teacher.card, seed=seed, **synth_options)
    p = Plan(
        teacher=teacher, kd=cfg, data=data, method=method, synthesizer=synth, pool=pool,
        num_images=num_images or DEFAULT_NUM_IMAGES, seed=seed, allow_other_teacher=allow_other_teacher,
        method_options=options, dataset_source=dataset,
        info={
            **({"method_choice": dict(choice)} if choice is not None else {}),
            **({"compute_budget": budget} if budget is not None else {}),
        },
    )  # fmt: skip
    if p.student_objective is not None:  # KD settings its own student loss drops: refused before any work
        check_objective_settings(cfg)
    return p


def check_student(model: nn.Module, name: str, card: ModelCard) -> None:
    """Refuse a student architecture that cannot take the teacher's input (one forward pass, eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            check_forward(model, card, what=f"student {name!r}")
    except UserInputError as e:
        raise UserInputError(f"{e}; choose a student that takes this input (datafree models)") from None
    finally:
        model.train(was_training)
