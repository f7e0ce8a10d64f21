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

from .cards import LoadedModel, load_model, save_model
from .distill import CHECKPOINT, KDConfig, distill
from .errors import UserInputError
from .evaluate import evaluate_model
from .models import create_model, default_student_for
from .sources import DatasetSource, NoiseSource, SurrogateSource
from .utils import atomic_write_json, count_params, model_size_bytes, resolve_device

__all__ = ["prepare_out_dir", "make_student", "distill_to_dir", "compress", "DEFAULT_NUM_IMAGES"]

DEFAULT_NUM_IMAGES = 1024
# Files datafree writes into an --out directory; a directory holding anything else is refused.
_OWN = {"model.json", "model.safetensors", "report.json", CHECKPOINT, "data", "baseline", "kd", "generator.safetensors",
        "generator.json", "online.json"}  # fmt: skip


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
    return model, name


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
    if save:
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
) -> dict[str, Any]:
    """Teacher -> student on synthetic data only; writes ``out/{model.json, data/, report.json}``.

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

    Returns:
        The report (also written to ``out/report.json``).
    """
    from generators import method_class

    from .synthesis import synthesize_dataset

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    out = prepare_out_dir(out)
    cls = method_class(method)
    if kd is None and cls.online:
        from .online import kd_config_for

        kd = kd_config_for(method, {"seed": seed})  # the method's own KD settings
    kd = kd or KDConfig(seed=seed)
    lm = load_model(teacher, dev)
    make_student(student, lm, seed)  # fail fast on an unknown student, before any long stage
    t_metrics = evaluate_model(lm.model, lm.card)
    stages: dict[str, float] = {}
    report: dict[str, Any] = {
        "teacher": {"card": str(lm.card.path), "name": lm.card.name, "arch": lm.card.arch, **_summary(t_metrics)},
        "method": method,
        "seed": seed,
        "device": str(dev),
    }
    if cls.online:
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
        s_report = distill_to_dir(lm, source, out, student_arch=student, kd=kd, seed=seed, desc="distill")
        stages["distill"] = s_report["seconds"]
    report["student"] = {k: v for k, v in s_report.items() if k != "history"}
    report["student"]["ratio_to_teacher"] = round(s_report["accuracy"] / max(t_metrics["accuracy"], 1e-12), 4)
    report["student"]["card"] = str(out / "model.json")
    if baseline:
        n_noise = report.get("data", {}).get("num_images", num_images)
        noise = NoiseSource(n_noise, lm.card, dev, seed=seed)
        b = distill_to_dir(
            lm, noise, out / "baseline", student_arch=s_report["arch"], kd=kd, seed=seed, desc="noise baseline", save=False
        )
        stages["baseline"] = b["seconds"]
        report["noise_baseline"] = {"accuracy": b["accuracy"], "num_images": n_noise, "seconds": b["seconds"]}
    report["stages_seconds"] = stages
    report["kd"] = dataclasses.asdict(kd)
    atomic_write_json(out / "report.json", report)
    return report


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "params", "size_bytes")}
