"""The library entry point: quantize a model from its card with synthetic (or reference) data.

``quantize(model, QuantConfig(weight_bits, act_bits), QuantizeJob(calib=...))`` gets calibration
images, simulates the
quantized network (BN folded, weights per channel, activations per tensor), optionally
fine-tunes it by KD from the full-precision model, optionally exports a real int8 CPU model,
and writes ``OUT/model.json`` + ``OUT/model.safetensors`` (loadable by ``datafree evaluate``),
``OUT/report.json`` and, with ``int8``, the int8 model as ``OUT/int8/model.json`` (see
:mod:`datafree.quant.int8_artefact`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generators import method_class

from ..cards import LoadedModel, ModelCard, load_model, portable_arch, save_model
from ..data import digits_split
from ..data.evalsets import check_eval_data
from ..dataset import MANIFEST, shard_seed
from ..distill import CHECKPOINT, KDConfig
from ..errors import UserInputError
from ..evaluate import default_eval_data, measure
from ..hooks import batchnorm_layers
from ..outputs import prepare_out_dir
from ..plan import plan
from ..profile import measure_latency
from ..utils import atomic_write_json, device_of, model_size_bytes, remove_stale, torch_generator
from .int8 import INT8_ENGINE, export_int8
from .int8_artefact import save_int8
from .qat import finetune as finetune_model  # ``finetune`` is a field of QuantizeJob
from .qat import finetune_kd
from .qmodel import QuantConfig, calibrate, quantize_network, quantized_size_bytes

__all__ = [
    "CALIBRATION_DATA",
    "QuantizeJob",
    "calibration_images",
    "check_quantize_args",
    "int8_verdict",
    "quantize",
    "QUANTIZED_ARCH",
]

QUANTIZED_ARCH = "datafree.quant.qmodel:build_quantized"


def _synthesized(method: str) -> Callable[..., torch.Tensor]:
    def make(teacher: LoadedModel, num_images: int, seed: int, **overrides: Any) -> torch.Tensor:
        if method_class(method).requires_batchnorm and not batchnorm_layers(teacher.model):
            raise UserInputError(
                f"--calib {method} inverts BatchNorm statistics, but this model has no BatchNorm layer; "
                "calibrate with noise or with a synthetic dataset DIR made by a method that needs no BN"
            )
        synth = plan(teacher, method=method, method_options=overrides, seed=seed).synthesizer
        assert synth is not None
        bs = synth.config.batch_size
        batches = []
        for i in range(-(-num_images // bs)):
            n = min(bs, num_images - i * bs)
            batches.append(synth.synthesize(n, torch_generator(shard_seed(seed, i))).images)
        return torch.cat(batches)

    return make


def _noise(teacher: LoadedModel, num_images: int, seed: int, **_: Any) -> torch.Tensor:
    x = torch.randn((num_images, *teacher.card.input_shape), generator=torch_generator(seed))
    teacher.card.normalizer().clamp_(x)
    return x.to(device_of(teacher.model))


def _digits(teacher: LoadedModel, num_images: int, seed: int, **_: Any) -> torch.Tensor:
    x, _ = digits_split("train", tuple(teacher.card.input_shape))  # type: ignore[arg-type]
    idx = torch.randperm(len(x), generator=torch_generator(seed))[:num_images]
    return teacher.card.normalizer()(x[idx]).to(device_of(teacher.model))


# name -> (teacher, num_images, seed, **synth_overrides) -> normalised images (N, C, H, W).
# "digits" is real training data: the reference upper bound, not a data-free method.
CALIBRATION_DATA: dict[str, Callable[..., torch.Tensor]] = {
    "zeroq": _synthesized("zeroq"),
    "deepinversion": _synthesized("deepinversion"),
    "noise": _noise,
    "digits": _digits,
}


def _from_directory(teacher: LoadedModel, root: Path, num_images: int, seed: int) -> torch.Tensor:
    if not (root / MANIFEST).is_file():
        raise UserInputError(f"--calib {root}: not a synthetic dataset directory (no {MANIFEST})")
    # Calibration data may come from another model of the same input spec (compress calibrates a
    # student on its teacher's data), so only the input spec is checked.
    source = plan(teacher, data=root, seed=seed, allow_other_teacher=True).dataset_source
    assert source is not None
    images = source.images
    idx = torch.randperm(len(images), generator=torch_generator(seed))[:num_images]
    return images[idx.to(images.device)]


def calibration_images(
    teacher: LoadedModel, calib: str | Path, num_images: int = 64, seed: int = 0, **synth_overrides: Any
) -> torch.Tensor:
    """Normalised calibration images from a source name (:data:`CALIBRATION_DATA`) or a dataset dir.

    Args:
        teacher: the full-precision model and card.
        calib: ``zeroq``, ``deepinversion``, ``noise``, ``digits`` (real, reference only), the
            path of a synthetic dataset written by ``datafree synthesize``, an ImageFolder
            directory or an ``.npz`` (as ``evaluate --data`` reads them, or a normalised export).
        num_images: how many images (a dataset directory gives at most what it holds).
        seed: seed of the synthesis / sampling.
        **synth_overrides: config fields of the synthesis backend (e.g. ``iterations``).

    Returns:
        ``(N, C, H, W)`` on the teacher's device.
    """
    if num_images <= 0:
        raise UserInputError(f"calibration images must be > 0, got {num_images}")
    from ..dataset import MANIFEST

    name = str(calib)
    if name in CALIBRATION_DATA:
        return CALIBRATION_DATA[name](teacher, num_images, seed, **synth_overrides)
    path = Path(name)
    if path.is_dir() and not (path / MANIFEST).is_file() and any(p.is_dir() for p in path.iterdir()):
        return _from_labelled(teacher, path, num_images, seed)  # an ImageFolder tree
    if path.is_dir():
        return _from_directory(teacher, path, num_images, seed)
    if path.suffix == ".npz" and path.is_file():
        return _from_labelled(teacher, path, num_images, seed)
    raise UserInputError(
        f"unknown --calib {name!r}: use {', '.join(CALIBRATION_DATA)}, a synthetic dataset directory, "
        "an ImageFolder directory or an .npz"
    )


def _from_labelled(teacher: LoadedModel, path: Path, num_images: int, seed: int) -> torch.Tensor:
    """Images of an ImageFolder tree or an ``.npz`` (as ``evaluate --data`` reads them), normalised.

    An ``.npz`` written by ``datafree export --normalized`` / ``--format npy`` holds float32 NCHW
    images already normalised for its ``mean``/``std``: they are used as they are when those match
    the card, and refused otherwise.
    """
    from ..data.files import load_normalized_npz

    pre = load_normalized_npz(path, teacher.card) if path.suffix == ".npz" else None
    if pre is not None:
        images = pre
    else:
        from ..data import load_labelled

        pixels, _ = load_labelled(path, tuple(teacher.card.input_shape))  # type: ignore[arg-type]
        images = teacher.card.normalizer()(pixels)
    idx = torch.randperm(len(images), generator=torch_generator(seed))[:num_images]
    return images[idx].to(device_of(teacher.model))


def check_quantize_args(lm: LoadedModel, calib: str | Path, **synth_overrides: Any) -> None:
    """Refuse, before anything runs or is written, a job this cannot do.

    That is: a model this cannot quantize (a real int8 model, an already quantized one), an unknown
    ``calib`` and ``--set`` options that would be ignored or are invalid.

    Args:
        lm: the loaded model.
        calib: the calibration source (see :func:`calibration_images`).
        **synth_overrides: backend config fields (``--set``).
    """
    where = lm.card.path or lm.card.name
    if lm.card.is_int8:
        raise UserInputError(
            f"{where} is already a real int8 model; quantize the float model it was made from"
        )
    if lm.card.arch == QUANTIZED_ARCH:
        raise UserInputError(f"{where} is already quantized; quantize the float model it was made from")
    name = str(calib)
    if name in ("zeroq", "deepinversion"):
        from generators import method_class, parse_overrides

        parse_overrides(method_class(name).Config, dict(synth_overrides))
    elif synth_overrides:
        raise UserInputError(
            f"--set {next(iter(synth_overrides))}=... configures a synthesis backend; --calib {name} "
            "synthesises "
            "nothing (use --calib zeroq or deepinversion)"
        )
    elif name not in CALIBRATION_DATA:
        path = Path(name)
        if path.suffix == ".npz" and path.is_file():
            return  # read (and checked) as evaluate --data reads it
        if not path.is_dir():
            raise UserInputError(
                f"unknown --calib {name!r}: use {', '.join(CALIBRATION_DATA)}, a synthetic dataset "
                "directory, "
                "an ImageFolder directory or an .npz"
            )
        from ..dataset import MANIFEST, SyntheticDataset

        if not (path / MANIFEST).is_file():
            if any(p.is_dir() for p in path.iterdir()):
                return  # an ImageFolder tree
            raise UserInputError(
                f"--calib {name}: not a synthetic dataset (no {MANIFEST}) nor an ImageFolder tree"
            )
        ds = SyntheticDataset.open(name)
        ds.check_complete()
        ds.check_compatible(lm.card, allow_other_teacher=True)


def _arch_kwargs(card: ModelCard, cfg: QuantConfig) -> dict[str, Any]:
    kwargs = {
        "base_arch": portable_arch(card),
        "in_channels": card.in_channels,
        "weight_bits": cfg.weight_bits,
        "act_bits": cfg.act_bits,
        "weight_symmetric": cfg.weight_symmetric,
        "quantize_output": cfg.quantize_output,
        "base_arch_kwargs": dict(card.arch_kwargs),
    }
    shapes = getattr(card, "module_shapes", None)  # a pruned model's layer sizes, when cards have them
    if shapes:
        kwargs["base_module_shapes"] = dict(shapes)
    return kwargs


def _test_accuracy(
    model: torch.nn.Module, card: ModelCard, eval_data: str | Path | None = None
) -> float | None:
    """Accuracy on ``eval_data``, or the card's default data (digits for digits models), else None."""
    acc = measure(model, card, eval_data)["accuracy"]
    return None if acc is None else round(acc, 4)


