"""The library entry point: quantize a model from its card with synthetic (or reference) data.

``quantize(model, weight_bits, act_bits, calib=...)`` gets calibration images, simulates the
quantized network (BN folded, weights per channel, activations per tensor), optionally
fine-tunes it by KD from the full-precision model, optionally exports a real int8 CPU model,
and writes ``OUT/model.json`` + ``OUT/model.safetensors`` (loadable by ``datafree evaluate``),
``OUT/report.json`` and, with ``int8``, the int8 model as ``OUT/int8/model.json`` (see
:mod:`datafree.quant.int8_artefact`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..cards import LoadedModel, ModelCard, load_model, portable_arch, save_model
from ..data import digits_split
from ..dataset import shard_seed
from ..errors import UserInputError
from ..evaluate import accuracy
from ..utils import atomic_write_json, device_of, model_size_bytes, torch_generator
from .qat import FinetuneConfig
from .qat import finetune as finetune_model  # ``finetune`` is a keyword argument of quantize()
from .qmodel import QuantConfig, calibrate, quantize_network, quantized_size_bytes

__all__ = ["CALIBRATION_DATA", "calibration_images", "quantize", "QUANTIZED_ARCH"]

QUANTIZED_ARCH = "datafree.quant.qmodel:build_quantized"


def _synthesized(method: str) -> Callable[..., torch.Tensor]:
    def make(teacher: LoadedModel, num_images: int, seed: int, **overrides: Any) -> torch.Tensor:
        from generators import create_synthesizer, method_class

        from ..hooks import batchnorm_layers

        if method_class(method).requires_batchnorm and not batchnorm_layers(teacher.model):
            raise UserInputError(
                f"--calib {method} inverts BatchNorm statistics, but this model has no BatchNorm layer; "
                "calibrate with noise or with a synthetic dataset DIR made by a method that needs no BN"
            )
        synth = create_synthesizer(method, teacher.model, teacher.card, seed=seed, **overrides)
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
    from ..dataset import MANIFEST
    from ..sources import DatasetSource

    if not (root / MANIFEST).is_file():
        raise UserInputError(f"--calib {root}: not a synthetic dataset directory (no {MANIFEST})")
    # Calibration data may come from another model of the same input spec (compress calibrates a
    # student on its teacher's data), so only the input spec is checked.
    source = DatasetSource(root, teacher.card, device_of(teacher.model), seed=seed, allow_other_teacher=True)
    images = source.images
    idx = torch.randperm(len(images), generator=torch_generator(seed))[:num_images]
    return images[idx.to(images.device)]


def calibration_images(
    teacher: LoadedModel, calib: str | Path, num_images: int = 64, seed: int = 0, **synth_overrides: Any
) -> torch.Tensor:
    """Normalised calibration images from a source name (:data:`CALIBRATION_DATA`) or a dataset dir.

    Args:
        teacher: the full-precision model and card.
        calib: ``zeroq``, ``deepinversion``, ``noise``, ``digits`` (real, reference only), or
            the path of a synthetic dataset written by ``datafree synthesize``.
        num_images: how many images (a dataset directory gives at most what it holds).
        seed: seed of the synthesis / sampling.
        **synth_overrides: config fields of the synthesis backend (e.g. ``iterations``).

    Returns:
        ``(N, C, H, W)`` on the teacher's device.
    """
    if num_images <= 0:
        raise UserInputError(f"calibration images must be > 0, got {num_images}")
    name = str(calib)
    if name in CALIBRATION_DATA:
        return CALIBRATION_DATA[name](teacher, num_images, seed, **synth_overrides)
    path = Path(name)
    if path.is_dir():
        return _from_directory(teacher, path, num_images, seed)
    raise UserInputError(
        f"unknown --calib {name!r}: use {', '.join(CALIBRATION_DATA)} or a synthetic dataset directory"
    )


def check_quantize_args(lm: LoadedModel, calib: str | Path, **synth_overrides: Any) -> None:
    """Refuse, before anything runs or is written, a model this cannot quantize (a real int8 model, an
    already quantized one), an unknown ``calib`` and ``--set`` options that would be ignored or are invalid.

    Args:
        lm: the loaded model.
        calib: the calibration source (see :func:`calibration_images`).
        **synth_overrides: backend config fields (``--set``).
    """
    where = lm.card.path or lm.card.name
    if lm.card.is_int8:
        raise UserInputError(f"{where} is already a real int8 model; quantize the float model it was made from")
    if lm.card.arch == QUANTIZED_ARCH:
        raise UserInputError(f"{where} is already quantized; quantize the float model it was made from")
    name = str(calib)
    if name in ("zeroq", "deepinversion"):
        from generators import method_class, parse_overrides

        parse_overrides(method_class(name).Config, dict(synth_overrides))
    elif synth_overrides:
        raise UserInputError(
            f"--set {next(iter(synth_overrides))}=... configures a synthesis backend; --calib {name} synthesises "
            "nothing (use --calib zeroq or deepinversion)"
        )
    elif name not in CALIBRATION_DATA:
        if not Path(name).is_dir():
            raise UserInputError(
                f"unknown --calib {name!r}: use {', '.join(CALIBRATION_DATA)} or a synthetic dataset directory"
            )
        from ..dataset import MANIFEST, SyntheticDataset

        if not (Path(name) / MANIFEST).is_file():
            raise UserInputError(f"--calib {name}: not a synthetic dataset directory (no {MANIFEST})")
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


def _test_accuracy(model: torch.nn.Module, card: ModelCard) -> float:
    x, y = digits_split("test", tuple(card.input_shape))  # type: ignore[arg-type]
    return round(accuracy(model, x, y, card.normalizer()), 4)


def _int8_export(lm: LoadedModel, images: torch.Tensor) -> tuple[torch.nn.Module, dict[str, Any]]:
    from .int8 import INT8_ENGINE, export_int8

    t0 = time.perf_counter()
    int8 = export_int8(lm.model, images)
    seconds = time.perf_counter() - t0
    report = {"engine": INT8_ENGINE, "export_seconds": round(seconds, 2), "accuracy": _test_accuracy(int8, lm.card)}
    return int8, report


def _save_int8(int8: torch.nn.Module, card: ModelCard, report: dict[str, Any], out: Path) -> ModelCard:
    """Write the int8 model as a loadable card (``out/model.json`` + ``out/model.safetensors``)."""
    from .int8_artefact import save_int8

    info = {"calib": report["calib"], "calib_images": report["calib_images"], "torch": torch.__version__,
            "source": card.name or str(card.path)}  # fmt: skip
    return save_int8(int8, out, card, test_accuracy=report["int8"]["accuracy"], quantization=info)


def _cpu_latency(lm: LoadedModel, int8: torch.nn.Module | None, repeats: int) -> dict[str, Any]:
    """fp32 (and int8) forward latency on CPU at batch 1 and 64, interleaved in this process."""
    from .int8 import measure_latency

    models = {"fp32": copy.deepcopy(lm.model).cpu().eval()}
    if int8 is not None:
        models["int8"] = int8
    pixels, _ = digits_split("test", tuple(lm.card.input_shape))  # type: ignore[arg-type]
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for bs in (1, 64):
        x = lm.card.normalizer()(pixels[:bs])
        out[f"batch_{bs}"] = measure_latency(models, x, repeats=repeats)
    return out


def quantize(
    model: str | Path | ModelCard | LoadedModel,
    weight_bits: int = 8,
    act_bits: int = 8,
    calib: str | Path = "zeroq",
    *,
    calib_images: int = 64,
    finetune_epochs: int = 0,
    finetune: FinetuneConfig | None = None,
    int8: bool = False,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    weight_calib: str = "mse",
    act_calib: str = "mse",
    weight_symmetric: bool = True,
    percentile: float = 99.99,
    images: torch.Tensor | None = None,
    latency_repeats: int = 20,
    **synth_overrides: Any,
) -> dict[str, Any]:
    """Quantize ``model`` without real data; returns (and writes) a report.

    Args:
        model: a shipped teacher name, card path / directory, card, or loaded model.
        weight_bits: 2 to 8, per output channel.
        act_bits: 2 to 8, per tensor.
        calib: calibration data, see :func:`calibration_images`.
        calib_images: number of calibration images (ZeroQ: one batch of 64).
        finetune_epochs: epochs of KD fine-tuning on the calibration images (0: calibration only).
        finetune: further fine-tuning settings (its ``epochs`` is replaced by ``finetune_epochs``).
        int8: also export a real int8 CPU model (W8A8: int8 weights and activations whatever
            ``weight_bits``/``act_bits`` are) and time it against fp32.
        out_dir: where to write ``model.json``, ``model.safetensors`` and ``report.json`` (and,
            with ``int8``, the int8 model as ``int8/model.json`` + ``int8/model.safetensors``).
        device: where to synthesize, calibrate and fine-tune.
        seed: seed of the calibration data.
        weight_calib: ``minmax``, ``percentile`` or ``mse`` weight clipping.
        act_calib: ``minmax``, ``percentile`` or ``mse`` activation clipping.
        weight_symmetric: symmetric (else asymmetric) weight grids.
        percentile: for the percentile method.
        images: calibration images to use instead of ``calib`` (already normalised).
        latency_repeats: timed forward passes per model and batch size (0: no timing). The
            fake-quantized simulation itself is not timed: it runs float kernels.
        **synth_overrides: config fields of the synthesis backend.

    Returns:
        The report: accuracies (fp32, quantized, after fine-tuning, int8), sizes, latency.
    """
    if finetune_epochs < 0:
        raise UserInputError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    cfg = QuantConfig(weight_bits, act_bits, weight_symmetric, weight_calib, act_calib, percentile)
    cfg.validate()
    lm = model if isinstance(model, LoadedModel) else load_model(model, device)
    card = lm.card
    if images is None:
        check_quantize_args(lm, calib, **synth_overrides)
    report: dict[str, Any] = {
        "model": card.name or str(card.path),
        "weight_bits": weight_bits,
        "act_bits": act_bits,
        "calib": str(calib) if images is None else "given",
        "config": dataclasses.asdict(cfg),
    }
    t0 = time.perf_counter()
    if images is None:
        images = calibration_images(lm, calib, calib_images, seed, **synth_overrides)
    report["calib_images"] = len(images)
    report["calib_data_seconds"] = round(time.perf_counter() - t0, 2)
    qmodel = calibrate(quantize_network(lm.model, cfg), images, cfg, seed=seed)
    size = quantized_size_bytes(qmodel)
    report["fp32"] = {"accuracy": _test_accuracy(lm.model, card), "size_bytes": model_size_bytes(lm.model)}
    q_acc = _test_accuracy(qmodel, card)
    report["quantized"] = {"accuracy": q_acc, "size_bytes": size["total"], "size": size}
    if finetune_epochs > 0:
        ft_cfg = dataclasses.replace(finetune or FinetuneConfig(), epochs=finetune_epochs)
        t1 = time.perf_counter()
        result = finetune_model(qmodel, lm.model, images, ft_cfg)
        report["finetune"] = {
            "config": dataclasses.asdict(ft_cfg),
            "accuracy_before": report["quantized"]["accuracy"],
            "seconds": round(time.perf_counter() - t1, 2),
            "final_loss": round(result.history[-1]["loss"], 5),
        }
        report["quantized"]["accuracy"] = _test_accuracy(qmodel, card)
    int8_model = None
    if int8:
        int8_model, report["int8"] = _int8_export(lm, images.cpu())
    if latency_repeats > 0:
        report["latency_cpu"] = _cpu_latency(lm, int8_model, latency_repeats)
    if out_dir is not None:
        out = Path(out_dir)
        saved = save_model(
            qmodel, out, like=card, arch=QUANTIZED_ARCH, name="model",
            card_name=f"{card.name or 'model'}_w{weight_bits}a{act_bits}",
            arch_kwargs=_arch_kwargs(card, cfg), test_accuracy=report["quantized"]["accuracy"],
            quantization={k: report[k] for k in ("weight_bits", "act_bits", "calib", "config")},
        )
        report["model_card"] = str(saved.path)
        if int8_model is not None:
            report["int8"]["model_card"] = str(_save_int8(int8_model, card, report, out / "int8").path)
        atomic_write_json(out / "report.json", report)
    return report

