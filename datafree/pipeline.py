"""End-to-end jobs built from the stages: distil a student into a directory, and ``compress``.

``compress`` = synthesize (offline backends) -> distil -> evaluate, plus the same student distilled
with the same budget from Gaussian noise, the baseline that shows the synthetic data is worth its
cost. Every output is written atomically; rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as dist
from .cards import LoadedModel, load_model, save_model
from .distill import CHECKPOINT, KDConfig, distill
from .errors import UserInputError
from .evaluate import evaluate_model
from .models import create_model, default_student_for
from .sources import DatasetSource, NoiseSource, SurrogateSource
from .utils import atomic_write_json, count_params, device_of, model_size_bytes, resolve_device

__all__ = ["prepare_out_dir", "make_student", "distill_to_dir", "compress", "DEFAULT_NUM_IMAGES"]

DEFAULT_NUM_IMAGES = 1024
# Files datafree writes into an --out directory; a directory holding anything else is refused.
_OWN = {"model.json", "model.safetensors", "report.json", CHECKPOINT, "data", "baseline", "kd", "generator.safetensors",
        "prune", "quantize", "int8", "generator.json", "online.json"}  # fmt: skip


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` or accept it when empty or already ours (resume); refuse anything else."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserInputError(f"--out {p} exists and is not a directory")
    if p.is_dir():
        foreign = [c.name for c in p.iterdir() if c.name not in _OWN and not c.name.startswith(".")]
        if foreign:
            raise UserInputError(
                f"--out {p} already holds other files ({', '.join(sorted(foreign)[:3])}); choose an empty or new directory"
            )
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".datafree-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserInputError(f"cannot write to --out {p}: {e.strerror or e}") from None
    return p


def make_student(arch: str | None, teacher: LoadedModel, seed: int = 0) -> tuple[nn.Module, str]:
    """A freshly initialised student (``arch`` or the default for the teacher) on the teacher's device."""
    name = arch or default_student_for(teacher.card.arch)
    torch.manual_seed(seed)
    model = create_model(name, teacher.card.num_classes, teacher.card.in_channels)
    check_student(model, name, teacher)
    return model, name


def check_student(model: nn.Module, name: str, teacher: LoadedModel) -> None:
    """Refuse a student architecture that cannot take the teacher's input (one forward pass, eval mode)."""
    from .cards import check_forward

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            check_forward(model, teacher.card, "cpu", what=f"student {name!r}")
    except UserInputError as e:
        raise UserInputError(f"{e}; choose a student that takes this input (datafree models)") from None
    finally:
        model.train(was_training)


def distill_to_dir(
    teacher: LoadedModel,
    source: SurrogateSource,
    out: str | Path,
    *,
    student_arch: str | None = None,
    kd: KDConfig | None = None,
    seed: int = 0,
    desc: str = "distill",
    save: bool = True,
    **distill_kw: Any,
) -> dict[str, Any]:
    """Distil a student from ``source`` into ``out`` (checkpoint there; card ``model.json`` when ``save``).

    Under torchrun every rank calls this; the student trains with DDP and only rank 0 writes.

    Returns:
        A report: student arch, test accuracy, params, size, seconds, KD history.
    """
    kd = kd or KDConfig(seed=seed)
    out = Path(out)
    student, arch = make_student(student_arch, teacher, seed)
    t0 = time.perf_counter()
    result = distill(
        teacher.model, student, source, kd, input_shape=teacher.card.input_shape, checkpoint_dir=out, desc=desc, **distill_kw
    )
    seconds = time.perf_counter() - t0
    metrics = evaluate_model(result.student, teacher.card)
    if save and dist.is_main():
        save_model(
            result.student,
            out,
            like=teacher.card,
            arch=arch,
            card_name=f"{arch}_from_{teacher.card.name or 'teacher'}",
            test_accuracy=round(metrics["accuracy"], 4),
            training={"kd": dataclasses.asdict(kd), "teacher": teacher.card.name, "teacher_sha256": teacher.card.sha256},
        )
    return {
        "arch": arch,
        "accuracy": metrics["accuracy"],
        "params": count_params(result.student),
        "size_bytes": model_size_bytes(result.student),
        "seconds": round(seconds, 2),
        "history": result.history,
        "resumed_from_epoch": result.resumed_from_epoch,
    }