def _int8_export(
    lm: LoadedModel, images: torch.Tensor, eval_data: str | Path | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    t0 = time.perf_counter()
    int8 = export_int8(lm.model, images)
    seconds = time.perf_counter() - t0
    acc = _test_accuracy(int8, lm.card, eval_data)
    report = {"engine": INT8_ENGINE, "flow": "pt2e", "export_seconds": round(seconds, 2), "accuracy": acc}
    return int8, report


def int8_verdict(latency: dict[str, Any]) -> dict[str, Any]:
    """Where the int8 model is faster than fp32 (median CPU time, per batch size) and what to use.

    Args:
        latency: :func:`_cpu_latency`'s result with an ``int8`` entry per batch size.

    Returns:
        ``{"faster_at": {"batch_1": bool, "batch_64": bool}, "use": {"batch_1": "int8"|"fp32", ...},
        "note": str}``: int8 is chosen only where it is faster.
    """
    faster = {b: latency[b]["int8"]["cpu_ms"] < latency[b]["fp32"]["cpu_ms"] for b in ("batch_1", "batch_64")}
    slow = [b.replace("batch_", "batch ") for b, f in faster.items() if not f]
    note = "int8 is faster than fp32 at batch 1 and 64"
    if slow:
        note = (
            f"int8 (PT2E, eager PyTorch) is slower than fp32 at {' and '.join(slow)}: keep fp32 there; "
            "for int8 speed deploy it to ONNX Runtime (datafree deploy --format onnx) or torch.compile it"
        )
    return {"faster_at": faster, "use": {b: "int8" if f else "fp32" for b, f in faster.items()}, "note": note}


def _save_int8(int8: torch.nn.Module, card: ModelCard, report: dict[str, Any], out: Path) -> ModelCard:
    """Write the int8 model as a loadable card (``out/model.json`` + ``out/model.safetensors``)."""
    info = {"calib": report["calib"], "calib_images": report["calib_images"], "torch": torch.__version__,
            "source": card.name or str(card.path)}  # fmt: skip
    return save_int8(
        int8,
        out,
        card,
        test_accuracy=report["int8"]["accuracy"],
        quantization=info,
        accuracy_data=report["eval_data"],
    )


def _cpu_latency(lm: LoadedModel, int8: torch.nn.Module | None, repeats: int) -> dict[str, Any]:
    """fp32 (and int8) forward latency on CPU at batch 1 and 64, interleaved in this process."""
    models = {"fp32": copy.deepcopy(lm.model).cpu().eval()}
    if int8 is not None:
        models["int8"] = int8
    pixels, _ = digits_split("test", tuple(lm.card.input_shape))  # type: ignore[arg-type]
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for bs in (1, 64):
        x = lm.card.normalizer()(pixels[:bs])
        lat = measure_latency(models, x, repeats=repeats, threads=None, min_sample_ms=0.0)
        out[f"batch_{bs}"] = {name: {k: round(v, 3) for k, v in per[bs].items()} for name, per in lat.items()}
    return out


FINETUNE_RUN = "finetune.json"


def _finetune_checkpoint_dir(
    out_dir: str | Path | None, report: dict[str, Any], seed: int, images: torch.Tensor
) -> Path | None:
    """``out_dir``, where the fine-tuning checkpoints after every epoch so that a rerun resumes it.

    The checkpoint only knows the KD settings; ``finetune.json`` records what the quantized model
    was calibrated from (model, bits, calibration data), and a checkpoint of another calibration
    is removed rather than resumed.
    """
    if out_dir is None:
        return None
    out = Path(out_dir)
    run = {k: report[k] for k in ("model", "weight_bits", "act_bits", "calib", "config", "calib_images")}
    run.update(seed=seed, images_sum=round(float(images.double().sum()), 6))
    old = out / FINETUNE_RUN
    try:
        same = json.loads(old.read_text()) == run
    except (OSError, ValueError):
        same = False
    if not same:
        remove_stale(out / CHECKPOINT, "it fine-tuned another calibration")
        atomic_write_json(old, run)
    return out


@dataclass
class QuantizeJob:
    """What :func:`quantize` does around the quantizer itself (its :class:`QuantConfig`).

    Attributes:
        calib: calibration data, see :func:`calibration_images`.
        calib_images: number of calibration images (ZeroQ: one batch of 64).
        seed: seed of the calibration data.
        finetune_epochs: epochs of KD fine-tuning on the calibration images (0: calibration only).
        finetune: further fine-tuning settings (default :func:`~datafree.quant.qat.finetune_kd`;
            its ``epochs`` is replaced by ``finetune_epochs``).
        int8: also export a real int8 CPU model (W8A8: int8 weights and activations whatever the
            config's bit widths are) and time it against fp32.
        latency_repeats: timed forward passes per model and batch size (0: no timing). The
            fake-quantized simulation itself is not timed: it runs float kernels.
        synth_options: config fields of the synthesis backend (``--set``).
        eval_data: labelled data for the reported accuracies (see :func:`datafree.evaluate.evaluate_model`;
            default: the digits test split for models trained on digits, else no accuracy is claimed).
    """

    calib: str | Path = "zeroq"
    calib_images: int = 64
    seed: int = 0
    finetune_epochs: int = 0
    finetune: KDConfig | None = None
    int8: bool = False
    latency_repeats: int = 20
    synth_options: dict[str, Any] = field(default_factory=dict)
    eval_data: str | Path | None = None

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the first bad value."""
        if self.finetune_epochs < 0:
            raise UserInputError(f"--finetune-epochs must be >= 0, got {self.finetune_epochs}")


def quantize(
    model: str | Path | ModelCard | LoadedModel,
    config: QuantConfig | None = None,
    job: QuantizeJob | None = None,
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    images: torch.Tensor | None = None,
    prepare_out: bool = False,
) -> dict[str, Any]:
    """Quantize ``model`` without real data; returns (and writes) a report.

    Everything is checked (the configs, the model, ``job.calib`` and ``job.synth_options``,
    ``job.eval_data``) before anything runs or is written.

    Args:
        model: a shipped teacher name, card path / directory, card, or loaded model.
        config: bit widths and clipping (default W8A8, MSE clipping).
        job: calibration data, fine-tuning, int8 export and timing (defaults of :class:`QuantizeJob`).
        out_dir: where to write ``model.json``, ``model.safetensors`` and ``report.json`` (and,
            with ``job.int8``, the int8 model as ``int8/model.json`` + ``int8/model.safetensors``).
        device: where to synthesize, calibrate and fine-tune.
        images: calibration images to use instead of ``job.calib`` (already normalised).
        prepare_out: ``out_dir`` is a command's ``--out``: once the checks pass, create it, or accept
            it when empty or already ours, and refuse a directory holding other files
            (:func:`datafree.outputs.prepare_out_dir`).

    Returns:
        The report: accuracies (fp32, quantized, after fine-tuning, int8), sizes, latency.
    """
    cfg, job = config or QuantConfig(), job or QuantizeJob()
    cfg.validate()
    job.validate()
    lm = model if isinstance(model, LoadedModel) else load_model(model, device)
    card = lm.card
    if images is None:
        check_quantize_args(lm, job.calib, **job.synth_options)
    check_eval_data(job.eval_data, card)
    if prepare_out and out_dir is not None:
        out_dir = prepare_out_dir(out_dir)
    report: dict[str, Any] = {
        "model": card.name or str(card.path),
        "weight_bits": cfg.weight_bits,
        "act_bits": cfg.act_bits,
        "calib": str(job.calib) if images is None else "given",
        "config": dataclasses.asdict(cfg),
    }
    eval_data = job.eval_data
    report["eval_data"] = str(eval_data) if eval_data is not None else default_eval_data(card)
    t0 = time.perf_counter()
    if images is None:
        images = calibration_images(lm, job.calib, job.calib_images, job.seed, **job.synth_options)
    report["calib_images"] = len(images)
    report["calib_data_seconds"] = round(time.perf_counter() - t0, 2)
    qmodel = calibrate(quantize_network(lm.model, cfg), images, cfg, seed=job.seed)
    size = quantized_size_bytes(qmodel)
    fp32_acc = _test_accuracy(lm.model, card, eval_data)
    report["fp32"] = {"accuracy": fp32_acc, "size_bytes": model_size_bytes(lm.model)}
    q_acc = _test_accuracy(qmodel, card, eval_data)
    report["quantized"] = {"accuracy": q_acc, "size_bytes": size["total"], "size": size}
    if job.finetune_epochs > 0:
        _finetune_stage(lm, qmodel, images, job, report, out_dir)
    int8_model = None
    if job.int8:
        int8_model, report["int8"] = _int8_export(lm, images.cpu(), eval_data)
    if job.latency_repeats > 0:
        report["latency_cpu"] = _cpu_latency(lm, int8_model, job.latency_repeats)
        if int8_model is not None:
            report["int8"]["speed"] = int8_verdict(report["latency_cpu"])
    if out_dir is not None:
        _write(Path(out_dir), qmodel, int8_model, cfg, job, report, card)
    return report


def _finetune_stage(
    lm: LoadedModel, qmodel: torch.nn.Module, images: torch.Tensor, job: QuantizeJob, report: dict[str, Any],
    out_dir: str | Path | None,
) -> None:  # fmt: skip
    """KD fine-tuning of ``qmodel`` from the float model; checkpointed in ``out_dir`` (resumable)."""
    ft_cfg = dataclasses.replace(job.finetune or finetune_kd(), epochs=job.finetune_epochs)
    t1 = time.perf_counter()
    ckpt_dir = _finetune_checkpoint_dir(out_dir, report, job.seed, images)
    result = finetune_model(qmodel, lm.model, images, ft_cfg, checkpoint_dir=ckpt_dir)
    report["finetune"] = {
        "config": dataclasses.asdict(ft_cfg),
        "accuracy_before": report["quantized"]["accuracy"],
        "seconds": round(time.perf_counter() - t1, 2),
        "final_loss": round(result.history[-1]["loss"], 5),
    }
    report["quantized"]["accuracy"] = _test_accuracy(qmodel, lm.card, job.eval_data)


def _write(
    out: Path, qmodel: torch.nn.Module, int8_model: torch.nn.Module | None, cfg: QuantConfig,
    job: QuantizeJob, report: dict[str, Any], card: ModelCard,
) -> None:  # fmt: skip
    """The quantized card, the int8 one (or remove an earlier run's), and report.json."""
    saved = save_model(
        qmodel, out, like=card, arch=QUANTIZED_ARCH, name="model",
        card_name=f"{card.name or 'model'}_w{cfg.weight_bits}a{cfg.act_bits}",
        arch_kwargs=_arch_kwargs(card, cfg), test_accuracy=report["quantized"]["accuracy"],
        accuracy_data=report["eval_data"],
        quantization={k: report[k] for k in ("weight_bits", "act_bits", "calib", "config")},
    )  # fmt: skip
    report["model_card"] = str(saved.path)
    if int8_model is not None:
        report["int8"]["model_card"] = str(_save_int8(int8_model, card, report, out / "int8").path)
    else:  # a previous run's int8 model would no longer match this model.json
        remove_stale(out / "int8", "this run exports no int8 model")
    if job.finetune_epochs == 0:
        remove_stale(out / CHECKPOINT, "this run does no fine-tuning")
        remove_stale(out / FINETUNE_RUN, "this run does no fine-tuning")
    atomic_write_json(out / "report.json", report)
