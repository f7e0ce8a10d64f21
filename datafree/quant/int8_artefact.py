"""The real int8 model as a deployable artefact: ``model.safetensors`` + ``model.json``, no pickle.

safetensors holds plain tensors only, so each quantized tensor of the converted ``GraphModule``'s
``state_dict()`` is stored as its integer representation plus its quantization parameters, under
keys derived from its own::

    conv1.weight:int_repr      int8 (O, I, kH, kW)   per-channel qint8 weight
    conv1.weight:scales        float64 (O,)
    conv1.weight:zero_points   int64 (O,)
    x:int_repr, x:scale, x:zero_point               per-tensor (scale float64, zero point int64, 0-d)

Plain tensors keep their own key. The few non-tensor entries (a quantized ``Linear`` keeps
``_packed_params.dtype``, a ``torch.dtype``, and ``_packed_params._packed_params``, a
``(weight, bias)`` tuple) are described, like the per-channel ``axis``, by a JSON layout in the
safetensors header (``format`` = :data:`~datafree.cards.INT8_FORMAT`), which the card's ``sha256``
covers: ``{"entries": {key: spec}, "versions": {module prefix: {"version": n}}}``. The versions are
the state dict's ``_metadata``: quantized modules read their entries by version.

The card is the float model's card (``arch``, ``arch_kwargs``, ``module_shapes``: a pruned model
works too) plus ``int8`` ``{"engine": "x86", "flow": "fx", "keep_last_float": bool}``. Loading
rebuilds the float architecture, runs the same ``prepare_fx``/``convert_fx`` as
:func:`~datafree.quant.int8.export_int8` on one batch of zeros (only to obtain the graph), then
loads the stored state with strict key checking: outputs are bit-identical to the exported model.
The x86 (FBGEMM/oneDNN) int8 kernels run on CPU only.
"""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cards import INT8_FORMAT, ModelCard, build_model, portable_arch, read_safetensors, save_state
from ..errors import UserInputError
from .int8 import INT8_ENGINE, export_int8

__all__ = ["INT8_FLOW", "encode_state", "decode_state", "int8_settings", "save_int8", "load_int8"]

INT8_FLOW = "fx"
SEP = ":"  # derived keys: "<state key>:<part>" (a clash with a real key is refused when saving)

# The card's "int8" field: key -> accepted values (the first one's type is the required type).
_INT8_FIELDS: dict[str, tuple[Any, ...]] = {
    "engine": (INT8_ENGINE,),
    "flow": (INT8_FLOW,),
    "keep_last_float": (True, False),
}
_QDTYPES = {"qint8": torch.qint8, "quint8": torch.quint8, "qint32": torch.qint32}
_QDTYPE_NAMES = {v: k for k, v in _QDTYPES.items()}

_Encoder = Callable[[str, torch.Tensor, dict[str, torch.Tensor]], dict[str, Any]]  # (key, q, out) -> spec
_Take = Callable[[str], torch.Tensor]  # stored tensor by name, each taken once
_Decoder = Callable[[str, Mapping[str, Any], _Take], Any]  # (key, spec, take) -> state entry


def _qdtype_name(dtype: torch.dtype) -> str:
    if dtype not in _QDTYPE_NAMES:
        supported = ", ".join(_QDTYPES)
        raise UserInputError(f"int8 export: cannot store quantized dtype {dtype} (supported: {supported})")
    return _QDTYPE_NAMES[dtype]


# --- encoding: state entry -> plain tensors (added to ``out``) + a JSON spec -----------------------


def _put(out: dict[str, torch.Tensor], name: str, t: torch.Tensor) -> None:
    if name in out:
        raise UserInputError(f"int8 export: two state entries would be stored under {name!r}")
    out[name] = t.detach().cpu().contiguous()


