"""Helpers the bench scripts share: thread setup, machine description, interleaved timing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

if "DATAFREE_OMP_WAIT" not in os.environ:  # else cli.openmp_wait_policy chose (bench/synthesis_overhead.py)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

__all__ = ["setup", "machine", "sync", "interleaved", "markdown_table"]


def setup(device: str, threads: int = 1) -> torch.device:
    """One CPU thread (2 shared cores: no OpenMP spinning) and the resolved device."""
    from datafree.utils import resolve_device

    torch.set_num_threads(threads)
    return resolve_device(device)


def machine(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA), so wall time measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: Sequence[Callable[[], Any]], device: torch.device, reps: int, warmup: int = 3
) -> list[list[float]]:
    """Time each callable ``reps`` times, alternating them (A B A B ...), after ``warmup`` rounds.

    Returns:
        Seconds per call, one list per callable. Alternation spreads background load evenly over
        the candidates, so their medians (and the median of per-round ratios) are comparable.
    """
    times: list[list[float]] = [[] for _ in fns]
    for r in range(warmup + reps):
        for i, fn in enumerate(fns):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[i].append(time.perf_counter() - t0)
    return times


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[i] / b[i]`` (robust to load that changes between rounds)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def add_setting_options(ap: Any, iterations: bool = False) -> None:
    """``--num-images``, ``--epochs``, ``--batch-size`` (and ``--iterations``) as ``compress`` takes them.

    A bench passes what is given to ``compress`` as a user's options (the compute budget keeps them).
    """
    ap.add_argument("--num-images", type=int, default=None, help="as compress -n (a screen of one setting)")
    ap.add_argument("--epochs", type=int, default=None, help="as compress --epochs (KD)")
    ap.add_argument("--batch-size", type=int, default=None, help="as compress --batch-size (KD)")
    if iterations:
        ap.add_argument("--iterations", type=int, default=None, help="as compress --iterations")


def key_values(items: Sequence[str], flag: str, error: Callable[[str], Any]) -> dict[str, Any]:
    """``KEY=VALUE`` command-line items as a dict.

    Values that parse as JSON (numbers, booleans) are typed, anything else stays a string.
    ``error`` (e.g. ``ArgumentParser.error``) gets the message for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            error(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def bare_pass(
    model: torch.nn.Module, input_shape: Sequence[int], num_classes: int, batch: int
) -> Callable[[], None]:
    """The bare teacher forward+backward the synthesis step is compared with (a fixed random batch, seed 1).

    Cross-entropy to random labels, gradients to the input on: the least any synthesis step can cost.
    """
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch, *input_shape), generator=g).requires_grad_(True)
    y = torch.randint(0, num_classes, (batch,), generator=g)

    def bare() -> None:
        x.grad = None
        F.cross_entropy(model(x), y).backward()

    return bare
