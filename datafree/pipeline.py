"""End-to-end jobs built from the stages: distil a student into a directory, and ``compress``.

``compress`` = synthesize (offline backends) -> distil -> evaluate, plus the same student distilled
with the same budget from Gaussian noise, the baseline that shows the synthetic data is worth its
cost. Every output is written atomically; rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as dist
from .cards import LoadedModel, load_model, save_model
from .data.evalsets import check_eval_data
from .distill import CHECKPOINT, KDConfig, check_checkpoint, distill
from .errors import UserInputError
from .evaluate import measure
from .metrics import StagePeakMemory
from .online_train import STUDENT_NAME, train_online
from .outputs import prepare_out_dir
from .plan import AUTO, DEFAULT_NUM_IMAGES, Plan, auto_choice, budget_note, make_student, path_settings, plan
from .precision import options as precision_options
from .profile import profile_stages
from .progress import note
from .prune import check_ratio, create_criterion, prune_stage
from .quality import class_names, weak_class_warning
from .quant import QuantizeJob
from .quant import quantize as quantize_model
from .quant.int8 import int8_available
from .quant.qmodel import QuantConfig
from .rules import named_method_path
from .sources import DatasetSource, NoiseSource, PoolSource, SurrogateSource
from .utils import atomic_write_json, count_params, device_of, model_size_bytes, remove_stale, resolve_device

__all__ = ["distill_to_dir", "compress_plan", "compress"]


def distill_to_dir(
    teacher: LoadedModel,
    source: Plan | SurrogateSource,
    out: str | Path,
    *,
    student_arch: str | None = None,
    kd: KDConfig | None = None,
    seed: int = 0,
    desc: str = "distill",
    save: bool = True,
    eval_data: str | Path | None = None,
    **distill_kw: Any,
) -> dict[str, Any]:
    """Distil a student from ``source`` into ``out`` (checkpoint there; card ``model.json`` when ``save``).

    ``source`` is a :class:`~datafree.plan.Plan` (its KD settings and student objective are used;
    an offline backend writes ``out/data`` first; an online one trains its generator in ``out``,
    saved as ``generator.safetensors``) or any :class:`~datafree.sources.SurrogateSource` (with
    ``kd``, default ``KDConfig(seed=seed)``). Under torchrun every rank calls this; the student
    trains with DDP and only rank 0 writes.

    Returns:
        A report: student arch, test accuracy, params, size, seconds, KD history (and, for an online
        backend, the generator's path and the KD settings).
    """
    out = Path(out)
    method = source.method if isinstance(source, Plan) else None
    if isinstance(source, Plan) and source.online:
        return _distill_online(teacher, source, out, student_arch, seed, eval_data)
    if isinstance(source, Plan):
        kd = source.kd
        distill_kw.setdefault("student_objective", source.student_objective)
        source = source.open_source(out / "data")
    kd = kd or KDConfig(seed=seed)
    student, arch = make_student(student_arch, teacher, seed, method)
    t0 = time.perf_counter()
    result = distill(
        teacher.model,
        student,
        source,
        kd,
        input_shape=teacher.card.input_shape,
        checkpoint_dir=out,
        desc=desc,
        **distill_kw,
    )
    seconds = time.perf_counter() - t0
    metrics = measure(result.student, teacher.card, eval_data)
    acc = metrics["accuracy"]
    if save and dist.is_main():
        save_model(
            result.student,
            out,
            like=teacher.card,
            arch=arch,
            card_name=f"{arch}_from_{teacher.card.name or 'teacher'}",
            test_accuracy=None if acc is None else round(acc, 4),
            accuracy_data=metrics["data"],
            training={
                "kd": dataclasses.asdict(kd),
                "teacher": teacher.card.name,
                "teacher_sha256": teacher.card.sha256,
            },
        )
    summary = _student_summary(
        arch, result.student, metrics, seconds, result.history, result.resumed_from_epoch
    )
    if result.class_balance is not None:
        summary["class_balance"] = result.class_balance
    return summary


def _student_summary(
    arch: str,
    student: nn.Module,
    metrics: dict[str, Any],
    seconds: float,
    history: list[dict[str, float]],
    resumed: int,
) -> dict[str, Any]:
    return {
        "arch": arch,
        "accuracy": metrics["accuracy"],
        "top5": metrics["top5"],
        "eval_data": metrics["data"],
        "params": count_params(student),
        "size_bytes": model_size_bytes(student),
        "seconds": round(seconds, 2),
        "history": history,
        "resumed_from_epoch": resumed,
        "per_class": metrics["per_class"],
        "class_images": metrics["class_images"],
    }


def _distill_online(
    teacher: LoadedModel,
    p: Plan,
    out: Path,
    student_arch: str | None,
    seed: int,
    eval_data: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`~datafree.online_train.train_online` into ``out``, then the student's accuracy in its card.

    The accuracy is on ``eval_data``; default: the digits test split for a teacher trained on
    digits, else none claimed.
    """
    assert p.method is not None
    # p holds the budget's settings already (and warned once if it cannot fit them): no second budget pass
    opts = p.method_options
    r = train_online(teacher, p.method, student_arch, out, p.kd, seed=seed, budget_s=math.inf, **opts)
    metrics = measure(r.student, teacher.card, eval_data)
    acc = metrics["accuracy"]
    assert r.student_card is not None
    save_model(  # record the accuracy in the card, as for every other student
        r.student, out, like=teacher.card, arch=r.student_card.arch, name=STUDENT_NAME,
        card_name=r.student_card.name, test_accuracy=None if acc is None else round(acc, 4),
        **{**r.student_card.extra, "accuracy_data": metrics["data"]},
    )  # fmt: skip
    rep = _student_summary(
        r.student_card.arch, r.student, metrics, r.seconds, r.history, r.resumed_from_epoch
    )
    # the teacher on the trained generator's images: confidence, class shares (datafree.quality)
    extra = {"student_objective": r.student_objective} if r.student_objective else {}
    return {**rep, "generator": str(r.generator_path), "kd": dataclasses.asdict(r.kd_config),
            "teacher_quality": r.teacher_quality, **extra}  # fmt: skip


def compress_plan(
    lm: LoadedModel,
    method: str,
    *,
    student: str | None = None,
    run_student: bool = True,
    num_images: int | None = None,
    kd: KDConfig | dict[str, Any] | None = None,
    seed: int = 0,
    synth_options: dict[str, Any] | None = None,
    budget_s: float | None = None,
) -> tuple[Plan, dict[str, Any] | None]:
    """The plan :func:`compress` runs, and the path it chose (``auto``'s, or a named backend's own; or None).

    The student (``student``, else the teacher's default) is built first, so an unknown one fails before any
    long stage; ``auto`` picks its backend by the teacher's cost (:func:`datafree.plan.auto_choice`), a named
    backend may take its own loop (:func:`datafree.rules.named_method_path`: NAYER's pool on an expensive
    teacher) unless ``num_images`` asks for a written dataset; the path's defaults go under the user's
    (:func:`datafree.plan.path_settings`), and :func:`datafree.plan.plan` validates and budgets the whole.
    """
    with warnings.catch_warnings():  # the size warning comes once, when the student is built for real
        warnings.simplefilter("ignore")
        s_model, _ = make_student(student, lm, seed, method)
    choice = None
    auto = method == AUTO
    if auto:  # the rule of the teacher's cost; the pool needs a student stage to feed
        choice = auto_choice(lm.model, lm.card, num_images or DEFAULT_NUM_IMAGES, student=s_model,
                             budget_s=budget_s)  # fmt: skip
        method = choice["method"]
    elif run_student and num_images is None:  # a named backend's own loop on an expensive teacher (nayer's
        # pool), else None; --num-images asks for a written dataset of that many images
        choice = named_method_path(method, lm.model, lm.card, DEFAULT_NUM_IMAGES)
    # the path's own defaults under the user's, and nayer's pool steps (plan.path_settings)
    pool, synth_options, kd, grow_to = path_settings(choice, synth_options, kd, run_student)
    # and on a BN method without BN, a bad option or a bad KD setting, before --out is touched
    p = plan(lm, method=method, pool=pool, kd=kd, method_options=synth_options, num_images=num_images,
             seed=seed, student=s_model if run_student else None, max_iterations=grow_to,
             budget_s=budget_s, auto_path=auto)  # fmt: skip
    return p, choice


def compress(
    teacher: str | Path = "resnet8_digits",
    out: str | Path = "runs/compress",
    *,
    method: str = AUTO,
    student: str | None = None,
    num_images: int | None = None,
    kd: KDConfig | dict[str, Any] | None = None,
    baseline: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    synth_options: dict[str, Any] | None = None,
    prune: float | None = None,
    importance: str = "l2",
    quantize: str | None = None,
    eval_data: str | Path | None = None,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Teacher -> student on synthetic data only; writes ``out/{model.json, data/, report.json}``.

    Stages run in this order: student (``student``; also the default when no other stage is
    asked for), prune (``prune``: the current model loses that fraction of its channels and is
    recovered by KD from its unpruned self on the same synthetic data, in ``out/prune/``), and
    quantize (``quantize="W4A8"``: :func:`datafree.quant.quantize` of the current model, calibrated
    on the run's synthetic data, in ``out/quantize/``; W8A8 also exports a real int8 CPU model).
    ``report["profile"]`` gives accuracy, params, MACs, size and CPU latency (batch 1 and 64) of
    every stage's model.

    Args:
        teacher: shipped teacher name or card path.
        out: output directory (resumable).
        method: synthesis backend, or ``"auto"`` (the default): chosen from the teacher's cost by
            :func:`datafree.rules.default_method` (DeepInversion for a cheap teacher, Fast-Datafree's
            growing pool for an expensive one, DAFL without BatchNorm; ``report["method_choice"]``).
            A named ``nayer`` runs its own pool on an expensive teacher unless ``num_images`` is given
            (:func:`datafree.rules.named_method_path`, also in ``report["method_choice"]``).
            The pool's images are written to ``out/data`` after the KD stage.
        student: student architecture (default: a smaller registered one).
        num_images: synthetic images for offline backends (None: :data:`DEFAULT_NUM_IMAGES`, or fewer
            where the compute budget of :func:`datafree.plan.budget_settings` lowers it on a CPU, or more
            where it leaves room and the backend's images are cheap: ``fast``, up to 4,096).
        kd: KD settings: a :class:`KDConfig` as it is, or overrides of the method's
            (:func:`datafree.plan.kd_settings`).
        baseline: also distil the same student from Gaussian noise with the same budget.
        seed: seed of every stage.
        device: ``None`` = CUDA when available, else CPU.
        synth_options: backend config overrides.
        prune: fraction of channels to prune, in (0, 1), or None.
        importance: pruning criterion (``l1``, ``l2``, ``bn``, ``taylor``).
        quantize: ``WxAy`` weight and activation bit widths (2 to 8), or None.
        eval_data: labelled data every accuracy is measured on (an ImageFolder dir, ``.npz``,
            ``cifar10:ROOT``, ...; see :func:`datafree.evaluate.evaluate_model`). Default: the digits
            test split for a teacher trained on digits; otherwise no accuracy is claimed (``None``).
        budget_s: the CPU compute budget in estimated seconds of one core (``--budget``; None: the default,
            :data:`datafree.rules.RUN_BUDGET_CPU_S`; ``math.inf``: none). It sets the settings the user did
            not give (:func:`datafree.plan.budget_settings`) and ``auto``'s pool cap; no effect on a GPU.

    Returns:
        The report (also written to ``out/report.json``).
    """
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    out = Path(out)
    bits = _parse_bits(quantize) if quantize is not None else None
    if prune is not None:
        check_ratio(prune)
        create_criterion(importance)
    run_student = student is not None or (prune is None and bits is None)
    lm = load_model(teacher, dev)
    p, choice = compress_plan(lm, method, student=student, run_student=run_student, num_images=num_images,
                              kd=kd, seed=seed, synth_options=synth_options, budget_s=budget_s)  # fmt: skip
    check_eval_data(eval_data, lm.card)  # a bad --eval-data fails before --out is touched
    if (line := budget_note(p.info)) is not None:
        note(line)
    if not p.online and run_student:  # a checkpoint in --out this run cannot resume: before data/ is written
        check_checkpoint(out, p.kd, out / "data")
    dist.run_on_main(lambda: prepare_out_dir(out))
    t_metrics = measure(lm.model, lm.card, eval_data)
    stages: dict[str, float] = {}
    resources: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "teacher": {
            "card": str(lm.card.path),
            "name": lm.card.name,
            "arch": lm.card.arch,
            **_summary(t_metrics),
        },
        "eval_data": t_metrics["data"],
        "method": p.method,
        "seed": seed,
        "device": str(dev),
    }
    if choice is not None:
        report["method_choice"] = {**choice, "pool": p.pool}
    if "compute_budget" in p.info:  # the budget's estimate and what it scaled down (plan.budget_settings)
        report["compute_budget"] = p.info["compute_budget"]
    s_report = _student_stage(lm, p, out, student, run_student, report, stages, resources, eval_data)
    if s_report is not None:
        _student_report(report, s_report, t_metrics, out, class_names(lm.card))
    if baseline and s_report is not None:
        with StagePeakMemory(dev) as mem:
            b = _baseline_stage(lm, p, out, s_report["arch"], report, stages, eval_data)
        resources["baseline"] = {**mem.result, **_kd_rate(p.kd, b)}
    final = load_model(out / "model.json", dev) if s_report is not None else lm
    if prune is not None:
        # the model pruned was measured by its own stage (the student's, else the teacher's above)
        before = _measured(report["student"]) if s_report is not None else t_metrics
        with StagePeakMemory(dev) as mem:
            final = _prune_stage(final, prune, importance, report, out, p, eval_data, before)
        stages["prune"] = report["prune"]["seconds"]
        resources["prune"] = mem.result
    if bits is not None:
        with StagePeakMemory(dev) as mem:
            final = _quantize_stage(final, bits, report, out, seed, eval_data)
        stages["quantize"] = report["quantize"]["seconds"]
        resources["quantize"] = mem.result
    report["final_card"] = str(final.card.path)
    report["profile"] = _profile(lm, out, report, eval_data, t_metrics)
    if bits is not None:
        report["profile"]["quantized"] = _quantized_profile(
            report["quantize"], list(report["profile"].values())[-1]
        )
    report["stages_seconds"] = stages
    report["stages_resources"] = resources  # peak memory (RSS on CPU, max allocated on GPU), images/s
    report["precision"] = dataclasses.asdict(precision_options())
    report["kd"] = dataclasses.asdict(p.kd)
    if dist.is_main():
        # only once every stage has succeeded: a refused or failed run loses nothing of the earlier one
        _remove_unasked(out, student=run_student, baseline=baseline, online=p.online, prune=prune is not None,
                        quantize=bits is not None)  # fmt: skip
        atomic_write_json(out / "report.json", report)
    return report


def _student_stage(
    lm: LoadedModel, p: Plan, out: Path, student: str | None, run_student: bool, report: dict[str, Any],
    stages: dict[str, float], resources: dict[str, dict[str, Any]], eval_data: str | Path | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Synthesise (offline backends: ``out/data``, also for the later stages) and distil the student.

    ``stages`` gets each stage's seconds, ``resources`` its peak memory and images/s.
    """
    dev = device_of(lm.model)
    if p.online:
        if not run_student:
            return None
        t0 = time.perf_counter()
        with StagePeakMemory(dev) as mem:
            s_report = distill_to_dir(lm, p, out, student_arch=student, seed=p.seed, eval_data=eval_data)
        stages["distill"] = round(time.perf_counter() - t0, 2)
        resources["distill"] = {**mem.result, **_kd_rate(p.kd, s_report)}
        return s_report
    if p.pool:  # synthesis inside the KD stage (one batch per round), then the pool is the run's data
        with StagePeakMemory(dev) as mem:
            pool = p.open_source()
            s_report = distill_to_dir(lm, pool, out, student_arch=student, kd=p.kd, seed=p.seed,
                                      desc="distill (pool)", eval_data=eval_data)  # fmt: skip
        stages["distill"] = s_report["seconds"]
        resources["distill"] = {**mem.result, **_kd_rate(p.kd, s_report)}
        assert isinstance(pool, PoolSource)
        report["data"] = _write_pool(lm, pool, p, out / "data")
        return s_report
    t0 = time.perf_counter()
    with StagePeakMemory(dev) as mem:
        source = p.open_source(out / "data")
    stages["synthesize"] = round(time.perf_counter() - t0, 2)
    report["data"] = {"dir": p.info["data"], "num_images": p.info["num_images"]}
    manifest = source.dataset.manifest if isinstance(source, DatasetSource) else {}
    # how data-like the images are to the teacher (agreement, confidence) and steps per batch
    report["data"].update({k: manifest[k] for k in ("teacher_quality", "steps_per_batch") if k in manifest})
    secs = float(manifest.get("seconds") or 0.0)  # over every run that wrote shards (resumes too)
    rate = {"images_per_s": round(p.info["num_images"] / secs, 2)} if secs > 0 else {}
    resources["synthesize"] = {**mem.result, **rate}
    if not run_student:
        return None
    with StagePeakMemory(dev) as mem:
        s_report = distill_to_dir(lm, source, out, student_arch=student, kd=p.kd, seed=p.seed, desc="distill",
                                  eval_data=eval_data)  # fmt: skip
    stages["distill"] = s_report["seconds"]
    resources["distill"] = {**mem.result, **_kd_rate(p.kd, s_report)}
    return s_report


def _write_pool(lm: LoadedModel, pool: PoolSource, p: Plan, root: Path) -> dict[str, Any]:
    """Write a growing pool's images as the run's synthetic dataset (``out/data``); its report entry.

    The later stages (noise baseline of the same size, pruning recovery, quantization calibration)
    and ``--data`` read it like any dataset; the manifest says ``"pool": true``.
    """
    from .dataset import SyntheticDataset, save_image_grid
    from .quality import dataset_warnings, teacher_quality
    from .synthesis import dataset_manifest

    if not pool.images or not dist.is_main():
        return {"dir": str(root), "num_images": 0, "pool": True}
    images = pool.pooled()
    targets = pool.targets()
    remove_stale(root, "the pool of this run replaces it")
    synth = pool.synth
    shard = 256
    assert p.method is not None
    manifest = dataset_manifest(lm, p.method, synth.config, p.seed, len(images), shard)
    ds = SyntheticDataset.create(root, **manifest, pool=True)
    with torch.no_grad():
        for i in range(ds.manifest["num_shards"]):
            x = images[i * shard : (i + 1) * shard]
            logits = lm.model(x)
            labels = targets[i * shard : (i + 1) * shard] if targets is not None else logits.argmax(1).cpu()
            ds.write_shard(i, synth.normalizer.inverse(x).clamp_(0, 1), labels, logits)
    ds.refresh()
    q = ds.manifest["teacher_quality"] = teacher_quality(ds, labels_are_targets=targets is not None)
    dataset_warnings(q, f"the {p.method} pool's images", lm.card, synth.agreement_floor)
    ds.write_manifest()
    first = next(ds.iter_shards(), None)
    if first is not None:
        save_image_grid(first["images"][:64], ds.root / "samples.png", nrow=8)
    return {"dir": str(ds.root), "num_images": len(images), "pool": True,
            "teacher_quality": ds.manifest["teacher_quality"]}  # fmt: skip


def _kd_rate(kd: KDConfig, rep: dict[str, Any]) -> dict[str, float]:
    """Images per second through the KD stage of ``rep`` (the epochs this run trained)."""
    epochs = kd.epochs - int(rep.get("resumed_from_epoch", 0))
    images = epochs * kd.steps_run_per_epoch * kd.batch_size
    return {"images_per_s": round(images / rep["seconds"], 2)} if rep.get("seconds") and images > 0 else {}


def _baseline_stage(
    lm: LoadedModel, p: Plan, out: Path, arch: str, report: dict[str, Any], stages: dict[str, float],
    eval_data: str | Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The same student distilled with the same budget from Gaussian noise."""
    n_noise = report.get("data", {}).get("num_images", p.num_images)
    noise = NoiseSource(n_noise, lm.card, device_of(lm.model), seed=p.seed)
    b = distill_to_dir(
        lm,
        noise,
        out / "baseline",
        student_arch=arch,
        kd=p.kd,
        seed=p.seed,
        desc="noise baseline",
        save=False,
        eval_data=eval_data,
    )
    stages["baseline"] = b["seconds"]
    report["noise_baseline"] = {"accuracy": b["accuracy"], "num_images": n_noise, "seconds": b["seconds"]}
    return b


# What each compress stage writes into --out: a rerun without the stage removes it, so that
# report.json never sits beside a previous run's results.
_STUDENT_FILES = (
    "model.json",
    "model.safetensors",
    CHECKPOINT,
    "generator.safetensors",
    "generator.json",
    "online.json",
)


def _remove_unasked(
    out: Path, *, student: bool, baseline: bool, online: bool, prune: bool, quantize: bool
) -> None:
    """Remove what an earlier ``compress`` into ``out`` wrote for stages this run does not run."""
    unasked = {
        "baseline": not (student and baseline),
        "data": online,
        "prune": not prune,
        "quantize": not quantize,
    }
    for name, stale in unasked.items():
        if stale:
            remove_stale(out / name, f"this run has no {name} stage")
    if not student:
        for name in _STUDENT_FILES:
            remove_stale(out / name, "this run trains no student")


def _student_report(
    report: dict[str, Any], s_report: dict[str, Any], t_metrics: dict[str, Any], out: Path,
    names: list[str] | None = None,
) -> None:  # fmt: skip
    report["student"] = {k: v for k, v in s_report.items() if k != "history"}
    s_acc, t_acc = s_report["accuracy"], t_metrics["accuracy"]
    report["student"]["ratio_to_teacher"] = (
        None if s_acc is None or t_acc is None else round(s_acc / max(t_acc, 1e-12), 4)
    )
    # the classes it reads right under half as often as the teacher, with a warning (datafree.quality)
    report["student"]["weak_classes"] = weak_class_warning(s_report, t_metrics, names)
    report["student"]["card"] = str(out / "model.json")


def _prune_stage(
    current: LoadedModel, ratio: float, importance: str, report: dict[str, Any], out: Path, p: Plan,
    eval_data: str | Path | None = None, measured: dict[str, Any] | None = None,
) -> LoadedModel:  # fmt: skip
    """Prune ``current`` and recover it by KD from its unpruned self on the run's synthetic data.

    ``measured``: ``current``'s accuracy as :func:`measure` gave it on ``eval_data`` (not measured again).
    """
    if "data" in report:
        sp = plan(current, data=report["data"]["dir"], kd=p.kd, seed=p.seed, allow_other_teacher=True)
    else:
        sp = plan(current, method=p.method, kd=p.kd, method_options=p.method_options, seed=p.seed)
    source = sp.open_source()
    res = prune_stage(current, ratio, importance=importance, source=source, source_info=sp.info, kd=p.kd,
                      out_dir=out / "prune", latency=False, eval_data=eval_data,
                      measured={"unpruned": measured} if measured is not None else None)  # fmt: skip
    report["prune"] = {k: v for k, v in res.report.items() if k != "history"}
    return load_model(out / "prune" / "model.json", device_of(current.model))


def _parse_bits(spec: str) -> tuple[int, int]:
    """``"W4A8"`` -> ``(4, 8)``; a clear error otherwise."""
    m = re.fullmatch(r"[wW](\d+)[aA](\d+)", spec.strip())
    if m is None:
        raise UserInputError(
            f"--quantize must look like W8A8 or W4A8 (weight and activation bits), got {spec!r}"
        )
    bits = int(m.group(1)), int(m.group(2))
    QuantConfig(*bits).validate()
    return bits


def _quantize_stage(
    current: LoadedModel, bits: tuple[int, int], report: dict[str, Any], out: Path, seed: int,
    eval_data: str | Path | None = None,
) -> LoadedModel:  # fmt: skip
    """Quantize ``current`` calibrated on the run's synthetic data (ZeroQ data for online methods)."""
    calib = report["data"]["dir"] if "data" in report else "zeroq"
    t0 = time.perf_counter()
    # W8A8 also gets the real int8 model when torchao (the int8 extra) is installed
    job = QuantizeJob(calib, seed=seed, int8=bits == (8, 8) and int8_available(), eval_data=eval_data)
    q = quantize_model(
        current, QuantConfig(*bits), job, out_dir=out / "quantize", device=device_of(current.model)
    )
    report["quantize"] = {**q, "seconds": round(time.perf_counter() - t0, 2)}
    return load_model(out / "quantize" / "model.json", device_of(current.model))


def _quantized_profile(q: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """The quantized stage in the profile's terms: same params and MACs, fewer bytes.

    Latency only for the real int8 model (the low-bit simulation runs float kernels, timing it
    would mislead).
    """
    entry = {"accuracy": q["quantized"]["accuracy"], "params": before["params"], "macs": before["macs"],
             "size_bytes": q["quantized"]["size_bytes"]}  # fmt: skip
    if "int8" in q and "latency_cpu" in q:
        entry["accuracy_int8"] = q["int8"]["accuracy"]
        for b in (1, 64):
            lat = q["latency_cpu"][f"batch_{b}"]["int8"]
            entry[f"latency_ms_b{b}"], entry[f"latency_min_ms_b{b}"] = lat["median_ms"], lat["min_ms"]
    return entry


def _profile(
    teacher: LoadedModel, out: Path, report: dict[str, Any], eval_data: str | Path | None,
    t_metrics: dict[str, Any],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Accuracy, params, MACs, size and CPU latency (1 thread, interleaved) of each stage's model.

    The accuracies come from the stages that measured them (teacher, student, pruning recovery):
    the evaluation data is not read again.
    """
    models = {"teacher": teacher.model}
    measured = {"teacher": t_metrics}
    if "student" in report:
        models["student"] = load_model(out / "model.json", "cpu").model
        measured["student"] = _measured(report["student"])
    if "prune" in report:
        models["pruned"] = load_model(out / "prune" / "model.json", "cpu").model
        st = report["prune"]["stages"]
        measured["pruned"] = _measured(st.get("recovered", st["pruned"]))
    return profile_stages(models, teacher.card, eval_data, measured=measured)


def _measured(entry: dict[str, Any]) -> dict[str, Any]:
    """A stage report's accuracy in :func:`measure`'s terms (``accuracy``, ``top5``, ``data``)."""
    return {"accuracy": entry["accuracy"], "top5": entry["top5"], "data": entry["eval_data"]}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "top5", "params", "size_bytes", "per_class", "class_images")
    return {k: metrics[k] for k in keys}
