"""Prune a trained model and recover its accuracy by KD from the unpruned model on surrogate data.

::

    unpruned model ──copy──▶ score channels (l1 | l2 | bn | taylor on synthetic batches)
                             ▶ remove them (Torch-Pruning, classifier protected)
                             ▶ KD recovery: datafree.distill(teacher=unpruned, student=pruned,
                                            source=synthetic dataset | any backend by name)
                             ▶ model.json + model.safetensors (+ report.json)

:func:`prune_stage` is the stage (used by ``datafree compress``); :func:`prune_model` is the
library entry point behind ``datafree prune``. Real labelled data is used only to *report*
accuracy (``eval_data``; the digits test split for digits models), never for scoring or recovery.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cards import LoadedModel, ModelCard, build_model, load_model, save_model
from ..data.evalsets import check_eval_data
from ..distill import KDConfig, distill
from ..errors import UserInputError
from ..outputs import prepare_out_dir
from ..plan import plan
from ..profile import profile_stages
from ..reshape import shape_changes
from ..sources import SurrogateSource
from ..utils import atomic_write_json, device_of, resolve_device
from .importance import create_criterion
from .structured import check_ratio, prune_channels

__all__ = ["PruneResult", "surrogate_source", "prune_stage", "prune_model", "REPORT"]

REPORT = "report.json"


@dataclass
class PruneResult:
    """The pruned (and recovered) model, its card once saved, and the stage report."""

    model: nn.Module
    card: ModelCard | None
    report: dict[str, Any]


def surrogate_source(
    teacher: LoadedModel,
    *,
    data: str | Path | None = None,
    method: str | None = None,
    synth_dir: str | Path | None = None,
    num_images: int = 2048,
    seed: int = 0,
    g_steps: int = 1,
    method_options: dict[str, Any] | None = None,
    allow_other_teacher: bool = False,
) -> tuple[SurrogateSource, dict[str, Any]]:
    """A surrogate-data source for ``teacher``: a dataset directory, or a backend by name.

    An offline backend (pixel optimisation) first writes ``num_images`` images to ``synth_dir``
    (resumable, reusable with ``--data``); an online backend (a generator network) is trained
    inside the KD stage. A dataset synthesized from another teacher is refused unless
    ``allow_other_teacher`` (e.g. ``compress`` recovering a pruned student on the data it
    synthesized from the original teacher).

    Returns:
        The source and a JSON-able description of it for the report.
    """
    p = plan(
        teacher,
        data=data,
        method=method,
        kd=KDConfig(g_steps=g_steps, seed=seed),
        method_options=method_options,
        num_images=num_images,
        seed=seed,
        allow_other_teacher=allow_other_teacher,
    )
    return p.open_source(synth_dir), p.info


def _portable_arch(card: ModelCard) -> str:
    """The card's arch with a relative ``file.py:fn`` made absolute, so a card elsewhere finds it."""
    target, sep, attr = card.arch.rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute() and card.path is not None:
        return f"{(card.path.parent / target).resolve()}:{attr}"
    return card.arch


def _save(
    pruned: nn.Module,
    card: ModelCard,
    out_dir: Path,
    accuracy: float | None,
    provenance: dict[str, Any],
    accuracy_data: str | None = None,
) -> ModelCard:
    reference = build_model(dataclasses.replace(card, module_shapes={}))
    saved = save_model(
        pruned,
        out_dir,
        like=card,
        arch=_portable_arch(card),
        name="model",
        card_name=f"{card.name or 'model'}_pruned",
        arch_kwargs=card.arch_kwargs,
        module_shapes=shape_changes(reference, pruned),
        test_accuracy=None if accuracy is None else round(accuracy, 4),
        accuracy_data=accuracy_data,
        pruning=provenance,
    )
    load_model(saved)  # the card alone must rebuild the pruned architecture (fails loudly if not)
    return saved


