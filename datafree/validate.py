"""Validation at the boundary: values read from the command line or from files, in ranges the machine holds.

Everything here raises :class:`~datafree.errors.UserInputError` (one line, exit status 2 in the CLI)
naming the bad value. The loaders (cards, manifests, checkpoints, generator files, npz) call these
helpers so that a hostile or corrupted input is refused before anything is computed or written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UserInputError

__all__ = [
    "MAX_INT",
    "MAX_THREADS",
    "MAX_CLASSES",
    "MAX_SIDE",
    "MAX_CHANNELS",
    "MAX_INPUT_VALUES",
    "read_json",
    "check_int",
    "check_float",
    "check_json_tree",
    "check_out_path",
]

# The largest count any option or file field may hold: a C int (tqdm, torch and numpy take these).
MAX_INT = 2**31 - 1
MAX_THREADS = 4096
MAX_CLASSES = 1_000_000
MAX_SIDE = 16_384
MAX_CHANNELS = 1024
MAX_INPUT_VALUES = 2**26  # values per image (C * H * W): 256 MiB of float32
_MAX_DEPTH = 32


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file we did not write ourselves (or that someone may have edited).

    Refuses unreadable bytes, invalid JSON, nesting deeper than 32 levels, integers with thousands
    of digits and non-standard constants (``NaN``, ``Infinity``) as one-line user errors.

    Args:
        path: the file.
        what: how to call it in messages (``model card``, ``manifest``).

    Returns:
        The parsed value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read {what} {path}: {e}") from None
    return parse_json(text, f"{path}", what)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str, where: str, what: str = "JSON") -> Any:
    """:func:`read_json` on a string already read; ``where`` names its origin in messages."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise UserInputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise UserInputError(f"{where}: {what} is nested too deeply") from None
    except ValueError as e:  # an integer of thousands of digits, NaN / Infinity
        raise UserInputError(f"{where}: invalid {what} ({' '.join(str(e).split())[:120]})") from None
    check_json_tree(value, where)
    return value


def check_json_tree(value: Any, where: str) -> None:
    """Refuse nesting deeper than 32 levels and integers outside a signed 64-bit range."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise UserInputError(f"{where}: nested too deeply (more than {_MAX_DEPTH} levels)")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63 - 1:
            raise UserInputError(f"{where}: integer {str(v)[:20]}... is too large")
        elif isinstance(v, float) and not math.isfinite(v):
            raise UserInputError(f"{where}: non-finite number {v}")


def check_int(value: Any, name: str, lo: int = 1, hi: int = MAX_INT) -> int:
    """``value`` as an int in ``[lo, hi]`` (bools and other types refused)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserInputError(f"{name} must be an integer, got {str(value)[:40]!r}")
    if not lo <= value <= hi:
        shown = str(value) if len(str(value)) <= 20 else str(value)[:20] + "..."
        raise UserInputError(f"{name} must be in [{lo}, {hi}], got {shown}")
    return value


def check_float(
    value: Any, name: str, lo: float = -math.inf, hi: float = math.inf, positive: bool = False
) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (and ``> 0`` when ``positive``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise UserInputError(f"{name} must be a number, got {str(value)[:40]!r}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi or (positive and v <= 0):
        raise UserInputError(
            f"{name} must be a finite number in [{lo}, {hi}]{' and > 0' if positive else ''}, got {v}"
        )
    return v


def check_out_path(path: str | Path, option: str = "--out") -> Path:
    """An output path we can create: not the filesystem root, no symlink loop, a real name.

    Args:
        path: the path given.
        option: the option's name, for the message.

    Returns:
        ``path`` as a :class:`Path`.
    """
    p = Path(path)
    try:
        resolved = p.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError on Python < 3.13)
        raise UserInputError(
            f"{option} {p}: cannot resolve the path ({' '.join(str(e).split())[:80]})"
        ) from None
    if resolved == Path(resolved.anchor) or not resolved.name:
        raise UserInputError(f"{option} {p} is the filesystem root; choose a new directory or file")
    return p


def tensor_digest(tensors: Any) -> str:
    """sha256 of named tensors (a state dict or ``{name: tensor}``): names, shapes, dtypes and values.

    Quantized tensors are hashed by their dequantized values; other objects by their ``repr``.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, v in sorted(tensors.items(), key=lambda kv: str(kv[0])):
        h.update(str(name).encode())
        if isinstance(v, torch.Tensor):
            t = v.detach()
            if t.is_quantized:
                t = t.dequantize()
            t = t.cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            if t.dtype in (torch.bfloat16, torch.float16, torch.bool) or t.is_complex():
                t = t.to(torch.float64) if not t.is_complex() else torch.view_as_real(t)
            h.update(t.numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()