def compress(
    teacher: str | Path = "resnet8_digits",
    out: str | Path = "runs/compress",
    *,
    method: str = "deepinversion",
    student: str | None = None,
    num_images: int = DEFAULT_NUM_IMAGES,
    kd: KDConfig | None = None,
    baseline: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    synth_options: dict[str, Any] | None = None,
    prune: float | None = None,
    importance: str = "l2",
    quantize: str | None = None,
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
        method: synthesis backend.
        student: student architecture (default: a smaller registered one).
        num_images: synthetic images for offline backends.
        kd: KD settings (defaults of :class:`KDConfig`).
        baseline: also distil the same student from Gaussian noise with the same budget.
        seed: seed of every stage.
        device: ``None`` = CUDA when available, else CPU.
        synth_options: backend config overrides.
        prune: fraction of channels to prune, in (0, 1), or None.
        importance: pruning criterion (``l1``, ``l2``, ``bn``, ``taylor``).
        quantize: ``WxAy`` weight and activation bit widths (2 to 8), or None.

    Returns:
        The report (also written to ``out/report.json``).
    """
    from generators import method_class

    from .prune import check_ratio, create_criterion
    from .synthesis import synthesize_dataset

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    out = Path(out)
    cls = method_class(method)
    if kd is None and cls.online:
        from .online import kd_config_for

        kd = kd_config_for(method, {"seed": seed})  # the method's own KD settings
    kd = kd or KDConfig(seed=seed)
    bits = _parse_bits(quantize) if quantize is not None else None
    if prune is not None:
        check_ratio(prune)
        create_criterion(importance)
    run_student = student is not None or (prune is None and bits is None)
    lm = load_model(teacher, dev)
    make_student(student, lm, seed)  # fail fast on an unknown student, before any long stage
    if not cls.online:  # and on a BN method without BN or a bad option, before --out is touched
        from generators import create_synthesizer

        create_synthesizer(method, lm.model, lm.card, **(synth_options or {}))
    if not cls.online and run_student:  # a checkpoint in --out this run cannot resume: before data/ is written
        from .distill import check_checkpoint

        check_checkpoint(out, kd, out / "data")
    dist.run_on_main(lambda: prepare_out_dir(out))
    t_metrics = evaluate_model(lm.model, lm.card)
    stages: dict[str, float] = {}
    report: dict[str, Any] = {
        "teacher": {"card": str(lm.card.path), "name": lm.card.name, "arch": lm.card.arch, **_summary(t_metrics)},
        "method": method,
        "seed": seed,
        "device": str(dev),
    }
    if cls.online and not run_student:
        s_report = None
    elif cls.online:
        from .online import distill_online_to_dir

        t0 = time.perf_counter()
        s_report = distill_online_to_dir(lm, method, out, student_arch=student, kd=kd, seed=seed, **(synth_options or {}))
        stages["distill"] = round(time.perf_counter() - t0, 2)
    else:
        t0 = time.perf_counter()
        ds = synthesize_dataset(lm, method, out / "data", num_images, seed=seed, **(synth_options or {}))
        stages["synthesize"] = round(time.perf_counter() - t0, 2)
        report["data"] = {"dir": str(ds.root), "num_images": ds.manifest["images_written"]}
        source = DatasetSource(ds.root, lm.card, dev, seed=seed)
        s_report = None
        if run_student:
            s_report = distill_to_dir(lm, source, out, student_arch=student, kd=kd, seed=seed, desc="distill")
            stages["distill"] = s_report["seconds"]
    if s_report is not None:
        _student_report(report, s_report, t_metrics, out)
    if baseline and s_report is not None:
        n_noise = report.get("data", {}).get("num_images", num_images)
        noise = NoiseSource(n_noise, lm.card, dev, seed=seed)
        b = distill_to_dir(
            lm, noise, out / "baseline", student_arch=s_report["arch"], kd=kd, seed=seed, desc="noise baseline", save=False
        )
        stages["baseline"] = b["seconds"]
        report["noise_baseline"] = {"accuracy": b["accuracy"], "num_images": n_noise, "seconds": b["seconds"]}
    final = load_model(out / "model.json", dev) if s_report is not None else lm
    if prune is not None:
        final = _prune_stage(final, prune, importance, report, out, kd, seed, method, synth_options)
        stages["prune"] = report["prune"]["seconds"]
    if bits is not None:
        final = _quantize_stage(final, bits, report, out, seed)
        stages["quantize"] = report["quantize"]["seconds"]
    report["final_card"] = str(final.card.path)
    report["profile"] = _profile(lm, out, s_report is not None, prune is not None)
    if bits is not None:
        report["profile"]["quantized"] = _quantized_profile(report["quantize"], list(report["profile"].values())[-1])
    report["stages_seconds"] = stages
    report["kd"] = dataclasses.asdict(kd)
    if dist.is_main():
        atomic_write_json(out / "report.json", report)
    return report


def _student_report(report: dict[str, Any], s_report: dict[str, Any], t_metrics: dict[str, Any], out: Path) -> None:
    report["student"] = {k: v for k, v in s_report.items() if k != "history"}
    report["student"]["ratio_to_teacher"] = round(s_report["accuracy"] / max(t_metrics["accuracy"], 1e-12), 4)
    report["student"]["card"] = str(out / "model.json")


def _prune_stage(
    current: LoadedModel, ratio: float, importance: str, report: dict[str, Any], out: Path, kd: KDConfig,
    seed: int, method: str, synth_options: dict[str, Any] | None,
) -> LoadedModel:  # fmt: skip
    """Prune ``current`` and recover it by KD from its unpruned self on the run's synthetic data."""
    from .prune import prune_stage, surrogate_source

    if "data" in report:
        source, info = surrogate_source(current, data=report["data"]["dir"], seed=seed, allow_other_teacher=True)
    else:
        source, info = surrogate_source(current, method=method, seed=seed, method_options=synth_options)
    res = prune_stage(current, ratio, importance=importance, source=source, source_info=info, kd=kd,
                      out_dir=out / "prune", latency=False)  # fmt: skip
    report["prune"] = {k: v for k, v in res.report.items() if k != "history"}
    return load_model(out / "prune" / "model.json", device_of(current.model))


def _parse_bits(spec: str) -> tuple[int, int]:
    """``"W4A8"`` -> ``(4, 8)``; a clear error otherwise."""
    import re

    from .quant.qmodel import QuantConfig

    m = re.fullmatch(r"[wW](\d+)[aA](\d+)", spec.strip())
    if m is None:
        raise UserInputError(f"--quantize must look like W8A8 or W4A8 (weight and activation bits), got {spec!r}")
    bits = int(m.group(1)), int(m.group(2))
    QuantConfig(*bits).validate()
    return bits


def _quantize_stage(current: LoadedModel, bits: tuple[int, int], report: dict[str, Any], out: Path, seed: int) -> LoadedModel:
    """Quantize ``current`` calibrated on the run's synthetic data (ZeroQ data for online methods)."""
    from .quant import quantize

    calib = report["data"]["dir"] if "data" in report else "zeroq"
    t0 = time.perf_counter()
    q = quantize(current, *bits, calib, out_dir=out / "quantize", device=device_of(current.model), seed=seed,
                 int8=bits == (8, 8))  # fmt: skip
    report["quantize"] = {**q, "seconds": round(time.perf_counter() - t0, 2)}
    return load_model(out / "quantize" / "model.json", device_of(current.model))


def _quantized_profile(q: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """The quantized stage in the profile's terms: same params and MACs, fewer bytes; latency only
    for the real int8 model (the low-bit simulation runs float kernels, timing it would mislead)."""
    entry = {"accuracy": q["quantized"]["accuracy"], "params": before["params"], "macs": before["macs"],
             "size_bytes": q["quantized"]["size_bytes"]}  # fmt: skip
    if "int8" in q and "latency_cpu" in q:
        entry["accuracy_int8"] = q["int8"]["accuracy"]
        for b in (1, 64):
            lat = q["latency_cpu"][f"batch_{b}"]["int8"]
            entry[f"latency_ms_b{b}"], entry[f"latency_min_ms_b{b}"] = lat["median_ms"], lat["min_ms"]
    return entry


def _profile(teacher: LoadedModel, out: Path, student: bool, pruned: bool) -> dict[str, dict[str, Any]]:
    """Accuracy, params, MACs, size and CPU latency (1 thread, interleaved) of each stage's model."""
    from .prune import profile_stages

    models = {"teacher": teacher.model}
    if student:
        models["student"] = load_model(out / "model.json", "cpu").model
    if pruned:
        models["pruned"] = load_model(out / "prune" / "model.json", "cpu").model
    return profile_stages(models, teacher.card)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "params", "size_bytes")}
