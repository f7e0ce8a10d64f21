"""Train an online backend (DAFL, ZSKT, DFAD) end to end, resumably, and reuse its generator.

:func:`train_online` runs the shared KD stage (:func:`datafree.distill.distill`) with the
backend as an online surrogate source. Its output directory holds::

    online.json                 method, backend config, KD config, student arch (checked on resume)
    checkpoint.pt               after every epoch: student, generator, both optimisers and
                                schedulers, RNG states, step counts (written atomically)
    model.safetensors/.json     the trained student and its card
    generator.safetensors/.json the trained generator and what rebuilds it (method, config)

Started again with the same directory and settings, a killed run resumes from its last
checkpoint and ends exactly where an uninterrupted run ends. :func:`synthesize_online` samples a
trained (or freshly trained) generator into a synthetic dataset in the same format as the
offline backends write.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generators import Synthesizer, create_synthesizer, method_class

from .cards import LoadedModel, ModelCard, save_model
from .distill import CHECKPOINT, KDConfig, distill
from .errors import UserInputError
from .outputs import prepare_out_dir
from .plan import make_student, plan
from .progress import note
from .synthesis import synthesize_dataset
from .utils import atomic_write, atomic_write_json, ensure_dir, field_defaults, settings_entry, settings_match

__all__ = [
    "OnlineResult",
    "train_online",
    "load_online_synthesizer",
    "synthesize_online",
    "ONLINE_MANIFEST",
    "GENERATOR_NAME",
]

ONLINE_MANIFEST = "online.json"
GENERATOR_NAME = "generator"
STUDENT_NAME = "model"  # the student card is OUT/model.json, as for every other distil run


@dataclass
class OnlineResult:
    """What :func:`train_online` produced."""

    student: nn.Module
    synthesizer: Synthesizer
    kd_config: KDConfig
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    student_card: ModelCard | None = None
    generator_path: Path | None = None
    seconds: float = 0.0
    #: the teacher's confidence and classes on 1,024 of the trained generator's images
    #: (:func:`datafree.quality.generator_quality`; ``rare_classes``: the classes it almost never made)
    teacher_quality: dict[str, Any] = field(default_factory=dict)
    #: what the backend's own student loss did for this teacher/student pair (ZSKT: the attention
    #: transfer's weight, matched blocks and rule, ``generators.zskt.AttentionKD.describe``); else empty
    student_objective: dict[str, Any] = field(default_factory=dict)


def _online_class(method: str) -> type[Synthesizer]:
    cls = method_class(method)
    if not cls.online:
        raise UserInputError(f"method {method!r} is not an online (generator) method; use dafl, zskt or dfad")
    return cls


def _check_manifest(out: Path, manifest: dict[str, Any], defaults: dict[str, dict[str, Any]]) -> None:
    """Refuse a run manifest in ``out`` of another run, else write this one.

    ``defaults``: per settings entry of ``manifest`` (``config``, ``kd_config``), the value each setting had
    before it existed, for a manifest that lacks it (:func:`datafree.utils.settings_match`).
    """
    path = out / ONLINE_MANIFEST
    if path.is_file():
        from .validate import read_json

        try:
            old = read_json(path, "run manifest")
        except UserInputError as e:
            raise UserInputError(f"{path}: unreadable ({e}); delete it to start over") from None
        if not isinstance(old, dict):
            raise UserInputError(f"{path}: not a run manifest (a JSON object); delete it to start over")
        same = {k: settings_match(old.get(k), v, defaults[k]) if k in defaults else old.get(k) == v
                for k, v in manifest.items()}  # fmt: skip
        diff = [k for k, ok in same.items() if not ok]
        if diff:
            what = [
                settings_entry(k, old.get(k), manifest[k], defaults[k]) if k in defaults else k for k in diff
            ]
            raise UserInputError(
                f"{out} holds a run with other settings (differs in: {'; '.join(what)}); "
                "use the same command (or give the run's settings) to resume, or another --out to start "
                "afresh"
            )
    else:
        if (out / CHECKPOINT).is_file():
            raise UserInputError(
                f"{out} holds the checkpoint of another run (no {ONLINE_MANIFEST}); use the same command to "
                "resume, "
                "or another --out to start afresh"
            )
        ensure_dir(out)
        atomic_write_json(path, manifest)


def _save_generator(synth: Synthesizer, out: Path, teacher_card: ModelCard) -> Path:
    from safetensors.torch import save as st_save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in synth.generator.state_dict().items()}
    path = out / f"{GENERATOR_NAME}.safetensors"
    with atomic_write(path) as f:
        f.write(st_save(state))
    atomic_write_json(
        out / f"{GENERATOR_NAME}.json",
        {
            "method": synth.name,
            "config": synth.config.plain(),
            "teacher": teacher_card.name or str(teacher_card.path),
            "teacher_sha256": teacher_card.sha256,
            "input_shape": list(teacher_card.input_shape),
            "generator_steps": synth.steps,
        },
    )
    return path


def train_online(
    teacher: LoadedModel,
    method: str,
    student: nn.Module | str | None,
    out_dir: str | Path,
    kd_config: KDConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    eval_fn: Callable[[nn.Module], float] | None = None,
    desc: str = "",
    budget_s: float | None = None,
    **overrides: Any,
) -> OnlineResult:
    """Train a generator backend and a student together in the shared KD stage; resumable.

    Args:
        teacher: the loaded teacher (frozen model and card).
        method: ``dafl``, ``zskt`` or ``dfad`` (any registered online backend).
        student: an ``nn.Module``, an architecture name, or None for the teacher's default student.
        out_dir: run directory (checkpoint, student, generator). Rerunning with the same directory
            and settings resumes from the last completed epoch.
        kd_config: overrides of the method's KD settings (dict) or a complete :class:`KDConfig`.
        seed: seeds the generator, the latents, the student's initialisation and the KD stage.
        eval_fn: optional ``student -> accuracy`` after every epoch (recorded in the history).
        desc: progress-bar label.
        budget_s: the CPU compute budget (:func:`datafree.plan.plan`'s; None: the default; ``math.inf``: off).
        **overrides: fields of the backend's config (``generator_lr``, ``oh_weight``, ...).

    Returns:
        :class:`OnlineResult`; the student is saved as ``model.safetensors`` (+ ``model.json``) and the
        generator as ``generator.safetensors`` (+ ``generator.json``) in ``out_dir``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    _online_class(method)
    model, arch = make_student(student, teacher, seed, method)
    p = plan(teacher, method=method, kd=kd_config, method_options=overrides, seed=seed, student=model,
             budget_s=budget_s)  # fmt: skip
    kd, synth = p.kd, p.synthesizer
    assert synth is not None
    fresh = not (out / ONLINE_MANIFEST).is_file()
    _check_manifest(
        out,
        {
            "method": method,
            "config": synth.config.plain(),
            "kd_config": dataclasses.asdict(kd),
            "student_arch": arch,
            "teacher_sha256": teacher.card.sha256,
        },
        {"config": synth.config.resume_defaults(), "kd_config": field_defaults(KDConfig)},
    )
    objective = p.student_objective
    # what the backend's own student loss does for this pair (ZSKT's attention transfer), said once
    describe = getattr(objective, "describe", None)
    objective_info: dict[str, Any] = describe(model, teacher.model) if describe is not None else {}
    if objective_info.get("rule"):
        note(f"{method}: {objective_info['rule']}")
    try:
        result = distill(
            teacher.model,
            model,
            p.open_source(),
            kd,
            input_shape=tuple(teacher.card.input_shape),  # type: ignore[arg-type]
            checkpoint_dir=out,
            eval_fn=eval_fn,
            student_objective=objective,
            desc=desc or f"{method} distill",
        )
    except UserInputError:
        if fresh and not (out / CHECKPOINT).exists():  # refused before the first epoch: leave no trace
            (out / ONLINE_MANIFEST).unlink(missing_ok=True)
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    card = save_model(
        model,
        out,
        like=teacher.card,
        arch=arch,
        name=STUDENT_NAME,
        card_name=f"{arch}_from_{teacher.card.name or 'teacher'}",
        training={
            "method": method,
            "kd": dataclasses.asdict(kd),
            "teacher": teacher.card.name,
            "teacher_sha256": teacher.card.sha256,
            "generator": f"{GENERATOR_NAME}.safetensors",
        },
    )
    gen_path = _save_generator(synth, out, teacher.card)
    quality = _generated_quality(synth, teacher, method)
    return OnlineResult(
        student=model,
        synthesizer=synth,
        kd_config=kd,
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        student_card=card,
        generator_path=gen_path,
        seconds=time.perf_counter() - t0,
        teacher_quality=quality,
        student_objective=objective_info,
    )


def _generated_quality(synth: Synthesizer, teacher: LoadedModel, method: str) -> dict[str, Any]:
    """The teacher on 1,024 images of the trained generator, and a warning when it misses classes."""
    from . import distributed as dist
    from .hooks import batchnorm_layers
    from .quality import GENERATOR_HINT, class_names, coverage_warning, generator_quality

    if not dist.is_main():
        return {}
    quality = generator_quality(synth, teacher.model)
    hint = GENERATOR_HINT if batchnorm_layers(teacher.model) else ""
    coverage_warning(quality, f"the {method} generator's images", class_names(teacher.card), hint=hint)
    return quality


def load_online_synthesizer(teacher: LoadedModel, path: str | Path, method: str | None = None) -> Synthesizer:
    """Rebuild a trained generator backend from ``generator.safetensors`` (or its directory).

    Args:
        teacher: the teacher it is sampled with (same input shape as it was trained for).
        path: the ``.safetensors`` file, or a run directory holding ``generator.safetensors``.
        method: when given, must match the method the generator was trained with.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / f"{GENERATOR_NAME}.safetensors"
    meta_path = p.with_suffix(".json")
    if not p.is_file() or not meta_path.is_file():
        raise UserInputError(f"generator not found: {p} (with {meta_path.name} beside it)")
    from .validate import read_json

    meta = read_json(meta_path, "generator description")
    try:
        weights = load_file(str(p))
    except (OSError, SafetensorError, ValueError) as e:
        raise UserInputError(f"{p}: unreadable generator ({e})") from None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("method"), str)
        or not isinstance(meta.get("config"), dict)
    ):
        raise UserInputError(f"{meta_path}: not a generator description (needs 'method' and 'config')")
    if not isinstance(meta.get("input_shape", []), list):
        raise UserInputError(f"{meta_path}: input_shape must be a list, got {meta['input_shape']!r}")
    if method is not None and meta.get("method") != method:
        raise UserInputError(f"{p} is a {meta.get('method')!r} generator, not {method!r}")
    if list(meta.get("input_shape", [])) != list(teacher.card.input_shape):
        raise UserInputError(
            f"{p} makes images of shape {meta.get('input_shape')}, but the teacher takes "
            f"{teacher.card.input_shape}"
        )
    try:
        before = method_class(meta["method"]).Config.previous_defaults  # a setting newer than the file
    except (KeyError, UserInputError):
        before = {}
    config = {**{k: v for k, v in before.items() if k not in meta["config"]}, **meta["config"]}
    synth = create_synthesizer(meta["method"], teacher.model, teacher.card, **config)
    if not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise UserInputError(f"{p}: the generator's weights hold NaN or inf")
    try:
        synth.load_generator({k: v.to(synth.device) for k, v in weights.items()})
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise UserInputError(
            f"{p}: weights do not fit a {meta['method']} generator with its config "
            f"({' '.join(str(e).split())[:120]})"
        ) from None
    return synth


def synthesize_online(
    teacher: LoadedModel,
    method: str,
    out: str | Path,
    num_images: int,
    *,
    generator_path: str | Path | None = None,
    student: nn.Module | str | None = None,
    train_dir: str | Path | None = None,
    kd_config: KDConfig | dict[str, Any] | None = None,
    seed: int = 0,
    shard_size: int | None = None,
    **overrides: Any,
) -> Any:
    """Sample a synthetic dataset from an online backend's generator.

    Reuses the generator at ``generator_path`` when given; otherwise trains one with
    :func:`train_online` (against ``student``, default: the teacher's default student) in
    ``train_dir`` (default: ``<out>_generator`` beside ``out``; resumable), then writes
    ``num_images`` images with :func:`datafree.synthesis.synthesize_dataset` (``shard_size`` images
    per shard; default: the generator's batch size). ``overrides`` set backend config fields.

    Returns:
        The :class:`datafree.dataset.SyntheticDataset`.
    """
    if num_images <= 0:
        raise UserInputError(f"--num-images must be > 0, got {num_images}")
    from .dataset import check_dataset_target

    check_dataset_target(out, method)  # before a generator is trained into OUT_generator/
    if generator_path is not None:
        if overrides:
            raise UserInputError(
                f"--set {next(iter(overrides))}=... configures training a generator; with --generator the "
                "generator's own settings are used"
            )
        synth = load_online_synthesizer(teacher, generator_path, method)
    else:
        out_path = Path(out)
        run_dir = (
            Path(train_dir) if train_dir is not None else out_path.with_name(out_path.name + "_generator")
        )
        if run_dir.exists():
            prepare_out_dir(run_dir)  # a directory holding something else is refused
        synth = train_online(teacher, method, student, run_dir, kd_config, seed=seed, **overrides).synthesizer
    if shard_size is not None:
        if shard_size <= 0:
            raise UserInputError(f"--batch-size must be > 0, got {shard_size}")
        synth.config = dataclasses.replace(synth.config, batch_size=shard_size)
    return synthesize_dataset(teacher, method, out, num_images, seed=seed, synthesizer=synth)
