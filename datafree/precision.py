"""Mixed precision, channels_last and compiled modules: one switch for every training loop.

The command line sets the options once per process (:func:`configure`, from ``--precision``,
``--channels-last`` and ``--compile``); the hot loops (DeepInversion, the online generators, the
KD stage and therefore pruning recovery and quantization fine-tuning) ask this module for

* :func:`autocast`: ``torch.autocast`` in bf16 or fp16 around the network forward passes (a no-op in
  fp32). Losses and BatchNorm statistics are reduced in fp32 (:func:`fp32`, ``datafree.hooks``);
* :func:`grad_scaler`: a ``torch.amp.GradScaler`` enabled only in fp16 (loss scaling: fp16 gradients
  underflow without it; bf16 has fp32's exponent range and needs none);
* :func:`prepare_module` / :func:`prepare_input`: channels_last memory format for 4-D tensors;
* :func:`maybe_compile`: ``torch.compile`` of a module when ``--compile`` is on.

Defaults (``precision="auto"``) are chosen per device and loop by measurement (docs/speed.md): on
CUDA bf16 where supported, else fp16 (NVlabs DeepInversion's mixed-precision practice; no GPU has run
it here yet); fp32 on CPUs (bf16 pixel synthesis is faster on CPUs with native bf16, see
:data:`AUTO_CPU_BF16`, but its fidelity is not yet shown).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UserInputError

__all__ = [
    "PRECISIONS",
    "RunOptions",
    "configure",
    "options",
    "resolve_precision",
    "autocast",
    "fp32",
    "grad_scaler",
    "prepare_module",
    "prepare_input",
    "maybe_compile",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 pixel synthesis is 1.6-1.9x faster on this kind of CPU (docs/speed.md), but its fidelity is not
# shown: bench/precision_fidelity.py (short budget, 2 seeds) gave students 5-11 points lower on
# resnet18_32 and 4 points higher on resnet8_digits than fp32. On compress's default path
# (bench/precision_default_path.py, 3 seeds) bf16+channels_last made the whole job 1.55x faster (CPU
# time) on resnet18_32 with students 0.56 points lower, 1.25x and 0.65 points higher on resnet8_digits:
# not within 0.5 points, so off by default (``--precision bf16 --channels-last``).
AUTO_CPU_BF16 = False
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunOptions:
    """The process-wide speed options (see the module docstring)."""

    precision: str = "fp32"  # pixel synthesis (DeepInversion): fp32 | bf16 | fp16 (resolved; never "auto")
    channels_last: bool = False
    compile: bool = False
    kd_precision: str = "fp32"  # the KD stage (student training, pruning recovery, quantization fine-tuning)
    generator_precision: str = "fp32"  # the online generators' steps (DAFL, ZSKT, DFAD)


_OPTIONS = RunOptions()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16; Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device | str, loop: str = "synthesis") -> str:
    """``auto`` -> the measured default for ``device`` and ``loop``; fp16 on CPU is refused clearly.

    ``auto`` is bf16 (fp16 where bf16 is unsupported) on CUDA; on a CPU with native bf16 it is bf16
    for pixel synthesis (``loop="synthesis"``: the teacher's forward+backward dominates) and fp32 for
    the KD stage (``"kd"``) and the online generators (``"generator"``), whose fidelity in bf16 was not
    checked (docs/speed.md); fp32 otherwise.

    Raises:
        UserInputError: an unknown precision, or fp16 on a CPU.
    """
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise UserInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if AUTO_CPU_BF16 and loop == "synthesis" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise UserInputError(
            "--precision fp16 needs a GPU (CPU kernels have no fast fp16 path); use bf16 or fp32 on CPU"
        )
    return precision


def configure(
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    device: torch.device | str = "cpu",
) -> RunOptions:
    """Set the process-wide options (the CLI calls this once per command); returns them."""
    global _OPTIONS
    _OPTIONS = RunOptions(
        resolve_precision(precision, device),
        bool(channels_last),
        bool(compile),
        resolve_precision(precision, device, "kd"),
        resolve_precision(precision, device, "generator"),
    )
    return _OPTIONS


def options() -> RunOptions:
    """The current options."""
    return _OPTIONS


def _loop_precision(loop: str) -> str:
    loops = {"kd": _OPTIONS.kd_precision, "generator": _OPTIONS.generator_precision}
    return loops.get(loop, _OPTIONS.precision)


def autocast(device: torch.device | str, loop: str = "synthesis") -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` at the precision of ``loop`` (synthesis, generator, kd); a no-op in fp32."""
    p = _loop_precision(loop)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[p])


@contextlib.contextmanager
def _no_autocast(device_type: str) -> Iterator[None]:
    with torch.autocast(device_type, enabled=False):
        yield


def fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 (losses and statistics are reduced in fp32 under any precision)."""
    return x if x.dtype == torch.float32 or not x.is_floating_point() else x.float()


def grad_scaler(device: torch.device | str, loop: str = "synthesis") -> torch.amp.GradScaler:
    """A gradient scaler for ``loop``, enabled in fp16 only (a pass-through otherwise)."""
    dev = torch.device(device)
    return torch.amp.GradScaler(dev.type, enabled=_loop_precision(loop) == "fp16")


def prepare_module(module: nn.Module) -> nn.Module:
    """``module`` in channels_last memory format when that option is on (in place; returned)."""
    if _OPTIONS.channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in channels_last memory format when that option is on."""
    if _OPTIONS.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def maybe_compile(module: nn.Module) -> nn.Module:
    """``torch.compile(module)`` when ``--compile`` is on, else ``module`` itself."""
    if not _OPTIONS.compile:
        return module
    return torch.compile(module)  # type: ignore[return-value]