def _report(
    metrics: dict[str, dict[str, Any]], ratio: float, importance: str, global_pruning: bool,
    source_info: dict[str, Any] | None, kd: KDConfig | None, history: list[dict[str, float]],
) -> dict[str, Any]:  # fmt: skip
    final = metrics["recovered" if "recovered" in metrics else "pruned"]
    base = metrics["unpruned"]
    report: dict[str, Any] = {
        "stage": "prune",
        "ratio": ratio,
        "importance": importance,
        "global_pruning": global_pruning,
        "source": source_info or {},
        "kd": dataclasses.asdict(kd) if kd is not None else None,
        "stages": metrics,
        "params_removed": 1.0 - final["params"] / base["params"],
        "accuracy_kept": (
            final["accuracy"] / base["accuracy"]
            if base["accuracy"] and final["accuracy"] is not None
            else None
        ),
        "history": history,
    }
    if "latency_ms_b64" in base:
        report["speedup_b1"] = base["latency_ms_b1"] / final["latency_ms_b1"]
        report["speedup_b64"] = base["latency_ms_b64"] / final["latency_ms_b64"]
    return report


def prune_stage(
    model: LoadedModel,
    ratio: float,
    *,
    importance: str = "l2",
    global_pruning: bool = False,
    teacher: nn.Module | None = None,
    source: SurrogateSource | None = None,
    source_info: dict[str, Any] | None = None,
    kd: KDConfig | None = None,
    recover: bool = True,
    taylor_batches: int = 8,
    eval_data: str | Path | None = None,
    out_dir: str | Path | None = None,
    latency: bool = True,
    measured: Mapping[str, Mapping[str, Any]] | None = None,
) -> PruneResult:
    """Prune ``model`` by ``ratio`` of its channels and recover it by KD on ``source``.

    Args:
        model: the trained model to prune, with its card (not modified).
        ratio: fraction of channels to remove, in (0, 1).
        importance: ``l1``, ``l2``, ``bn`` or ``taylor`` (scored on batches of ``source``).
        global_pruning: rank channels across layers instead of the same ratio in each.
        teacher: KD teacher for recovery (default: the unpruned ``model``).
        source: surrogate data (see :func:`surrogate_source`) for recovery and ``taylor``.
        source_info: description of ``source`` for the report.
        kd: KD settings of the recovery.
        recover: run the KD recovery (needs ``source``); False only prunes.
        taylor_batches: synthetic batches (of ``kd.batch_size``) the Taylor gradients sum over.
        eval_data: labelled data to report accuracy on (default: the digits test split for a model
            trained on digits; otherwise no accuracy is claimed).
        out_dir: where to write ``model.json`` + ``model.safetensors``, ``report.json`` and the
            recovery ``checkpoint.pt`` (a rerun resumes it); nothing is written when None.
        latency: measure CPU latency (1 thread, batch 1 and 64) of each stage.
        measured: accuracies already measured on ``eval_data``, by stage (``unpruned``: ``model``'s, as
            :func:`datafree.evaluate.measure` gave them): not measured again (see
            :func:`datafree.profile.profile_stages`).

    Returns:
        :class:`PruneResult`; ``report["stages"]`` has ``unpruned``, ``pruned`` and, when
        recovered, ``recovered``, each with accuracy, params, MACs, size_bytes and latency.
    """
    t0 = time.perf_counter()
    ratio = check_ratio(ratio)
    card = model.card
    kd = kd or KDConfig()
    recover = recover and source is not None
    criterion = create_criterion(importance, model.model)
    if criterion.needs_gradients and source is None:
        raise UserInputError(
            f"--importance {importance} scores channels on synthetic batches: give --data or --method"
        )
    unpruned = model.model.eval()
    device = device_of(unpruned)
    pruned = copy.deepcopy(unpruned)
    example = torch.zeros((1, *card.input_shape), device=device)
    batches = []
    if criterion.needs_gradients:
        assert source is not None
        batches = [source.next_batch(kd.batch_size) for _ in range(taylor_batches)]
    prune_channels(pruned, example, ratio, criterion, num_classes=card.num_classes,
                   global_pruning=global_pruning, batches=batches)  # fmt: skip
    stages = {"unpruned": unpruned, "pruned": copy.deepcopy(pruned)}
    history: list[dict[str, float]] = []
    if recover:
        assert source is not None
        result = distill(teacher or unpruned, pruned, source, kd, input_shape=card.input_shape,
                         checkpoint_dir=out_dir, desc=f"recover ({importance} {ratio:g})")  # fmt: skip
        history = result.history
        stages["recovered"] = pruned
    metrics = profile_stages(stages, card, eval_data, latency=latency, measured=measured)
    report = _report(
        metrics, ratio, importance, global_pruning, source_info, kd if recover else None, history
    )
    saved = None
    if out_dir is not None:
        provenance = {k: report[k] for k in ("ratio", "importance", "global_pruning", "source")}
        provenance.update(base_model=card.name or str(card.path), base_sha256=card.sha256)
        final = metrics["recovered" if recover else "pruned"]
        saved = _save(pruned, card, Path(out_dir), final["accuracy"], provenance, final["eval_data"])
        report["card"] = str(saved.path)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / REPORT, report)
    return PruneResult(pruned.eval(), saved, report)


