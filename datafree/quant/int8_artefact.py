"""The real int8 model as a deployable artefact: ``model.safetensors`` + ``model.json``, nothing unpickled.

A PT2E-converted model (:func:`~datafree.quant.int8.export_int8`) holds only plain tensors: int8
weight constants, per-channel float scales and int64 zero points, float biases. Its activation
quantization parameters are not tensors but literal arguments of the graph's
``quantize_per_tensor``/``dequantize_per_tensor`` nodes. The artefact stores:

* every tensor of the converted graph (its parameters, buffers and constant attributes), under its
  own name, in ``model.safetensors``;
* the activation parameters as JSON in the safetensors header (``format`` =
  :data:`~datafree.cards.INT8_FORMAT`, ``layout`` = ``{"flow": "pt2e", "qparams": {node name:
  [scale, zero point, qmin, qmax]}}``), covered by the card's ``sha256``.

Why not a ``.pt2`` archive (``torch.export.save``)? It contains pickled parts, and loading one
unpickles them; safetensors + JSON cannot run code. Loading rebuilds the float architecture from
the card (``arch``, ``arch_kwargs``, ``module_shapes``: a pruned model works too), runs the same
capture/prepare/convert on one batch of zeros only to obtain the graph, then writes the stored
tensors and node arguments into it with strict name checks: outputs are bit-identical to the
exported model.

The card is the float model's card plus ``int8`` ``{"engine": "x86", "flow": "pt2e",
"keep_last_float": bool}``. Artefacts written by the earlier FX flow (``"flow": "fx"``) are refused
with a one-line error telling how to re-create them (their quantized-tensor encoding needs the
deprecated ``torch.ao`` FX flow, which is no longer part of datafree).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cards import (
    INT8_FORMAT,
    WEIGHT_LOADERS,
    ModelCard,
    build_model,
    portable_arch,
    read_safetensors,
    save_state,
)
from ..errors import UserInputError
from .int8 import INT8_ENGINE, export_int8

__all__ = ["INT8_FLOW", "graph_state", "graph_qparams", "int8_settings", "save_int8", "load_int8"]

INT8_FLOW = "pt2e"
_QUANT_OPS = ("quantize_per_tensor", "dequantize_per_tensor")

# The card's "int8" field: key -> accepted values (the first one's type is the required type).
_INT8_FIELDS: dict[str, tuple[Any, ...]] = {
    "engine": (INT8_ENGINE,),
    "flow": (INT8_FLOW,),
    "keep_last_float": (True, False),
}


def graph_state(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """Every tensor the converted graph reads (its ``get_attr`` targets: int8 weights, scales, biases).

    The float weights PT2E folded into int8 constants stay registered on the module but are never
    read; they are not part of the artefact.
    """
    state = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target not in state:
            value = gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                state[str(node.target)] = value.detach().cpu().contiguous()
    return state


def _is_per_tensor_qdq(node: torch.fx.Node) -> bool:
    target = node.target
    return (
        node.op == "call_function"
        and getattr(target, "namespace", None) == "quantized_decomposed"
        and any(str(getattr(target, "_overloadpacket", target)).endswith(op) for op in _QUANT_OPS)
        and isinstance(node.args[1], float)
    )


def graph_qparams(gm: torch.fx.GraphModule) -> dict[str, list[float | int]]:
    """``{node name: [scale, zero point, qmin, qmax]}`` of every per-tensor quantize/dequantize node."""
    return {n.name: [float(n.args[1]), int(n.args[2]), int(n.args[3]), int(n.args[4])]
            for n in gm.graph.nodes if _is_per_tensor_qdq(n)}  # fmt: skip


def _set_qparams(gm: torch.fx.GraphModule, qparams: Mapping[str, Any], what: str) -> None:
    nodes = {n.name: n for n in gm.graph.nodes if _is_per_tensor_qdq(n)}
    if set(nodes) != set(qparams):
        missing, unexpected = sorted(set(nodes) - set(qparams))[:3], sorted(set(qparams) - set(nodes))[:3]
        raise UserInputError(f"{what}: missing quantization nodes {missing}, unexpected {unexpected}")
    for name, node in nodes.items():
        value = qparams[name]
        if not (
            isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)
        ):
            raise UserInputError(f"{what}: malformed quantization parameters for {name}: {value!r}")
        scale, zp, qmin, qmax = value
        node.args = (node.args[0], float(scale), int(zp), int(qmin), int(qmax), *node.args[5:])
    gm.recompile()


def _set_state(gm: torch.fx.GraphModule, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    expected = graph_state(gm)
    if set(expected) != set(tensors):
        missing, unexpected = (
            sorted(set(expected) - set(tensors))[:3],
            sorted(set(tensors) - set(expected))[:3],
        )
        raise UserInputError(f"{what}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, t in tensors.items():
        ref = expected[name]
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise UserInputError(
                f"{what}: {name} is {t.dtype} {tuple(t.shape)}, the graph needs {ref.dtype} "
                f"{tuple(ref.shape)}"
            )
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        current = getattr(owner, attr)
        if isinstance(current, nn.Parameter):
            current.data = t.clone()
        elif attr in getattr(owner, "_buffers", {}):
            owner._buffers[attr] = t.clone()
        else:
            setattr(owner, attr, t.clone())


# --- the card ---------------------------------------------------------------------------------------


def int8_settings(card: ModelCard) -> dict[str, Any]:
    """The card's validated ``int8`` field.

    Args:
        card: a card with an ``int8`` field.

    Returns:
        ``{"engine", "flow", "keep_last_float"}``.

    Raises:
        UserInputError: the field is not an object, lacks a key, has an unknown key or a value this
            version cannot rebuild (an artefact of the earlier FX flow gets its own message).
    """
    where = str(card.path or card.name)
    info = card.extra.get("int8")
    expected = ", ".join(f"{k!r}" for k in _INT8_FIELDS)
    if not isinstance(info, dict):
        raise UserInputError(f"{where}: field 'int8' must be an object with {expected}, got {info!r}")
    if info.get("flow") == "fx":
        source = (
            card.extra.get("quantization", {}).get("source")
            if isinstance(card.extra.get("quantization"), dict)
            else None
        )
        hint = f" from {source}" if source else " from its float model"
        raise UserInputError(
            f"{where}: an int8 model written by the FX flow of an earlier datafree, which is no longer "
            "supported; "
            f"re-create it with datafree quantize --int8{hint}"
        )
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
    model: torch.fx.GraphModule,
    out_dir: str | Path,
    like: ModelCard,
    *,
    keep_last_float: bool = True,
    **fields: Any,
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
    layout = {"flow": INT8_FLOW, "qparams": graph_qparams(model)}
    metadata = {"format": INT8_FORMAT, "layout": json.dumps(layout, separators=(",", ":"))}
    int8 = {"engine": INT8_ENGINE, "flow": INT8_FLOW, "keep_last_float": keep_last_float}
    return save_state(
        graph_state(model), out_dir, like=like, arch=portable_arch(like), name="model", metadata=metadata,
        card_name=f"{like.name or 'model'}_int8", arch_kwargs=dict(like.arch_kwargs),
        module_shapes=dict(like.module_shapes), int8=int8, **fields,
    )  # fmt: skip


def _graph(card: ModelCard, keep_last_float: bool) -> torch.fx.GraphModule:
    """The int8 graph of the card's float architecture; its values are placeholders until loaded."""
    zeros = torch.zeros(2, *card.input_shape)
    return export_int8(build_model(card).eval(), zeros, keep_last_float=keep_last_float)