def _encode_per_tensor(key: str, q: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    _put(out, f"{key}{SEP}int_repr", q.int_repr())
    _put(out, f"{key}{SEP}scale", torch.tensor(q.q_scale(), dtype=torch.float64))
    _put(out, f"{key}{SEP}zero_point", torch.tensor(q.q_zero_point(), dtype=torch.int64))
    return {"kind": "per_tensor", "dtype": _qdtype_name(q.dtype)}


def _encode_per_channel(key: str, q: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    _put(out, f"{key}{SEP}int_repr", q.int_repr())
    _put(out, f"{key}{SEP}scales", q.q_per_channel_scales().to(torch.float64))
    _put(out, f"{key}{SEP}zero_points", q.q_per_channel_zero_points().to(torch.int64))
    return {"kind": "per_channel", "dtype": _qdtype_name(q.dtype), "axis": int(q.q_per_channel_axis())}


_QSCHEME_ENCODERS: dict[torch.qscheme, _Encoder] = {
    torch.per_tensor_affine: _encode_per_tensor,
    torch.per_channel_affine: _encode_per_channel,
}


def _encode(key: str, value: Any, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    if isinstance(value, torch.Tensor) and value.is_quantized:
        encoder = _QSCHEME_ENCODERS.get(value.qscheme())
        if encoder is None:
            raise UserInputError(f"int8 export: {key} uses {value.qscheme()}, which cannot be stored")
        return encoder(key, value.detach().cpu(), out)
    if isinstance(value, torch.Tensor):
        _put(out, key, value.clone())
        return {"kind": "tensor"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "dtype": _qdtype_name(value)}
    if isinstance(value, (tuple, list)):
        return {"kind": "tuple", "items": [_encode(f"{key}{SEP}{i}", v, out) for i, v in enumerate(value)]}
    if value is None:
        return {"kind": "none"}
    raise UserInputError(f"int8 export: {key} is a {type(value).__name__}, which cannot be stored")


def encode_state(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an int8 ``state_dict()`` into plain tensors for safetensors and a JSON layout.

    Args:
        state: the converted ``GraphModule``'s state dict (quantized tensors, plain tensors,
            ``torch.dtype`` and ``(weight, bias)`` tuples of packed linear layers).

    Returns:
        ``(tensors, layout)``: contiguous CPU tensors under their own or derived keys, and
        ``{"entries": {state key: spec}, "versions": {module prefix: {"version": n}}}`` telling
        :func:`decode_state` how to rebuild each entry.
    """
    tensors: dict[str, torch.Tensor] = {}
    entries = {key: _encode(key, value, tensors) for key, value in state.items()}
    versions = {prefix: dict(meta) for prefix, meta in getattr(state, "_metadata", {}).items()}
    return tensors, {"entries": entries, "versions": versions}


# --- decoding: spec + stored tensors -> state entry ------------------------------------------------


def _checked_qdtype(q: torch.Tensor, spec: Mapping[str, Any], key: str) -> torch.Tensor:
    if q.dtype != _QDTYPES[spec["dtype"]]:
        raise ValueError(f"{key}: integer data gives {q.dtype}, the layout says {spec['dtype']}")
    return q


def _check_parts(key: str, int_repr: torch.Tensor, scales: torch.Tensor, axis: int | None = None) -> None:
    """Integer data, finite positive scales and an axis inside the tensor, or a ValueError naming ``key``."""
    if int_repr.dtype not in (torch.int8, torch.uint8, torch.int32):
        raise ValueError(f"{key}: integer data has dtype {int_repr.dtype}, not int8, uint8 or int32")
    if not scales.is_floating_point() or not (torch.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError(f"{key}: scales must be finite numbers > 0")
    if axis is not None and not 0 <= axis < int_repr.dim():
        raise ValueError(f"{key}: axis {axis} is outside a {int_repr.dim()}-d tensor")


def _decode_per_tensor(key: str, spec: Mapping[str, Any], take: _Take) -> torch.Tensor:
    int_repr, scale, zero_point = (take(f"{key}{SEP}{part}") for part in ("int_repr", "scale", "zero_point"))
    _check_parts(key, int_repr, scale)
    q = torch._make_per_tensor_quantized_tensor(int_repr, scale.item(), int(zero_point.item()))
    return _checked_qdtype(q, spec, key)


def _decode_per_channel(key: str, spec: Mapping[str, Any], take: _Take) -> torch.Tensor:
    int_repr, scales, zero_points = (take(f"{key}{SEP}{p}") for p in ("int_repr", "scales", "zero_points"))
    _check_parts(key, int_repr, scales, int(spec["axis"]))
    q = torch._make_per_channel_quantized_tensor(int_repr, scales, zero_points, int(spec["axis"]))
    return _checked_qdtype(q, spec, key)


def _decode_tuple(key: str, spec: Mapping[str, Any], take: _Take) -> tuple[Any, ...]:
    return tuple(_decode(f"{key}{SEP}{i}", item, take) for i, item in enumerate(spec["items"]))


_DECODERS: dict[str, _Decoder] = {
    "tensor": lambda key, spec, take: take(key),
    "per_tensor": _decode_per_tensor,
    "per_channel": _decode_per_channel,
    "dtype": lambda key, spec, take: _QDTYPES[spec["dtype"]],
    "tuple": _decode_tuple,
    "none": lambda key, spec, take: None,
}


def _decode(key: str, spec: Mapping[str, Any], take: _Take) -> Any:
    return _DECODERS[spec["kind"]](key, spec, take)


def decode_state(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Rebuild the int8 state dict from stored tensors and their layout (inverse of :func:`encode_state`).

    Args:
        tensors: the safetensors file's tensors.
        layout: ``{"entries", "versions"}`` from the file's header.

    Returns:
        The state dict (with its ``_metadata`` versions), quantized tensors rebuilt with
        ``torch._make_per_channel_quantized_tensor`` / ``torch._make_per_tensor_quantized_tensor``.

    Raises:
        ValueError: a tensor the layout needs is missing, one is left unused, or a spec is malformed.
    """
    unused = dict(tensors)

    def take(name: str) -> torch.Tensor:
        if name not in unused:
            raise ValueError(f"tensor {name!r} is missing")
        return unused.pop(name)

    try:
        state = OrderedDict((key, _decode(key, spec, take)) for key, spec in layout["entries"].items())
        versions = OrderedDict((prefix, dict(v)) for prefix, v in layout["versions"].items())
        state._metadata = versions  # type: ignore[attr-defined]
    except (KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise ValueError(f"malformed layout ({type(e).__name__}: {e})") from None
    if unused:
        raise ValueError(f"unexpected tensors {sorted(unused)[:3]}")
    return state


# --- the card ---------------------------------------------------------------------------------------


def int8_settings(card: ModelCard) -> dict[str, Any]:
    """The card's validated ``int8`` field.

    Args:
        card: a card with an ``int8`` field.

    Returns:
        ``{"engine", "flow", "keep_last_float"}``.

    Raises:
        UserInputError: the field is not an object, lacks a key, has an unknown key or a value this
            version cannot rebuild.
    """
    where = str(card.path or card.name)
    info = card.extra.get("int8")
    expected = ", ".join(f"{k!r}" for k in _INT8_FIELDS)
    if not isinstance(info, dict):
        raise UserInputError(f"{where}: field 'int8' must be an object with {expected}, got {info!r}")
    unknown = sorted(set(info) - set(_INT8_FIELDS))
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown} in field 'int8' (expected {expected})")
    for key, accepted in _INT8_FIELDS.items():
        if key not in info:
            raise UserInputError(f"{where}: field 'int8' lacks {key!r} (expected {expected})")
        value = info[key]
        if type(value) is not type(accepted[0]) or value not in accepted:
            choices = " or ".join(json.dumps(a) for a in accepted)
            raise UserInputError(
                f"{where}: int8 {key} {json.dumps(value)} is not supported (this version: {choices})"
            )
    return dict(info)


def save_int8(
    model: nn.Module, out_dir: str | Path, like: ModelCard, *, keep_last_float: bool = True, **fields: Any
) -> ModelCard:
    """Write an int8 model as ``out_dir/model.safetensors`` + ``out_dir/model.json``.

    Args:
        model: the converted int8 ``GraphModule`` from :func:`~datafree.quant.int8.export_int8`.
        out_dir: destination directory (created); both files are written atomically.
        like: the float model's card (arch, ``arch_kwargs``, ``module_shapes``, input spec).
        keep_last_float: what ``model`` was exported with.
        **fields: further card fields (``test_accuracy``, informational ones).

    Returns:
        The card as written.
    """
    tensors, layout = encode_state(model.state_dict())
    metadata = {"format": INT8_FORMAT, "layout": json.dumps(layout, separators=(",", ":"))}
    int8 = {"engine": INT8_ENGINE, "flow": INT8_FLOW, "keep_last_float": keep_last_float}
    return save_state(
        tensors, out_dir, like=like, arch=portable_arch(like), name="model", metadata=metadata,
        card_name=f"{like.name or 'model'}_int8", arch_kwargs=dict(like.arch_kwargs),
        module_shapes=dict(like.module_shapes), int8=int8, **fields,
    )  # fmt: skip


def _graph(card: ModelCard, keep_last_float: bool) -> nn.Module:
    """The int8 graph of the card's float architecture; its values are placeholders until loaded."""
    zeros = torch.zeros(1, *card.input_shape)
    return export_int8(build_model(card).eval(), zeros, keep_last_float=keep_last_float)


def _read_layout(path: Path, metadata: Mapping[str, str]) -> dict[str, Any]:
    if metadata.get("format") != INT8_FORMAT:
        raise UserInputError(f"{path}: not an int8 weights file of datafree (no {INT8_FORMAT} header)")
    try:
        layout = json.loads(metadata["layout"])
    except (KeyError, json.JSONDecodeError):
        layout = None
    parts = ("entries", "versions")
    if not isinstance(layout, dict) or not all(isinstance(layout.get(k), dict) for k in parts):
        raise UserInputError(f"{path}: missing or malformed int8 layout in the safetensors header")
    return layout


def _load_state_strict(model: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """Load ``state`` into ``model``: exactly the graph's own keys, then torch's shape checks.

    Quantized modules read their entries directly, so a missing key would be a bare ``KeyError``:
    the key sets are compared first.
    """
    expected, got = set(model.state_dict()), set(state)
    if expected != got:
        missing, unexpected = sorted(expected - got)[:3], sorted(got - expected)[:3]
        raise UserInputError(f"{what}: missing keys {missing}, unexpected keys {unexpected}")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        detail = " ".join(str(e).split("\n\t", 1)[-1].split())[:200]  # without torch's "Error(s) in" line
        raise UserInputError(f"{what}: {detail}") from None


def load_int8(card: ModelCard, wpath: Path) -> nn.Module:
    """Rebuild a saved int8 model on CPU (called by :func:`datafree.cards.load_model`).

    Args:
        card: the int8 card (its ``int8`` field is validated here).
        wpath: the safetensors file (its sha256 already checked against the card).

    Returns:
        The int8 ``GraphModule`` in eval mode, on CPU.
    """
    settings = int8_settings(card)
    if wpath.suffix != ".safetensors" or not wpath.is_file():
        raise UserInputError(f"int8 weights must be an existing .safetensors file, got {wpath}")
    tensors, metadata = read_safetensors(wpath)
    layout = _read_layout(wpath, metadata)
    with warnings.catch_warnings():
        # torch warns that quantized tensor constructors are deprecated, as the FX flow itself is
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        try:
            state = decode_state(tensors, layout)
        except ValueError as e:
            raise UserInputError(f"{wpath}: {e}") from None
    model = _graph(card, settings["keep_last_float"])
    _load_state_strict(model, state, f"{wpath.name} does not match the int8 graph of arch {card.arch!r}")
    return model.eval()
