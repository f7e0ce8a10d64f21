"""Reading a user's checkpoint into a state dict that matches an architecture, without running code.

The forms found in the wild, all read with ``torch.load(weights_only=True)``:

- a bare state dict ``{name: tensor}`` (``torch.save(model.state_dict(), f)``);
- a training checkpoint holding it under ``state_dict``, ``model``, ``model_state_dict``,
  ``state_dict_ema`` or ``net`` (the first present, in that order) beside plain values
  (``epoch``, ``best_acc``, optimizer state; numpy scalars are allowed);
- keys prefixed by ``module.`` (``DataParallel`` / ``DistributedDataParallel``) or ``_orig_mod.``
  (``torch.compile``), in any nesting: stripped when every key has the prefix and the
  architecture's own keys do not.

:func:`match_state_dict` names the first few missing and unexpected keys and the shape
differences when a file does not fit the architecture, and says what to check.
torchvision's pretrained weights are named by their enum (``"weights": "torchvision:IMAGENET1K_V1"``)
and read from the torch hub cache (:func:`torchvision_weights_file`); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import UserInputError

__all__ = [
    "STATE_DICT_KEYS",
    "WRAPPER_PREFIXES",
    "load_checkpoint",
    "extract_state_dict",
    "strip_wrapper_prefixes",
    "match_state_dict",
    "torchvision_weights",
    "torchvision_weights_file",
]

# where training scripts put the weights inside a checkpoint dict, in the order they are tried
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "net")
# prefixes that wrappers add to every key: DataParallel / DDP, torch.compile
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 3  # how many keys an error names


def _numpy_safe_globals() -> list[Any]:
    """Numpy scalars and numeric arrays (``best_acc`` saved as ``np.float64``): data, not code."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a core dependency
        return []
    core = getattr(np, "_core", None) or np.core
    found = [np.dtype, np.ndarray, core.multiarray.scalar, core.multiarray._reconstruct]
    found += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")]
    return found


@contextlib.contextmanager
def _allow_numpy() -> Iterator[None]:
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        yield


