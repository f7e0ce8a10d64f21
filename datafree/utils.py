"""Seeding, devices, atomic writes and hashing: small helpers every stage shares."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserInputError
from .progress import announce

__all__ = [
    "atomic_write",
    "ensure_dir",
    "remove_stale",
    "atomic_write_json",
    "atomic_torch_save",
    "device_of",
    "resolve_device",
    "seed_everything",
    "sha256_file",
    "torch_generator",
    "count_params",
    "model_size_bytes",
]


def field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's plain default values by field name (tuples as lists, as the settings are stored)."""
    return {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING
    }


def settings_match(saved: Any, current: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether stored settings are ``current``'s, for resuming.

    A key that ``saved`` lacks (a setting added since it was written) matches when ``current`` holds
    that setting's default, the behaviour of the version that wrote it.
    """
    if not isinstance(saved, dict):
        return False
    added = {k: defaults[k] for k in current.keys() - saved.keys() if k in defaults}
    return {**added, **saved} == current


def settings_diff(saved: Any, current: dict[str, Any], defaults: dict[str, Any], limit: int = 4) -> str:
    """Which stored settings differ from ``current``'s, for a refusal to resume: ``"epochs 60 -> 30"``.

    As :func:`settings_match` reads them (a key ``saved`` lacks counts at its default); at most ``limit``
    settings, in key order, then how many more. Empty when they match or ``saved`` is not a dict.
    """
    if not isinstance(saved, dict):
        return ""
    old = {**{k: defaults[k] for k in current.keys() - saved.keys() if k in defaults}, **saved}

    def shown(d: dict[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "(none)"

    keys = sorted(
        k for k in old.keys() | current.keys() if (k in old) != (k in current) or old[k] != current[k]
    )
    parts = [f"{k} {shown(old, k)} -> {shown(current, k)}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"{len(keys) - limit} more")
    return ", ".join(parts)


def settings_entry(name: str, saved: Any, current: dict[str, Any], defaults: dict[str, Any]) -> str:
    """An entry as a refusal names it, with what differs: ``"config: lr 0.1 -> 0.2"``, else ``name``."""
    diff = settings_diff(saved, current, defaults)
    return f"{name}: {diff}" if diff else name


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a parameter-less model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; anything else is parsed by torch."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserInputError(f"bad --device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name} asked for CUDA but no CUDA device is available")
    available = _DEVICE_AVAILABLE.get(dev.type)
    if available is None:
        raise UserInputError(f"--device {name}: datafree runs on cpu, cuda[:N], mps or xpu[:N]")
    if not available():
        raise UserInputError(f"--device {name} is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserInputError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    return dev


# Device types a run can use, with how to tell whether one is present (a table, not a ladder).
_DEVICE_AVAILABLE = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def ensure_dir(path: str | os.PathLike[str], *, quiet: bool = False) -> Path:
    """Create directory ``path`` (and its parents) if missing.

    The top directory it creates is announced on stderr unless ``quiet`` (the ``--out`` a user
    named needs no announcement).
    """
    p = Path(path)
    if p.is_dir():
        return p
    top = p
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    p.mkdir(parents=True, exist_ok=True)
    if not quiet:
        announce(f"created directory {top}")
    return p


def remove_stale(path: str | os.PathLike[str], why: str) -> None:
    """Delete ``path`` (a file or directory tree a previous run wrote) and say so on stderr."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
    else:
        return
    announce(f"removed stale {p} ({why})")


@contextlib.contextmanager
def eval_mode(model: nn.Module | None) -> Iterator[None]:
    """Inside the block ``model`` is in eval mode; after it, back in the mode it came in (None: nothing)."""
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        yield
    finally:
        if model is not None:
            model.train(was_training)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    A crash leaves either the old file or the new one, never a torn one. The file gets the
    permissions ``open()`` would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask like open() does
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (read by setting it and setting it back; no other way in the stdlib)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _packed_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights and biases that int8 modules keep packed for their kernels, outside ``parameters()``.

    A quantized conv and a quantized linear's ``LinearPackedParams`` unpack theirs with
    ``_weight_bias()``; the quantized ``Linear`` itself is skipped (its packed-params child counts).
    """
    out = []
    for m in model.modules():
        unpack = getattr(m, "_weight_bias", None)
        if callable(unpack) and not isinstance(getattr(m, "_packed_params", None), nn.Module):
            out.extend(t for t in unpack() if t is not None)
    return out


def count_params(model: nn.Module) -> int:
    """Number of parameters (an int8 model's packed weights and biases included)."""
    return sum(p.numel() for p in [*model.parameters(), *_packed_weights(model)])


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers at their stored dtypes.

    fp32 size for a float model; a real int8 model's packed weights count 1 byte each (their
    per-channel scales are not counted).
    """
    tensors = [*model.parameters(), *model.buffers(), *_packed_weights(model)]
    return sum(t.numel() * t.element_size() for t in tensors)