def _read_layout(path: Path, metadata: Mapping[str, str]) -> dict[str, Any]:
    if metadata.get("format") != INT8_FORMAT:
        raise UserInputError(f"{path}: not an int8 weights file of datafree (no {INT8_FORMAT} header)")
    try:
        layout = json.loads(metadata["layout"])
    except (KeyError, json.JSONDecodeError):
        layout = None
    if (
        not isinstance(layout, dict)
        or layout.get("flow") != INT8_FLOW
        or not isinstance(layout.get("qparams"), dict)
    ):
        raise UserInputError(
            f"{path}: missing or malformed {INT8_FLOW} int8 layout in the safetensors header"
        )
    return layout


def load_int8(card: ModelCard, wpath: Path) -> torch.fx.GraphModule:
    """Rebuild a saved int8 model on CPU (called by :func:`datafree.cards.load_model`).

    Args:
        card: the int8 card (its ``int8`` field is validated here).
        wpath: the safetensors file (its sha256 already checked against the card).

    Returns:
        The int8 ``GraphModule`` on CPU.
    """
    settings = int8_settings(card)
    if wpath.suffix != ".safetensors" or not wpath.is_file():
        raise UserInputError(f"int8 weights must be an existing .safetensors file, got {wpath}")
    tensors, metadata = read_safetensors(wpath)
    layout = _read_layout(wpath, metadata)
    model = _graph(card, settings["keep_last_float"])
    what = f"{wpath.name} does not match the int8 graph of arch {card.arch!r}"
    _set_qparams(model, layout["qparams"], what)
    _set_state(model, tensors, what)
    return model


def _load_int8_card(card: ModelCard, wpath: Path, trust_checkpoint: bool = False) -> nn.Module:
    return load_int8(card, wpath)


WEIGHT_LOADERS[INT8_FORMAT] = _load_int8_card
