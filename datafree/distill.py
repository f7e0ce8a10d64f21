"""The one shared KD stage: a student learns the teacher on surrogate data.

Every consumer (student training, pruning recovery, quantization fine-tuning) and every source
(a synthetic dataset, an online generator, noise) goes through :func:`distill`::

    for epoch:                                  # checkpoint (atomic) after each epoch
        for round in steps_per_epoch / kd_steps:
            source.update(student)              # g_steps generator steps (online sources)
            for kd_steps: x = source.next_batch(); loss = KD(student(aug(x)), teacher(aug(x)))

Reference: Hinton et al., "Distilling the Knowledge in a Neural Network", 2015 (KL with
temperature, scaled by T^2).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist
from . import precision
from .augment import kd_transform
from .ema import WeightEMA
from .errors import NumericalError, UserInputError
from .losses import kd_kl_loss
from .metrics import log_event, log_step
from .progress import progress
from .resume import safe_torch_load
from .sources import SurrogateSource, TensorSource, identity_matches
from .utils import atomic_torch_save, device_of, field_defaults, settings_diff, settings_match

__all__ = ["KDConfig", "DistillResult", "distill", "run_identity", "check_checkpoint", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"


# The largest KD temperature whose square a float32 loss can hold (finfo(float32).max ** 0.5).
_MAX_TEMPERATURE = 1.8e19


@dataclass
class KDConfig:
    """Settings of the KD stage."""

    epochs: int = 30
    steps_per_epoch: int = 40
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    loss: str = "kl"  # kl | l1 (DFAD)
    hard_label_weight: float = 0.0  # CE to the teacher's argmax
    augment: bool = True
    flip: bool = False
    g_steps: int = 1  # generator steps per round (online sources)
    kd_steps: int = 1  # student steps per round
    grad_clip: float = 0.0
    # Exponential moving average of the student's weights (0: off): after every step
    # ``avg = d * avg + (1 - d) * w`` with ``d = min(ema_decay, (1 + t) / (10 + t))``; the averaged
    # weights are what the epoch's evaluation sees and what the run returns (Polyak averaging).
    ema_decay: float = 0.0
    # Mixup of each student batch with itself (0: off): :func:`datafree.augment.mix_batch` with
    # ``lam ~ Beta(mixup, mixup)``, after the crop; teacher and student see the same mixed images.
    mixup: float = 0.0
    # A random affine warp of each student image after the crop, part of ``augment`` (0: off): rotation up to
    # ``affine`` degrees and scale within 1 +- affine / 100 (:func:`datafree.augment.kd_augmentation`); the
    # teacher labels the warped image, so no label is assumed to survive it.
    affine: float = 0.0
    # A random contrast of each student image about its per-channel mean (0: off): factor within
    # [1 / (1 + contrast), 1 + contrast], log-uniform (:func:`datafree.augment.contrast_batch`), after
    # the warp.
    contrast: float = 0.0
    # Class-balanced batches from a written dataset (the teacher classes its shards store): each epoch
    # draws its images with replacement, weighted by (1 / images of the teacher's class) ** class_balance;
    # 0 (the default): the plain shuffle. Off by default: measured not to help (docs/fidelity.md,
    # "Session 19": it overfits the few images of a rare class).
    class_balance: float = 0.0
    seed: int = 0

    @property
    def rounds(self) -> int:
        """Rounds per epoch: ``steps_per_epoch // kd_steps``, at least one."""
        return max(1, self.steps_per_epoch // self.kd_steps)

    @property
    def steps_run_per_epoch(self) -> int:
        """Student steps an epoch really runs: whole rounds of ``kd_steps``.

        That is ``steps_per_epoch`` when it is a multiple of ``kd_steps``, one round when it is smaller.
        """
        return self.rounds * self.kd_steps

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the first bad value."""
        for name in ("epochs", "steps_per_epoch", "batch_size", "g_steps", "kd_steps"):
            if getattr(self, name) <= 0:
                raise UserInputError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "temperature"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise UserInputError(f"{name} must be a positive number, got {v}")
        # the KL term is scaled by T^2 in float32 (datafree.losses.kd_kl_loss): past this, every loss is nan
        if self.temperature > _MAX_TEMPERATURE:
            raise UserInputError(f"temperature must be at most {_MAX_TEMPERATURE:.3g} (T^2 fits float32), "
                                 f"got {self.temperature}")  # fmt: skip
        if not (math.isfinite(self.mixup) and self.mixup >= 0):
            raise UserInputError(f"mixup must be a number >= 0 (0: off), got {self.mixup}")
        if not (math.isfinite(self.contrast) and 0 <= self.contrast <= 10):
            raise UserInputError(f"contrast must be a number in [0, 10] (0: off), got {self.contrast}")
        if not (math.isfinite(self.affine) and 0 <= self.affine < 90):
            raise UserInputError(f"affine must be a number of degrees in [0, 90) (0: off), got {self.affine}")
        if not (math.isfinite(self.class_balance) and self.class_balance >= 0):
            raise UserInputError(f"class_balance must be a number >= 0 (0: off), got {self.class_balance}")
        if not (math.isfinite(self.ema_decay) and 0.0 <= self.ema_decay < 1.0):
            raise UserInputError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        for name in ("momentum", "weight_decay", "hard_label_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise UserInputError(f"{name} must be a number >= 0, got {v}")
        if self.optimizer not in ("sgd", "adam"):
            raise UserInputError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.loss not in ("kl", "l1"):
            raise UserInputError(f"loss must be kl or l1, got {self.loss!r}")


@dataclass
class DistillResult:
    """The trained student and a per-epoch history (loss, optional eval accuracy, seconds)."""

    student: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    # the class-balanced draw's power and the class counts it balanced (None: the plain shuffle)
    class_balance: dict[str, Any] | None = None


def _make_optimizer(student: nn.Module, cfg: KDConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        student.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )


def _student_loss(s: torch.Tensor, t: torch.Tensor, cfg: KDConfig) -> torch.Tensor:
    loss = kd_kl_loss(s, t, cfg.temperature) if cfg.loss == "kl" else F.l1_loss(s, t)
    if cfg.hard_label_weight > 0:
        loss = loss + cfg.hard_label_weight * F.cross_entropy(s, t.argmax(1))
    return loss


def check_objective_settings(cfg: KDConfig) -> None:
    """Refuse the KD loss settings a backend's own student loss does not read, rather than drop them.

    A ``student_objective`` (ZSKT's KL at the KD temperature plus attention transfer) replaces
    :func:`_student_loss`, so ``hard_label_weight`` and ``loss`` would have no effect: session 33's
    ``--method zskt --hard-label-weight 1`` trained the same student, to the weight, as the run without it.
    """
    unused = [f"hard_label_weight {cfg.hard_label_weight:g}"] if cfg.hard_label_weight > 0 else []
    if cfg.loss != "kl":
        unused.append(f"loss {cfg.loss!r}")
    if unused:
        raise UserInputError(
            f"KD {' and '.join(unused)} would have no effect: this method trains the student with its own "
            "loss (the KL at the KD temperature and attention transfer); leave --hard-label-weight and "
            "--kd loss at their defaults"
        )


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _restore_rng(state: dict[str, Any], seed: int, epoch: int) -> None:
    """This rank's RNG state from a checkpoint (reseeded when the world size changed)."""
    per_rank = state.get("rng_ranks")
    world, rank = dist.get_world_size(), dist.get_rank()
    try:
        if isinstance(per_rank, list) and len(per_rank) == world:
            _set_rng_state(per_rank[rank])
        elif per_rank is None and world == 1:
            _set_rng_state(state["rng"])
        else:  # resumed on another number of ranks: same data order, fresh augmentation streams
            torch.manual_seed(dist.rank_seed(seed + epoch))
    except (KeyError, TypeError, RuntimeError, ValueError, IndexError, AttributeError) as e:
        raise UserInputError(
            f"the checkpoint's RNG state is damaged ({type(e).__name__}: {' '.join(str(e).split())[:80]}); "
            "delete checkpoint.pt to start afresh"
        ) from None


def run_identity(teacher: nn.Module, student: nn.Module, source: Any) -> dict[str, Any]:
    """What defines a KD run besides its settings.

    That is: the teacher's weights, the student's architecture and initial weights, and the data
    source (kind, settings and content hash). A checkpoint is resumed only by a run with the same
    identity.
    """
    from .validate import tensor_digest

    ident = getattr(source, "identity", None)
    return {
        "teacher_sha256": tensor_digest(teacher.state_dict()),
        "student": f"{type(student).__module__}.{type(student).__qualname__}",
        "student_sha256": tensor_digest(student.state_dict()),
        "source": ident() if callable(ident) else {"kind": type(source).__name__},
    }


def _balance_classes(source: SurrogateSource, cfg: KDConfig) -> dict[str, Any] | None:
    """``cfg.class_balance`` applied to a source that knows its images' classes (a written dataset)."""
    if cfg.class_balance == 0 or not isinstance(source, TensorSource):
        return None
    counts = source.class_counts()
    if counts is None:
        return None
    source.balance_classes(cfg.class_balance)
    return {"power": cfg.class_balance, "class_counts": counts.tolist()}


def _local_batch(source: SurrogateSource, n: int) -> torch.Tensor:
    """This rank's part of the next global batch of ``n`` (all of it in one process)."""
    world = dist.get_world_size()
    if world == 1:
        return source.next_batch(n)
    return source.next_batch_for_rank(n, dist.get_rank(), world)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    return safe_torch_load(path, "checkpoint")


def check_checkpoint(out: str | Path, config: KDConfig, data_dir: str | Path | None = None) -> None:
    """Before anything is written into ``out``: refuse a ``checkpoint.pt`` there this run cannot resume.

    That is one not ours, with other KD settings, or made from another source than ``data_dir``
    (the dataset this run synthesises into ``out``).

    Args:
        out: the run's output directory.
        config: this run's KD settings.
        data_dir: the dataset directory this run writes (``out/data``), when it writes one.
    """
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        return
    _resumable_state(path, config)
    if data_dir is not None and not (Path(data_dir) / "manifest.json").is_file():
        raise UserInputError(
            f"{path} belongs to a run that did not synthesise {data_dir}; use the same command to resume, "
            "or another --out to start afresh"
        )


def _resumable_state(path: Path, config: KDConfig) -> dict[str, Any]:
    """The KD checkpoint at ``path``, refused unless it is one written with ``config``'s settings."""
    state = _load_checkpoint(path)
    if not isinstance(state, dict) or not {"epoch", "student", "optimizer", "history"} <= set(state):
        raise UserInputError(f"{path} is not a datafree KD checkpoint; delete it or choose another --out")
    current, defaults = dataclasses.asdict(config), field_defaults(KDConfig)
    if not settings_match(state.get("config"), current, defaults):
        diff = settings_diff(state.get("config"), current, defaults)
        raise UserInputError(
            f"{path} was written with other settings"
            + (f" (checkpoint -> this run: {diff})" if diff else "")
            + "; use the same command (or give the checkpoint's settings) to resume, or another --out to "
            "start afresh"
        )
    return state


class _Run(NamedTuple):
    """What a KD checkpoint holds: the run's settings and identity, and the objects it restores."""

    cfg: KDConfig
    identity: dict[str, Any] | None
    student: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    source: SurrogateSource
    result: DistillResult
    ema: WeightEMA


def _same_run(old: Any, identity: dict[str, Any], source: SurrogateSource, key: str | None = None) -> bool:
    """Whether a checkpoint's run identity ``old`` is ``identity`` (in ``key`` only, when given)."""
    if not isinstance(old, dict):
        return False
    return all(
        identity_matches(old.get(k), identity[k], source) if k == "source" else old.get(k) == identity[k]
        for k in ([key] if key else identity)
    )


def _resume_from_checkpoint(ckpt_path: Path, run: _Run) -> int:
    """Load the checkpoint at ``ckpt_path`` into the run after refusing one it cannot resume.

    Returns:
        The epoch to start from; ``run.result`` gets the saved history.
    """
    cfg, identity, student, opt, sched, source, result, ema = run
    state = _resumable_state(ckpt_path, cfg)
    old_identity = state.get("run")
    if not _same_run(old_identity, identity, source):
        what = {
            "teacher_sha256": "teacher",
            "student": "student",
            "student_sha256": "student",
            "source": "data source",
        }
        diff = sorted({what[k] for k in what if not _same_run(old_identity, identity, source, k)})
        raise UserInputError(
            f"{ckpt_path} belongs to another run (differs in: {', '.join(diff)}); use the same command "
            "(same teacher, student and data) to resume, or another --out to start afresh"
        )
    if (
        not isinstance(state["epoch"], int) or isinstance(state["epoch"], bool)
        or not 0 <= state["epoch"] <= cfg.epochs or not isinstance(state["history"], list)
    ):  # fmt: skip
        raise UserInputError(f"{ckpt_path}: damaged checkpoint (epoch or history); delete it to start afresh")
    try:
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        source.load_state_dict(state["source"])
        if ema.enabled:
            ema.load_state_dict(state["ema"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserInputError(
            f"{ckpt_path} does not fit this run (another student or source: "
            f"{' '.join(str(e).split())[:120]}); "
            "use the same command to resume, or another --out to start afresh"
        ) from None
    start_epoch = int(state["epoch"])
    _restore_rng(state, cfg.seed, start_epoch)
    result.history = list(state["history"])
    result.resumed_from_epoch = start_epoch
    return start_epoch


def _save_checkpoint(ckpt_path: Path, epoch: int, run: _Run, world: int) -> None:
    """Write the checkpoint after ``epoch`` (0-based) from rank 0, with every rank's RNG state."""
    cfg, identity, student, opt, sched, source, result, ema = run
    rng_ranks = dist.all_gather_objects(_rng_state()) if world > 1 else None
    if dist.is_main():
        state = {
            "epoch": epoch + 1,
            "config": dataclasses.asdict(cfg),
            "student": student.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "source": source.state_dict(),
            "rng": _rng_state(),
            "history": result.history,
            "run": identity,
        }
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        if ema.enabled:
            state["ema"] = ema.state_dict()
        atomic_torch_save(state, ckpt_path)


def _kd_loss(
    forward: nn.Module,
    t_forward: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    student_objective: Callable[[nn.Module, nn.Module, torch.Tensor], torch.Tensor] | None,
    cfg: KDConfig,
    device: torch.device,
) -> torch.Tensor:
    """The student's loss on ``x``: ``student_objective`` when given, else the KD loss, in fp32."""
    with precision.autocast(device, "kd"):
        if student_objective is not None:
            loss = precision.fp32(student_objective(forward, teacher, x))
        else:
            with torch.no_grad():
                t_logits = t_forward(x)
            s_logits = forward(x)
    if student_objective is None:  # the loss in fp32 under any precision
        loss = _student_loss(precision.fp32(s_logits), precision.fp32(t_logits), cfg)
    return loss


def distill(
    teacher: nn.Module,
    student: nn.Module,
    source: SurrogateSource,
    config: KDConfig | None = None,
    *,
    input_shape: tuple[int, int, int] | list[int] | None = None,
    checkpoint_dir: str | Path | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    student_objective: Callable[[nn.Module, nn.Module, torch.Tensor], torch.Tensor] | None = None,
    desc: str = "distill",
) -> DistillResult:
    """Train ``student`` to match ``teacher`` on batches from ``source``.

    Args:
        teacher: frozen teacher in eval mode; its device is used.
        student: the network to train (moved to the teacher's device).
        source: surrogate data (see :mod:`datafree.sources`).
        config: :class:`KDConfig`.
        input_shape: ``(C, H, W)`` for augmentation; taken from the first batch when None.
        checkpoint_dir: when given, an atomic checkpoint is written there after every epoch and a
            run started again with the same directory resumes from it (any number of ranks).
        eval_fn: optional ``student -> accuracy`` called after every epoch (for history only).
        student_objective: replaces the KD loss: ``(student, teacher, x) -> loss`` (e.g. ZSKT's
            attention transfer); the backend provides it.
        desc: progress-bar label.

    Returns:
        :class:`DistillResult` with the trained student (eval mode; its weight average when
        ``config.ema_decay`` > 0).

    Raises:
        NumericalError: the loss became NaN or inf; the checkpoint of the last good epoch is kept.
        UserInputError: a KD setting that ``student_objective`` would not read
            (:func:`check_objective_settings`; :func:`datafree.plan.plan` checks it first).

    Under ``torch.distributed`` (see :mod:`datafree.distributed`) the student is wrapped in
    DistributedDataParallel, each rank trains on a disjoint slice of every global batch of
    ``config.batch_size`` and only rank 0 writes the checkpoint.
    """
    cfg = config or KDConfig()
    cfg.validate()
    if student_objective is not None:
        check_objective_settings(cfg)
    device = device_of(teacher)
    student.to(device)
    teacher.eval()
    world = dist.get_world_size()
    if cfg.batch_size < world:
        raise UserInputError(
            f"batch_size {cfg.batch_size} is smaller than the {world} ranks; each rank needs a sample"
        )
    opt = _make_optimizer(student, cfg)
    total_steps = cfg.epochs * cfg.steps_run_per_epoch  # the schedule must not run past its end
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    aug: nn.Module | None = None
    result = DistillResult(student)
    result.class_balance = _balance_classes(source, cfg)  # before a resume restores the source's order
    start_epoch = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    torch.manual_seed(dist.rank_seed(cfg.seed))
    identity = run_identity(teacher, student, source) if ckpt_path is not None else None
    if ckpt_path is not None and dist.is_main() and ckpt_path.parent.is_dir():
        for tmp in ckpt_path.parent.glob(f".{CHECKPOINT}.*.tmp"):  # torn by a kill mid-write
            tmp.unlink(missing_ok=True)
    ema = WeightEMA(student, cfg.ema_decay)  # ema_decay 0: off, every call a no-op
    run = _Run(cfg, identity, student, opt, sched, source, result, ema)
    if ckpt_path is not None and ckpt_path.is_file():
        start_epoch = _resume_from_checkpoint(ckpt_path, run)
    model = dist.wrap_ddp(precision.prepare_module(student))  # gradients averaged over ranks
    precision.prepare_module(teacher)
    forward, t_forward = precision.maybe_compile(model), precision.maybe_compile(teacher)
    scaler = precision.grad_scaler(device, "kd")  # loss scaling in fp16; a pass-through otherwise
    rounds = cfg.rounds
    bar = progress(total=total_steps, initial=start_epoch * cfg.steps_run_per_epoch, desc=desc)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        student.train()
        loss_sum = torch.zeros((), device=device)
        step = epoch * cfg.steps_run_per_epoch
        for _ in range(rounds):
            source.update(student)
            for _ in range(cfg.kd_steps):
                x = _local_batch(source, cfg.batch_size)
                if aug is None:  # crop / warp / flip / mixup as configured (an identity when none is on)
                    shape = input_shape or list(x.shape[1:])
                    aug = kd_transform(shape, cfg.augment, cfg.flip, cfg.mixup, cfg.affine, cfg.contrast)
                    aug = aug.to(device)
                x = precision.prepare_input(aug(x))
                loss = _kd_loss(forward, t_forward, teacher, x, student_objective, cfg, device)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                lr = sched.get_last_lr()[0]
                scaler.step(opt)
                scaler.update()
                sched.step()
                ema.update(student)
                loss_sum += loss.detach()
                step += 1
                # numbers only on the logged steps (every N): no per-step host sync on GPU
                record = log_step(desc, step, {"loss": loss.detach()}, total=total_steps, lr=lr,
                                  images=x.shape[0] * world, extra={"epoch": epoch + 1})  # fmt: skip
                if record is not None:
                    bar.set_postfix(loss=record["loss"])
                bar.update(1)
        # every rank sees the same mean, so all of them stop together on a blow-up
        mean_loss = dist.all_reduce_mean(loss_sum).item() / (rounds * cfg.kd_steps)
        if not math.isfinite(mean_loss):
            bar.close()
            kept = ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None
            where = f"; the last good checkpoint (epoch {epoch}) is kept at {kept}" if kept else ""
            raise NumericalError(
                f"the KD loss became {mean_loss} in epoch {epoch + 1}: try a lower --lr{where}"
            )
        record = {"epoch": epoch + 1, "loss": mean_loss, "seconds": time.perf_counter() - t0}
        if eval_fn is not None:
            with ema.applied(student):
                record["accuracy"] = eval_fn(student)
        result.history.append(record)
        log_event(desc, "epoch", **record)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, epoch, run, world)
    bar.close()
    ema.copy_to(student)
    student.eval()
    return result
