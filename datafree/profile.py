"""Cost of a model: parameters, MACs, size in bytes and CPU latency, for every compression report.

Latency is measured the way ECOSYSTEM.md found trustworthy on a shared machine: a fixed thread
count (1 by default), several models timed round-robin in one process (so load that varies over
time hits each model equally), and the median over repeats reported next to the minimum.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cards import ModelCard
from .evaluate import measure
from .utils import count_params, device_of, model_size_bytes

__all__ = [
    "count_macs",
    "measure_latency",
    "time_callables",
    "profile_model",
    "profile_stages",
    "num_threads",
    "LATENCY_BATCHES",
]

LATENCY_BATCHES = (1, 64)


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (unchanged when ``n`` is None), then restore."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int | None:
    """Multiply-accumulates of one forward pass on one ``(C, H, W)`` input (FLOPs / 2).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; the
    element-wise ops it ignores are a small share in CNNs). None when the model cannot be
    counted (e.g. a quantized graph the counter does not know).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros((1, *input_shape), device=device_of(model))
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    except Exception:  # noqa: BLE001 - a counting failure must not break a report
        return None
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def _time_once(model: Callable[[torch.Tensor], Any], x: torch.Tensor, inner: int) -> tuple[float, float]:
    """Wall-clock and process CPU milliseconds per forward, over ``inner`` forwards."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(inner):
        model(x)
    return (time.perf_counter() - t0) * 1000.0 / inner, (time.process_time() - c0) * 1000.0 / inner


@torch.no_grad()
def measure_latency(
    models: Mapping[str, nn.Module],
    inputs: Sequence[int] | torch.Tensor,
    batch_sizes: Sequence[int] = LATENCY_BATCHES,
    *,
    repeats: int = 30,
    warmup: int = 3,
    threads: int | None = 1,
    min_sample_ms: float = 5.0,
) -> dict[str, dict[int, dict[str, float]]]:
    """CPU forward latency of several models, timed interleaved (round-robin) in this process.

    Args:
        models: name -> model (put in eval mode for the measurement, restored after).
        inputs: ``(C, H, W)`` of one input (random batches of each of ``batch_sizes``), or one
            batch to time on (then ``batch_sizes`` is ignored).
        batch_sizes: batch sizes to time.
        repeats: timed samples per model and batch size.
        warmup: untimed forwards first.
        threads: ``torch.set_num_threads`` during the measurement (None leaves it).
        min_sample_ms: each sample repeats the forward until about this long, so that sub-
            millisecond batch-1 timings are not dominated by timer noise (0: one forward a sample).

    Returns:
        ``{name: {batch: {"median_ms", "min_ms", "cpu_ms"}}}``: milliseconds per forward, wall
        clock (median and minimum) and the median process CPU time (robust to being descheduled
        on a shared machine).
    """
    modes = {name: m.training for name, m in models.items()}
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in models}
    given = inputs if isinstance(inputs, torch.Tensor) else None
    try:
        with num_threads(threads):
            for b in (len(given),) if given is not None else batch_sizes:
                batch = {n: given if given is not None else torch.randn((b, *inputs), device=device_of(m))
                         for n, m in models.items()}  # fmt: skip
                inner = {}
                for name, m in models.items():
                    m.eval()
                    for _ in range(warmup):
                        m(batch[name])
                    est = _time_once(m, batch[name], 1)[0]
                    inner[name] = max(1, min(1000, round(min_sample_ms / max(est, 1e-3))))
                wall: dict[str, list[float]] = {n: [] for n in models}
                cpu: dict[str, list[float]] = {n: [] for n in models}
                for _ in range(repeats):
                    for name, m in models.items():
                        w, c = _time_once(m, batch[name], inner[name])
                        wall[name].append(w)
                        cpu[name].append(c)
                for name in models:
                    out[name][b] = {"median_ms": statistics.median(wall[name]), "min_ms": min(wall[name]),
                                    "cpu_ms": statistics.median(cpu[name])}  # fmt: skip
    finally:
        for name, m in models.items():
            m.train(modes[name])
    return out


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    latency: bool = True,
    batch_sizes: Sequence[int] = LATENCY_BATCHES,
    repeats: int = 30,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Parameters, MACs per image, size in bytes and (optionally) CPU latency of one model.

    Returns:
        ``{"params", "macs", "size_bytes"}`` plus ``"latency_ms_b{B}"`` (median) and
        ``"latency_min_ms_b{B}"`` per batch size.
    """
    report: dict[str, Any] = {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "size_bytes": model_size_bytes(model),
    }
    if latency:
        lat = measure_latency({"m": model}, input_shape, batch_sizes, repeats=repeats, threads=threads)["m"]
        for b, t in lat.items():
            report[f"latency_ms_b{b}"] = round(t["median_ms"], 4)
            report[f"latency_min_ms_b{b}"] = round(t["min_ms"], 4)
    return report


def _stage_metrics(
    model: nn.Module, card: ModelCard, eval_data: str | Path | None, measured: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    acc = measured if measured is not None else measure(model, card, eval_data)
    return {
        "accuracy": acc["accuracy"],
        "top5": acc["top5"],
        "eval_data": acc["data"],
        "params": count_params(model),
        "macs": count_macs(model, card.input_shape),
        "size_bytes": model_size_bytes(model),
    }


def profile_stages(
    models: dict[str, nn.Module],
    card: ModelCard,
    eval_data: str | Path | None = None,
    *,
    latency: bool = True,
    repeats: int = 30,
    measured: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy, parameters, MACs, bytes and CPU latency (1 thread, interleaved) of each model.

    ``measured`` gives, by stage name, accuracies already measured on ``eval_data``
    (:func:`datafree.evaluate.measure`'s ``accuracy``, ``top5`` and ``data``): those models are not
    evaluated again.

    Returns:
        ``{stage: {"accuracy", "params", "macs", "size_bytes", "latency_ms_b1", "latency_ms_b64"}}``
        (latency: median ms per forward; ``latency_min_ms_b*``: the minimum, steadier under load).
    """
    known = measured or {}
    out = {name: _stage_metrics(m, card, eval_data, known.get(name)) for name, m in models.items()}
    if latency:
        cpu = {name: copy.deepcopy(m).cpu() for name, m in models.items()}
        lat = measure_latency(cpu, card.input_shape, LATENCY_BATCHES, repeats=repeats)
        for name, per_batch in lat.items():
            for b, t in per_batch.items():
                out[name][f"latency_ms_b{b}"] = round(t["median_ms"], 4)
                out[name][f"latency_min_ms_b{b}"] = round(t["min_ms"], 4)
    return out


def time_callables(
    models: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    repeats: int = 30,
    warmup: int = 3,
) -> dict[str, dict[str, float]]:
    """Latency of several callables (ONNX Runtime sessions, compiled graphs...) on ``x``.

    The callables run interleaved round-robin, so machine load hits all of them alike.

    Returns:
        ``{name: {"min_ms", "median_ms", "cpu_ms"}}``: wall-clock minimum and median, and the
        median process CPU time (robust to being descheduled on a shared machine).
    """
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in models.values():
                fn(x)
        for _ in range(repeats):
            for name, fn in models.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn(x)
                wall[name].append((time.perf_counter() - t0) * 1e3)
                cpu[name].append((time.process_time() - c0) * 1e3)
    return {
        k: {
            "min_ms": round(min(wall[k]), 3),
            "median_ms": round(statistics.median(wall[k]), 3),
            "cpu_ms": round(statistics.median(cpu[k]), 3),
        }
        for k in models
    }