def load_checkpoint(path: Path, trust_checkpoint: bool = False) -> Any:
    """``torch.load`` on CPU, weights-only unless ``trust_checkpoint``; one-line errors.

    Args:
        path: a ``.pt`` / ``.pth`` / ``.bin`` file.
        trust_checkpoint: allow arbitrary pickled objects (runs code from the file).

    Returns:
        Whatever the file holds.
    """
    try:
        with _allow_numpy():
            return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise UserInputError(
                f"{path} holds pickled Python objects, not plain weights; it is refused by default "
                "because unpickling can run code. Pass --trust-checkpoint if you trust its source"
            ) from None
        raise UserInputError(f"{path}: corrupt checkpoint ({e})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise UserInputError(f"{path}: corrupt or truncated checkpoint ({first})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the object itself, or under one of :data:`STATE_DICT_KEYS`.

    Args:
        obj: what :func:`load_checkpoint` returned (a whole module only when trusted).
        where: the file, for messages.

    Returns:
        ``{name: tensor}``.
    """
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if _is_state_dict(inner):
                return dict(inner)
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise UserInputError(
            f"{where}: no state dict found: expected a dict of tensors or one under "
            f"{', '.join(map(repr, STATE_DICT_KEYS))}; the file's top-level keys are {keys or 'none'}"
        )
    raise UserInputError(f"{where}: expected a state dict of tensors, got {type(obj).__name__}")


def strip_wrapper_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` (any nesting) where every key has it and ``expected`` do not."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _few(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


# The auxiliary classifiers of torchvision's GoogLeNet and Inception-v3, which torchvision builds (and a
# model trained from scratch saves) by default and datafree.models builds without: KD, evaluation and
# export read the main logits only. A file's keys under them are left out.
AUX_HEADS = {"googlenet": {"aux1", "aux2"}, "inception_v3": {"AuxLogits"}}


def with_module_versions(
    state: dict[str, torch.Tensor], model: nn.Module, expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with the version of each of ``model``'s modules, where the file recorded none.

    ``Module.state_dict()`` records each module's ``_version`` beside the tensors (``_metadata``), and
    a module's loading may read it: torchvision's MNASNet raises without one. A safetensors file
    cannot hold it, nor can a dict rebuilt from a checkpoint, so such a file loads as written by the
    installed library. A BatchNorm layer whose ``num_batches_tracked`` the file lacks gets no version,
    so that PyTorch fills the count in as it does for an old checkpoint.

    Args:
        state: the file's tensors, keys matched to ``model``'s.
        model: the architecture the card names.
        expected: ``model.state_dict()``.

    Returns:
        ``state`` itself when it has versions, else an ``OrderedDict`` of its tensors with ``_metadata``.
    """
    if getattr(state, "_metadata", None) is not None:
        return state
    out: Any = OrderedDict(state)
    out._metadata = OrderedDict(
        (name, {"version": m._version})
        for name, m in model.named_modules()
        if not ((k := f"{name}.num_batches_tracked".lstrip(".")) in expected and k not in state)
    )
    return out


def match_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, where: str, arch: str
) -> dict[str, torch.Tensor]:
    """``state`` with wrapper prefixes removed, checked key by key and shape by shape against ``model``.

    A BatchNorm ``num_batches_tracked`` missing from an old checkpoint is not an error (PyTorch
    fills it in), nor are the auxiliary classifiers of torchvision's GoogLeNet and Inception-v3
    (:data:`AUX_HEADS`: trained with them by default, built without them here). Anything else that
    differs raises one line naming the first few missing and unexpected keys and the first shape
    differences, with what to check. A file that recorded no module versions (safetensors cannot;
    :func:`with_module_versions`) gets the model's own.

    Args:
        state: the file's tensors.
        model: the architecture the card names, freshly built.
        where: the weights file, for messages.
        arch: the card's ``arch``, for messages.

    Returns:
        The state dict to pass to ``model.load_state_dict(strict=True)``.
    """
    expected = model.state_dict()
    state = strip_wrapper_prefixes(state, set(expected))
    if heads := AUX_HEADS.get(arch.removeprefix("torchvision:")):
        state = {k: v for k, v in state.items() if not heads & set(k.split("."))}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} in the file vs {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return with_module_versions(state, model, expected)
    parts = []
    if missing:
        parts.append(f"missing keys {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_few(unexpected)}")
    if shapes:
        parts.append(f"shape differences: {'; '.join(shapes[:2])}{' ...' if len(shapes) > 2 else ''}")
    check = "check that the card's arch (and arch_kwargs) is the architecture the file was saved from"
    if shapes and not (missing or unexpected):
        check = "check the card's num_classes and input_shape channels (and arch_kwargs such as widths)"
    if arch.removeprefix("torchvision:") != arch or arch.startswith("timm:"):
        check += "; the file must hold the library's own layer names"
    raise UserInputError(f"weights {where} do not match arch {arch!r}: {'; '.join(parts)}; {check}")


def torchvision_weights(arch: str, weights: str) -> Any:
    """The torchvision weights enum member named by ``weights`` (``torchvision:IMAGENET1K_V1``) for ``arch``.

    Args:
        arch: ``torchvision:NAME`` or a bare torchvision model name.
        weights: ``torchvision:ENUM`` where ENUM is a member of the model's weights enum
            (``IMAGENET1K_V1``, ``DEFAULT``; ``ResNet18_Weights.IMAGENET1K_V1`` also works).

    Returns:
        The ``torchvision.models.WeightsEnum`` member (its ``url`` and ``meta``).
    """
    import torchvision

    name = arch.removeprefix("torchvision:")
    member = weights.removeprefix("torchvision:").rpartition(".")[2]
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError, AttributeError):
        raise UserInputError(
            f"weights {weights!r} name torchvision pretrained weights, but arch {arch!r} is not a "
            "torchvision "
            "model with any; use arch torchvision:NAME, or give a weights file"
        ) from None
    try:
        return enum[member]
    except KeyError:
        raise UserInputError(
            f"torchvision {name} has no weights {member!r}; choose from {', '.join(enum.__members__)}"
        ) from None


def torchvision_weights_file(arch: str, weights: str) -> Path:
    """Where the torch hub cache holds the file of ``weights``; a one-line error when it is not there.

    The cache is ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``); nothing is downloaded.
    """
    w = torchvision_weights(arch, weights)
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(w.url).path).name
    if not file.is_file():
        name = arch.removeprefix("torchvision:")
        member = weights.removeprefix("torchvision:").rpartition(".")[2]
        raise UserInputError(
            f"torchvision weights {name} {member} are not in the torch hub cache and nothing is "
            f"downloaded at run time: put {w.url} at {file} (or set TORCH_HOME to a cache that has it)"
        )
    return file
