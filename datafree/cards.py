"""Model cards: a JSON file describing a model, and safe loading / saving of the weights behind it.

A card holds ``arch``, ``weights`` (path relative to the card), ``num_classes``, ``input_shape``
``[C, H, W]``, ``mean`` and ``std`` (per channel, for pixels in [0, 1]), and informational
fields (``test_accuracy``, ``sha256`` of the weights, ``training``). ``arch`` is a registry name,
a torchvision name, ``package.module:callable`` or ``path/to/file.py:callable`` (relative paths
are relative to the card); the callable takes ``num_classes`` and returns an ``nn.Module``.
A pruned model's card also holds ``module_shapes`` ``{module name: {attribute: size}}``: the
layer sizes that differ from ``arch`` (see :mod:`datafree.reshape`); :func:`build_model` applies
them, so the card alone rebuilds the pruned architecture.
A real int8 model's card (``datafree quantize --int8``) also holds ``int8``
``{"engine", "flow", "keep_last_float"}``: :func:`load_model` rebuilds it from the float ``arch`` on
CPU (see :mod:`datafree.quant.int8_artefact`).

``arch`` may also be ``timm:NAME`` (the ``datafree[timm]`` extra). ``weights`` is a ``.safetensors``
file, a PyTorch checkpoint in any of the forms :mod:`datafree.checkpoints` reads (always with
``weights_only=True`` unless trusted), or, for a torchvision arch, ``torchvision:ENUM``
(``torchvision:IMAGENET1K_V1``) read from the torch hub cache.

Every float card is checked when loaded (:func:`check_forward`): one forward pass of a zero batch of
``input_shape`` must give ``(N, num_classes)`` logits. A model may return a tuple (its first tensor
is taken: ``(logits, features)``) or a dict (its ``"logits"``); such a model is then made to return
the logits alone for every stage (:func:`datafree.models.attach_logits_hook`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import extract_state_dict, load_checkpoint, match_state_dict, torchvision_weights_file
from .errors import UserInputError
from .models import attach_logits_hook, create_model, logits_of
from .normalize import Normalizer
from .reshape import apply_module_shapes
from .utils import atomic_write, atomic_write_json, ensure_dir, sha256_file

__all__ = [
    "ModelCard",
    "LoadedModel",
    "load_card",
    "load_model",
    "build_model",
    "save_model",
    "save_state",
    "read_safetensors",
    "check_forward",
    "portable_arch",
    "shipped_teachers",
    "resolve_card_path",
    "ASSETS_DIR",
    "DEFAULT_TEACHER",
    "INT8_FORMAT",
    "DEPLOYED_SUFFIXES",
    "save_card_beside",
    "deployed_card_path",
]

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
TEACHERS_DIR = ASSETS_DIR / "teachers"
DEFAULT_TEACHER = "resnet8_digits"
# The safetensors header's "format" of a real int8 model (see datafree/quant/int8_artefact.py).
INT8_FORMAT = "datafree-int8"
# Loaders of weights in a format other than a float state dict: format -> (card, weights path,
# trust_checkpoint) -> model. The module that writes a format registers its loader
# (datafree.quant.int8_artefact for int8, datafree.deploy for .onnx/.pt2; both imported by the
# package, so every ``import datafree...`` has them), so cards need not import them.
WEIGHT_LOADERS: dict[str, Callable[[ModelCard, Path, bool], nn.Module]] = {}
# Files written by ``datafree deploy``: their card is the file's path + ``.json`` (deployed_card_path).
DEPLOYED_SUFFIXES = (".onnx", ".pt2")


@dataclasses.dataclass
class ModelCard:
    """The contents of a ``model.json``; ``path`` is where it was read from (not serialised)."""

    arch: str
    weights: str
    num_classes: int
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    name: str = ""
    arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    module_shapes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    sha256: str | None = None
    test_accuracy: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def in_channels(self) -> int:
        """Input channels C."""
        return int(self.input_shape[0])

    def normalizer(self) -> Normalizer:
        """The card's pixel normaliser."""
        return Normalizer(self.mean, self.std)

    @property
    def is_int8(self) -> bool:
        """Whether the card describes a real int8 model (an ``int8`` field); such a model runs on CPU only."""
        return "int8" in self.extra

    def weights_path(self) -> Path:
        """Absolute path of the weights file (for ``torchvision:ENUM``: its file in the torch hub cache)."""
        if self.weights.startswith("torchvision:"):
            return torchvision_weights_file(self.arch, self.weights)
        base = self.path.parent if self.path else Path.cwd()
        return (base / self.weights).resolve()

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict: the known fields then ``extra`` merged at top level."""
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "path")
        }
        for key in ("arch_kwargs", "module_shapes"):
            if not d[key]:
                del d[key]
        d.update(self.extra)
        return d


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "arch": str,
    "weights": str,
    "num_classes": int,
    "input_shape": list,
    "mean": list,
    "std": list,
}


def _check_required(d: Any, where: str) -> None:
    """Refuse a card that is not an object or lacks a required field of the right type."""
    if not isinstance(d, dict):
        raise UserInputError(f"{where}: a model card must be a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in d:
            raise UserInputError(f"{where}: missing field {key!r}")
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            raise UserInputError(f"{where}: field {key!r} must be {typ.__name__}, got {d[key]!r}")


def _check_shape(d: dict[str, Any], where: str) -> None:
    """Refuse an ``input_shape`` that is not ``[C, H, W]`` within limits, or ``num_classes`` out of range."""
    shape = d["input_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise UserInputError(f"{where}: input_shape must be [C, H, W] of positive ints, got {shape!r}")
    from .validate import MAX_CHANNELS, MAX_CLASSES, MAX_INPUT_VALUES, MAX_SIDE, check_int

    check_int(d["num_classes"], f"{where}: num_classes", 1, MAX_CLASSES)
    check_int(shape[0], f"{where}: input_shape channels", 1, MAX_CHANNELS)
    for v in shape[1:]:
        check_int(v, f"{where}: input_shape height/width", 1, MAX_SIDE)
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES:
        raise UserInputError(
            f"{where}: input_shape {shape} holds more than {MAX_INPUT_VALUES} values per image"
        )


def _check_normalisation(d: dict[str, Any], where: str) -> None:
    """Refuse ``mean``/``std`` that are not one finite number per channel, or a ``std`` that is not > 0."""
    shape = d["input_shape"]
    for key in ("mean", "std"):
        vals = d[key]
        if len(vals) != shape[0] or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals
        ):
            raise UserInputError(f"{where}: {key} must be {shape[0]} numbers (one per channel), got {vals!r}")
    if not all(math.isfinite(v) for v in [*d["mean"], *d["std"]]):
        raise UserInputError(
            f"{where}: mean and std must be finite numbers, got {d['mean']!r} and {d['std']!r}"
        )
    if any(v <= 0 for v in d["std"]):
        raise UserInputError(f"{where}: std values must be > 0, got {d['std']!r}")


def _check_optional(d: dict[str, Any], where: str) -> None:
    """Refuse optional fields of the wrong type, and ``module_shapes`` sizes that are not positive ints."""
    from .validate import MAX_INT, check_int

    for key, typ in (("arch_kwargs", dict), ("module_shapes", dict), ("sha256", str), ("name", str)):
        if d.get(key) is not None and not isinstance(d[key], typ):
            raise UserInputError(f"{where}: field {key!r} must be {typ.__name__}")
    for module, sizes in (d.get("module_shapes") or {}).items():
        if not isinstance(sizes, dict):
            raise UserInputError(
                f"{where}: module_shapes[{module!r}] must be an object {{attribute: size}}, got {sizes!r}"
            )
        for attr, size in sizes.items():
            check_int(size, f"{where}: module_shapes[{module!r}][{attr!r}]", 1, MAX_INT)
    if d.get("test_accuracy") is not None and (
        not isinstance(d["test_accuracy"], (int, float)) or isinstance(d["test_accuracy"], bool)
    ):
        raise UserInputError(f"{where}: field 'test_accuracy' must be a number, got {d['test_accuracy']!r}")


def _validate(d: Any, where: str) -> ModelCard:
    _check_required(d, where)
    _check_shape(d, where)
    _check_normalisation(d, where)
    _check_optional(d, where)
    known = {f.name for f in dataclasses.fields(ModelCard)}
    kwargs = {k: d[k] for k in known if k in d and k not in ("extra", "path")}
    kwargs["mean"] = [float(v) for v in d["mean"]]
    kwargs["std"] = [float(v) for v in d["std"]]
    extra = {k: v for k, v in d.items() if k not in known}
    return ModelCard(**kwargs, extra=extra)


def shipped_teachers() -> dict[str, Path]:
    """Name -> card path of the teachers shipped in ``assets/teachers``."""
    if not TEACHERS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(TEACHERS_DIR.glob("*.json"))}


def resolve_card_path(spec: str | Path) -> Path:
    """A shipped teacher name, a card path, or a directory holding ``model.json`` -> card path."""
    shipped = shipped_teachers()
    if isinstance(spec, str) and spec in shipped:
        return shipped[spec]
    p = Path(spec)
    if p.is_dir() and (p / "model.json").is_file():
        return p / "model.json"
    if p.suffix in DEPLOYED_SUFFIXES and p.is_file():
        card = deployed_card_path(p)
        if not card.is_file():
            raise UserInputError(f"{p} has no card beside it ({card.name}, written by datafree deploy)")
        return card
    if p.is_file():
        return p
    names = ", ".join(shipped) or "none"
    raise UserInputError(f"model card not found: {spec} (shipped teachers: {names})")


def load_card(spec: str | Path) -> ModelCard:
    """Read and validate a card given by shipped name, path, or directory."""
    path = resolve_card_path(spec)
    from .validate import read_json

    d = read_json(path, "model card")
    card = _validate(d, str(path))
    card.path = path.resolve()
    return card


def _import_callable(spec: str, base: Path | None) -> Any:
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_absolute() and base is not None:
                file = base / file
            if not file.is_file():
                raise UserInputError(f"arch file not found: {file}")
            mod_name = f"datafree_user_arch_{abs(hash(str(file.resolve())))}"
            module = sys.modules.get(mod_name)
            if module is None:
                spec_ = importlib.util.spec_from_file_location(mod_name, file)
                assert spec_ is not None and spec_.loader is not None
                module = importlib.util.module_from_spec(spec_)
                sys.modules[mod_name] = module
                spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        fn = getattr(module, attr)
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 - user code may raise anything on import
        raise UserInputError(f"cannot import arch {spec!r}: {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise UserInputError(f"arch {spec!r} is not callable")
    return fn


def portable_arch(card: ModelCard) -> str:
    """The card's ``arch`` with a relative ``file.py:callable`` made absolute.

    A card written into another directory (a quantized or int8 copy) still finds the file.
    """
    target, sep, attr = card.arch.rpartition(":")
    if sep and target.endswith(".py") and card.path is not None and not Path(target).is_absolute():
        return f"{(card.path.parent / target).resolve()}:{attr}"
    return card.arch


def build_model(card: ModelCard) -> nn.Module:
    """Instantiate the card's architecture, randomly initialised (no weights loaded).

    The card's ``module_shapes`` (a pruned model) resize the named layers after construction.
    """
    model = _build_arch(card)
    if card.module_shapes:
        apply_module_shapes(model, card.module_shapes)
    return model


def _build_arch(card: ModelCard) -> nn.Module:
    if ":" in card.arch and not card.arch.startswith(("torchvision:", "timm:")):
        fn = _import_callable(card.arch, card.path.parent if card.path else None)
        try:
            model = fn(num_classes=card.num_classes, **card.arch_kwargs)
        except Exception as e:  # noqa: BLE001
            raise UserInputError(f"arch {card.arch!r} failed to build: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise UserInputError(f"arch {card.arch!r} returned {type(model).__name__}, not an nn.Module")
        return attach_logits_hook(model)  # a (logits, features) model gives its logits to every stage
    try:
        return create_model(card.arch, card.num_classes, card.in_channels, **card.arch_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, UserInputError):
            raise
        msg = " ".join(str(e).split())[:200]
        raise UserInputError(
            f"arch {card.arch!r} failed to build with arch_kwargs {card.arch_kwargs}: {msg}"
        ) from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of a ``.safetensors`` file (no pickle involved).

    Args:
        path: the file.

    Returns:
        ``({name: tensor on CPU}, {metadata key: string})``.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise UserInputError(f"{path}: corrupt or unreadable safetensors file ({e})") from None


def _read_state_dict(path: Path, trust_checkpoint: bool) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise UserInputError(f"weights path {path} is a directory, not a weights file")
    if not path.is_file():
        raise UserInputError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") == INT8_FORMAT:
            raise UserInputError(
                f"{path} holds a real int8 model but its card has no 'int8' field; "
                "load it through the card written beside it by datafree quantize --int8"
            )
        return tensors
    return extract_state_dict(load_checkpoint(path, trust_checkpoint), str(path))


def _load_float(card: ModelCard, wpath: Path, trust_checkpoint: bool) -> nn.Module:
    state = _read_state_dict(wpath, trust_checkpoint)
    model = build_model(card)
    state = match_state_dict(state, model, wpath.name, card.arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t", 2)
        detail = first[1].strip() if len(first) > 1 else str(e)
        detail = detail if len(detail) <= 200 else detail[:200] + "…"
        raise UserInputError(f"weights {wpath.name} do not match arch {card.arch!r}: {detail}") from None
    return model


def _describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(
            _describe_output(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out[:3]
        )
        return f"a {type(out).__name__} of {len(out)} ({inner})"
    if isinstance(out, dict):
        return f"a dict with keys {', '.join(map(repr, list(out)[:5]))}"
    return f"a {type(out).__name__}"


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first conv or linear layer in module order (the one that reads the input, usually)."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)


@torch.no_grad()
def check_forward(
    model: nn.Module, card: ModelCard, batch: int = 2, *, what: str | None = None
) -> torch.Tensor:
    """One forward pass of a zero batch of the card's ``input_shape``; the output must be the logits.

    The output may be a tensor, a tuple or list (its first tensor) or a dict (its ``"logits"``),
    of shape ``(batch, num_classes)``. The model must be in eval mode (BatchNorm on a zero batch).

    Args:
        model: the card's model, on its device.
        card: its card.
        batch: N of the zero batch.
        what: how to name the model in messages (default: the card's path, name or arch).

    Returns:
        The logits ``(batch, num_classes)``.

    Raises:
        UserInputError: the forward pass failed (wrong input channels, too small an input) or gave
            something else; one line saying what came out.
    """
    where = what or str(card.path or card.name or card.arch)
    param = next(iter(model.parameters()), None)
    x = torch.zeros(batch, *card.input_shape, device=param.device if param is not None else "cpu")
    try:
        out = model(x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's model is reported in one line
        first = _first_layer(model)
        c = card.in_channels
        # a torchvision model for C != 3 starts with a channel repeat (datafree.models): not a channel error
        adapted = (
            isinstance(model, nn.Sequential)
            and len(model) > 0
            and type(model[0]).__name__ == "_RepeatChannels"
        )
        if (
            first is not None
            and not adapted
            and isinstance(first[1], nn.Conv2d)
            and first[1].in_channels != c
        ):
            raise UserInputError(
                f"{where}: input_shape {card.input_shape} says {c} channel(s) but the model's first layer "
                f"({first[0]}) takes {first[1].in_channels}; fix input_shape (and mean/std) in the card"
            ) from None
        msg = " ".join(str(e).split())[:200]
        raise UserInputError(
            f"{where}: a forward pass of a zero batch of input_shape {card.input_shape} failed "
            f"({type(e).__name__}: {msg}); check input_shape and arch"
        ) from None
    logits = logits_of(out)
    if logits is None or tuple(logits.shape) != (batch, card.num_classes):
        got = _describe_output(out)
        if logits is not None and logits is not out:
            got += f" whose logits are {_describe_output(logits)}"
        raise UserInputError(
            f"{where}: the model returned {got} for a batch of {batch}; expected logits "
            f"({batch}, {card.num_classes}) (num_classes in the card): a tensor, a tuple whose first tensor "
            "is the logits, or a dict with 'logits'"
        )
    if logits is not out:
        attach_logits_hook(model)
    return logits


@dataclasses.dataclass
class LoadedModel:
    """A model with its card. ``model`` is in eval mode on the requested device."""

    model: nn.Module
    card: ModelCard


def load_model(
    spec: str | Path | ModelCard,
    device: torch.device | str = "cpu",
    *,
    trust_checkpoint: bool = False,
    check_sha256: bool = True,
    frozen: bool = True,
) -> LoadedModel:
    """Load a model from its card: build the arch, load the weights safely, check the hash.

    Args:
        spec: shipped teacher name, card path, directory with ``model.json``, or a card.
        device: where to put the model.
        trust_checkpoint: allow a pickled (non weights-only) checkpoint.
        check_sha256: verify the weights against the card's ``sha256`` when it has one.
        frozen: put the model in eval mode with parameter gradients off (a teacher).

    Returns:
        The model and its card. An int8 card (``int8`` field) gives the int8 ``GraphModule``; it
        loads on CPU only (another ``device`` is refused) and never from a pickle.
    """
    card = spec if isinstance(spec, ModelCard) else load_card(spec)
    wpath = card.weights_path()
    if (card.is_int8 or card.extra.get("format") is not None) and torch.device(device).type != "cpu":
        what = (
            f"a deployed {card.extra['format']} model"
            if card.extra.get("format")
            else "a real int8 model (x86 engine)"
        )
        raise UserInputError(
            f"{card.path or card.name}: {what} runs on CPU only, not on {device}; "
            "load it on cpu (--device cpu)"
        )
    if check_sha256 and card.sha256 and wpath.is_file():
        actual = sha256_file(wpath)
        if actual != card.sha256:
            raise UserInputError(
                f"{wpath}: sha256 {actual[:12]}… does not match the card's {card.sha256[:12]}…"
            )
    fmt = card.extra.get("format")
    if fmt is not None:  # written by datafree deploy: .onnx or .pt2
        if fmt not in WEIGHT_LOADERS:
            raise UserInputError(f"{card.path}: unknown model format {fmt!r}")
        model = WEIGHT_LOADERS[fmt](card, wpath, trust_checkpoint)
    elif card.is_int8:
        model = WEIGHT_LOADERS[INT8_FORMAT](card, wpath, trust_checkpoint)
    else:
        model = _load_float(card, wpath, trust_checkpoint)
    model.to(device).eval()
    if not card.is_int8:
        check_forward(model, card)
    if frozen:
        model.requires_grad_(False)
    return LoadedModel(model, card)


def save_model(
    model: nn.Module,
    out_dir: str | Path,
    *,
    like: ModelCard | None = None,
    arch: str | None = None,
    name: str = "model",
    **fields: Any,
) -> ModelCard:
    """Write ``out_dir/{name}.safetensors`` and ``out_dir/{name}.json`` atomically.

    Args:
        model: the model to save.
        out_dir: destination directory (created).
        like: card to copy ``num_classes``, ``input_shape``, ``mean``, ``std`` from.
        arch: architecture name of ``model`` (defaults to ``like.arch``).
        name: file stem.
        **fields: further card fields (``test_accuracy``, ``arch_kwargs``, extra info).

    Returns:
        The card as written.
    """
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return save_state(state, out_dir, like=like, arch=arch, name=name, **fields)


def save_state(
    state: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    like: ModelCard | None = None,
    arch: str | None = None,
    name: str = "model",
    metadata: dict[str, str] | None = None,
    **fields: Any,
) -> ModelCard:
    """Write plain tensors as ``out_dir/{name}.safetensors`` and their card ``{name}.json``, atomically.

    Args:
        state: contiguous CPU tensors (no quantized ones: safetensors cannot hold them).
        out_dir: destination directory (created).
        like: card to copy ``num_classes``, ``input_shape``, ``mean``, ``std`` from.
        arch: architecture name (defaults to ``like.arch``).
        name: file stem.
        metadata: string pairs for the safetensors header (covered by the card's ``sha256``).
        **fields: further card fields (``test_accuracy``, ``arch_kwargs``, extra info).

    Returns:
        The card as written.
    """
    from safetensors.torch import save as st_save

    out = ensure_dir(out_dir)
    with atomic_write(out / f"{name}.safetensors") as f:
        f.write(st_save(state, metadata=metadata))
    base = {}
    if like is not None:
        base = {k: getattr(like, k) for k in ("num_classes", "input_shape", "mean", "std")}
        # the task's data and class names carry over to a model derived from ``like`` (see datafree.evaluate)
        base.update({k: like.extra[k] for k in ("trained_on", "classes") if k in like.extra})
    base.update(
        {k: fields.pop(k) for k in list(fields) if k in ("num_classes", "input_shape", "mean", "std")}
    )
    card = _validate(
        {
            "name": fields.pop("card_name", name),
            "arch": arch or (like.arch if like else ""),
            "weights": f"{name}.safetensors",
            **base,
            "sha256": sha256_file(out / f"{name}.safetensors"),
            **fields,
        },
        str(out / f"{name}.json"),
    )
    atomic_write_json(out / f"{name}.json", card.to_json())
    card.path = (out / f"{name}.json").resolve()
    return card


def deployed_card_path(path: str | Path) -> Path:
    """The card of a deployed file: ``model.onnx`` -> ``model.onnx.json``.

    The full file name is kept, since an .onnx and a .pt2 may share a stem.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_card_beside(path: Path, like: ModelCard, **fields: Any) -> ModelCard:
    """Write the card of a deployed file (``model.onnx`` -> ``model.onnx.json``) atomically.

    Args:
        path: the deployed file.
        like: the source model's card (input spec, classes, accuracy; arch fields kept as ``source``).
        **fields: further fields (``sha256``, ``deploy`` information).

    Returns:
        The card as written.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    source = {
        k: v
        for k, v in like.to_json().items()
        if k not in ("weights", "sha256", "num_classes", "input_shape", "mean", "std", "test_accuracy")
    }
    if like.path is not None:
        source["card"] = str(like.path)
    d = {"name": f"{like.name or 'model'}_{fmt}", "arch": fmt, "weights": path.name, "format": fmt,
         **{k: getattr(like, k) for k in ("num_classes", "input_shape", "mean", "std", "test_accuracy")},
         **{k: like.extra[k] for k in ("trained_on", "classes") if k in like.extra},  # what evaluate reads
         "source": source, **fields}  # fmt: skip
    card = _validate(d, str(deployed_card_path(path)))
    atomic_write_json(deployed_card_path(path), card.to_json())
    card.path = deployed_card_path(path).resolve()
    return card


def state_dict_bytes(model: nn.Module) -> bytes:
    """Serialise a state dict with ``torch.save`` into bytes (for checkpoints)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()