def prune_model(
    model_spec: str | Path | LoadedModel,
    ratio: float,
    importance: str = "l2",
    data: str | Path | None = None,
    method: str | None = None,
    epochs: int = 20,
    out_dir: str | Path | None = None,
    device: str | torch.device | None = "cpu",
    *,
    global_pruning: bool = False,
    num_images: int = 2048,
    seed: int = 0,
    kd: KDConfig | None = None,
    method_options: dict[str, Any] | None = None,
    eval_data: str | Path | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Load a model from its card, prune it, recover it on synthetic data, save card + weights.

    Args:
        model_spec: shipped teacher name, card path or directory, or a loaded model.
        ratio: fraction of channels to remove, in (0, 1).
        importance: ``l1``, ``l2``, ``bn`` or ``taylor``.
        data: a synthetic dataset directory (``datafree synthesize`` output).
        method: or a backend name: offline backends write ``out_dir/data`` first.
        epochs: recovery epochs (0: prune only; then no source is needed unless ``taylor``).
        out_dir: output directory (``model.json``, ``model.safetensors``, ``report.json``).
        device: where to prune and train (``auto`` picks CUDA when present).
        global_pruning: rank channels globally instead of uniformly per layer.
        num_images: images to synthesize with an offline ``method``.
        seed: seed of synthesis, data order and training.
        kd: recovery KD settings (``epochs`` and ``seed`` above override its fields).
        method_options: backend config overrides (e.g. ``{"iterations": 100}``).
        eval_data: labelled data for the reported accuracy (default: the digits test split for a model
            trained on digits; otherwise no accuracy is claimed).
        latency: measure CPU latency of each stage.

    Returns:
        The report (also written to ``out_dir/report.json``).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise UserInputError(f"--epochs must be an integer >= 0, got {epochs!r}")
    check_ratio(ratio)
    create_criterion(importance)  # unknown names fail before anything is loaded or synthesized
    lm = model_spec if isinstance(model_spec, LoadedModel) else load_model(model_spec, resolve_device(device))
    _check_prunable(lm)
    cfg = dataclasses.replace(kd or KDConfig(), epochs=max(epochs, 1), seed=seed)
    needs_data = epochs > 0 or create_criterion(importance).needs_gradients
    if not needs_data and (data is not None or method is not None):
        raise UserInputError("--epochs 0 with a magnitude importance uses no data: drop --data/--method")
    if not needs_data and method_options:
        raise UserInputError(
            "--set configures a synthesis backend; --epochs 0 with a magnitude importance uses none"
        )
    # the recovery keeps these KD settings whatever the backend (it recovers a model, it is no paper's KD)
    p = plan(lm, data=data, method=method, kd=cfg, method_options=method_options, num_images=num_images,
             seed=seed) if needs_data else None  # fmt: skip
    check_eval_data(eval_data, lm.card)  # a bad --eval-data fails before anything is synthesized or written
    if out_dir is not None:
        out_dir = prepare_out_dir(out_dir)
    source, info = None, None
    if p is not None:
        source = p.open_source(Path(out_dir) / "data" if out_dir is not None else None)
        info = p.info
    result = prune_stage(
        lm, ratio, importance=importance, global_pruning=global_pruning,
        source=source, source_info=info, kd=cfg, recover=epochs > 0,
        eval_data=eval_data, out_dir=out_dir, latency=latency,
    )  # fmt: skip
    return result.report


def _check_prunable(lm: LoadedModel) -> None:
    """Refuse a real int8 model or a quantized (fake-quant) one: prune the float model, then quantize."""
    from ..quant.api import QUANTIZED_ARCH

    where = lm.card.path or lm.card.name
    if lm.card.is_int8 or lm.card.arch == QUANTIZED_ARCH:
        kind = "a real int8" if lm.card.is_int8 else "a quantized"
        raise UserInputError(
            f"{where} is {kind} model, which cannot be pruned; prune the float model, then quantize it"
        )
