"""Deploy a model out of datafree: ONNX (fp32 or int8 QDQ) verified in ONNX Runtime, or a ``.pt2`` archive.

``deploy(model, out)`` writes ``out`` (``.onnx`` or ``.pt2``) and the card it needs beside it
(``out`` + ``.json``), so ``datafree evaluate --model out.onnx`` measures the deployed
model with the same command as any other:

* a float model (a teacher, a distilled student, a pruned model: its card's ``module_shapes`` are
  part of the rebuilt module) is exported as it is, with a dynamic batch axis;
* a fake-quantized model (``datafree quantize``, W8A8) becomes **QDQ ONNX**: every weight is
  stored as an int8 (uint8 for asymmetric grids) initializer with its per-output-channel scales
  behind a ``DequantizeLinear``; every activation quantizer becomes a ``QuantizeLinear`` /
  ``DequantizeLinear`` pair with the calibrated per-tensor scale and zero point. ONNX Runtime fuses
  ``DQ -> Conv -> Q`` into ``QLinearConv`` (and adds, pooling, ...) and runs int8 kernels;
* a real int8 model (``datafree quantize --int8``, PT2E) exports its
  ``quantized_decomposed`` quantize/dequantize ops as the same QDQ pairs.

Each ONNX export is checked by running ONNX Runtime on a batch of the digits test split against the
PyTorch model: the maximum absolute difference of the logits and the top-1 agreement are returned
(and printed by the CLI); beyond the tolerance a :class:`DeployMismatchError` (exit status 1) is
raised and nothing is written. ONNX support needs the optional extra ``datafree[onnx]``.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cards import WEIGHT_LOADERS, LoadedModel, ModelCard, load_model, save_card_beside
from .data import digits_split
from .errors import DatafreeError, UserInputError
from .utils import atomic_write, sha256_file

__all__ = [
    "FORMATS",
    "DEFAULT_OPSET",
    "DeployMismatchError",
    "OnnxRuntimeModel",
    "deploy",
    "exportable_module",
    "qdq_module",
    "load_deployed",
    "require_onnx",
]

FORMATS = ("onnx", "pt2")
DEFAULT_OPSET = 18  # the lowest opset torch.onnx's exporter (dynamo) emits
ONNX_EXTRA_HINT = "pip install 'datafree[onnx]'"
FLOAT_RTOL = 1e-3  # fp32 exports: max |diff| <= FLOAT_RTOL * max(1, max |logit|)
QUANT_MIN_AGREEMENT = 0.95  # int8 exports: integer kernels round differently at ties


class DeployMismatchError(DatafreeError):
    """The exported model's outputs differ from the PyTorch model's beyond the tolerance (exit 1)."""

    exit_code = 1


def require_onnx() -> Any:
    """Import and return ``onnxruntime``, or raise a one-line error naming the extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise UserInputError(f"ONNX export and ONNX Runtime need the onnx extra: {ONNX_EXTRA_HINT}") from None
    return onnxruntime


# --- QDQ form of a fake-quantized network -----------------------------------------------------------


def _decomposed_ops() -> Any:
    """``torch.ops.quantized_decomposed`` (the Q/DQ ops of PT2E, which torch.onnx exports as QDQ)."""
    from .quant.int8 import require_torchao

    require_torchao()  # registers the quantized_decomposed library
    return torch.ops.quantized_decomposed


class _QDQAct(nn.Module):
    """Per-tensor ``quantize -> dequantize`` with a fixed scale and zero point (uint8)."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.scale, self.zero_point, self.qmin, self.qmax = scale, zero_point, qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ops = _decomposed_ops()
        args = (self.scale, self.zero_point, self.qmin, self.qmax, torch.uint8)
        return ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *args), *args)


class _QDQWeighted(nn.Module):
    """A conv or linear layer whose weight is stored as integers and dequantized per output channel."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        wq = layer.weight_quant
        dtype = torch.int8 if wq.qmin < 0 else torch.uint8
        scale = wq.scale.detach().float().cpu()
        zp = wq.zero_point.detach().round().cpu()
        view = (-1,) + (1,) * (layer.weight.dim() - 1)
        q = torch.clamp(
            torch.round(layer.weight.detach().cpu() / scale.view(view)) + zp.view(view), wq.qmin, wq.qmax
        )
        self.register_buffer("weight_int", q.to(dtype))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zp.to(torch.int64))
        bias = layer.bias.detach().cpu().clone() if layer.bias is not None else None
        self.register_buffer("bias", bias)
        self.qmin, self.qmax, self.qdtype = wq.qmin, wq.qmax, dtype
        self.conv = None
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise UserInputError(
                    f"QDQ export supports zero-padded convolutions, not {layer.padding_mode!r}"
                )
            self.conv = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation,
                         "groups": layer.groups}  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w = _decomposed_ops().dequantize_per_channel(
            self.weight_int, self.weight_scale, self.weight_zero_point, 0, self.qmin, self.qmax, self.qdtype
        )
        if self.conv is not None:
            return nn.functional.conv2d(x, w, self.bias, **self.conv)
        return nn.functional.linear(x, w, self.bias)


def qdq_module(qmodel: nn.Module) -> nn.Module:
    """The explicit quantize/dequantize form of a calibrated fake-quantized network (W8A8 only).

    Args:
        qmodel: from :func:`datafree.quant.quantize_network` (or a loaded ``datafree quantize`` card),
            calibrated.

    Returns:
        A copy on CPU in which every weight quantizer became int8 storage + ``dequantize_per_channel``
        and every activation quantizer a ``quantize_per_tensor``/``dequantize_per_tensor`` pair,
        with the same scales and zero points.

    Raises:
        UserInputError: a quantizer is not 8-bit (ONNX QDQ here is int8/uint8).
    """
    from .quant.fakequant import ActQuantizer, QuantConv2d, QuantLinear

    model = copy.deepcopy(qmodel).cpu().eval()
    for name, module in list(model.named_modules()):
        swapped: nn.Module | None = None
        if isinstance(module, (QuantConv2d, QuantLinear)):
            if module.weight_quant.bits != 8:
                raise UserInputError(
                    f"QDQ ONNX export needs 8-bit weights; {name} has {module.weight_quant.bits} bits "
                    "(quantize with --weight-bits 8 --act-bits 8, or deploy the float model)"
                )
            swapped = _QDQWeighted(module) if module.weight_quant.enabled else None
        elif isinstance(module, ActQuantizer):
            if module.bits != 8:
                raise UserInputError(
                    f"QDQ ONNX export needs 8-bit activations; {name} has {module.bits} bits "
                    "(quantize with --weight-bits 8 --act-bits 8, or deploy the float model)"
                )
            zp = int(module.zero_point.round().item())
            swapped = (
                _QDQAct(float(module.scale.item()), zp, module.qmin, module.qmax)
                if module.enabled
                else nn.Identity()
            )
        if swapped is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, swapped)
    return model


def _is_fake_quantized(card: ModelCard) -> bool:
    from .quant.api import QUANTIZED_ARCH

    return card.arch == QUANTIZED_ARCH


def exportable_module(lm: LoadedModel) -> nn.Module:
    """The module to export for a loaded card: QDQ for a fake-quantized one, else the model (CPU, eval)."""
    if lm.card.extra.get("format") in FORMATS:
        raise UserInputError(f"{lm.card.path}: already a deployed {lm.card.extra['format']} model")
    if _is_fake_quantized(lm.card):
        return qdq_module(lm.model)
    if lm.card.is_int8:
        return lm.model.eval()
    return copy.deepcopy(lm.model).cpu().eval()


# --- export -----------------------------------------------------------------------------------------


def _batch_dim() -> Any:
    return torch.export.Dim.DYNAMIC


def _onnx_bytes(module: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    require_onnx()
    try:
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: _batch_dim()},),
            verbose=False,
        )
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds of errors on unsupported code
        msg = " ".join(str(e).split())[:240]
        raise UserInputError(
            f"torch.onnx cannot export {type(module).__name__}: {type(e).__name__}: {msg}"
        ) from None
    return program.model_proto.SerializeToString()


def _pt2_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split())[:240]
        raise UserInputError(
            f"torch.export cannot export {type(module).__name__}: {type(e).__name__}: {msg}"
        ) from None
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _ort_session(source: str | bytes, threads: int | None = None) -> Any:
    ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _compare(ref: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    return {
        "max_abs_diff": float((ref - got).abs().max().item()),
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).float().mean().item()),
        "max_abs_logit": float(ref.abs().max().item()),
    }


def _check(
    stats: dict[str, float], quantized: bool, atol: float | None, min_agreement: float | None
) -> str | None:
    """The reason the export is refused, or ``None``."""
    tol = atol if atol is not None else (None if quantized else FLOAT_RTOL * max(1.0, stats["max_abs_logit"]))
    agree = min_agreement if min_agreement is not None else (QUANT_MIN_AGREEMENT if quantized else 1.0)
    if tol is not None and stats["max_abs_diff"] > tol:
        return f"max abs difference {stats['max_abs_diff']:.3g} > tolerance {tol:.3g}"
    if stats["top1_agreement"] < agree:
        return f"top-1 agreement {stats['top1_agreement']:.4f} < {agree:.4f}"
    return None


def deploy(
    model: str | Path | ModelCard | LoadedModel,
    out: str | Path,
    fmt: str | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int = 64,
    atol: float | None = None,
    min_agreement: float | None = None,
) -> dict[str, Any]:
    """Export a model card to ONNX or ``.pt2``, verify it, and write its card beside the file.

    Args:
        model: a shipped name, card path / directory, card or loaded model (float, pruned,
            fake-quantized W8A8 or real int8).
        out: the file to write, ``.onnx`` or ``.pt2``; its card goes to ``out`` + ``.json``.
        fmt: ``onnx`` or ``pt2`` (default: from the suffix of ``out``).
        opset: ONNX opset (>= 18).
        batch: images of the digits test split to verify on (in the card's input shape).
        atol: largest accepted max abs difference of the logits (default: 1e-3 x max(1, max |logit|)
            for float models, not checked for quantized ones).
        min_agreement: smallest accepted top-1 agreement (default 1.0 for float models, 0.95 for
            quantized ones).

    Returns:
        ``{"path", "card", "format", "quantized", "max_abs_diff", "top1_agreement", ...}``.

    Raises:
        UserInputError: bad arguments, a missing extra, a model the exporter cannot handle.
        DeployMismatchError: the exported model disagrees with PyTorch beyond the tolerance.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise UserInputError(
            f"unknown deploy format {fmt!r}; use {' or '.join(FORMATS)} (or an .onnx/.pt2 --out)"
        )
    if out.suffix != f".{fmt}":
        raise UserInputError(f"--out must end in .{fmt} for --format {fmt}, got {out}")
    if fmt == "onnx" and not 18 <= opset <= 23:
        raise UserInputError(f"--opset must be from 18 to 23 (torch.onnx's exporter), got {opset}")
    if batch <= 0:
        raise UserInputError(f"verification batch must be > 0, got {batch}")
    lm = model if isinstance(model, LoadedModel) else load_model(model, "cpu")
    card = lm.card
    quantized = _is_fake_quantized(card) or card.is_int8
    module = exportable_module(lm)
    pixels, _ = digits_split("test", tuple(card.input_shape))  # type: ignore[arg-type]
    x = card.normalizer()(pixels[:batch]).cpu()
    with torch.no_grad():
        ref = module(x).float()
    if fmt == "onnx":
        data = _onnx_bytes(module, x[:2], opset)
        got = torch.from_numpy(_ort_session(data).run(None, {"input": x.numpy()})[0])
        runtime = "onnxruntime"
    else:
        data = _pt2_bytes(module, x[:2])
        program = torch.export.load(io.BytesIO(data))  # our own bytes, just written
        with torch.no_grad():
            got = program.module()(x).float()
        runtime = "torch.export"
    stats = _compare(ref, got)
    reason = _check(stats, quantized, atol, min_agreement)
    if reason is not None:
        raise DeployMismatchError(
            f"{runtime} disagrees with PyTorch on {len(x)} test images: {reason}; nothing written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(data)
    info = {
        "format": fmt,
        "runtime": runtime,
        "quantized": quantized,
        "verify_images": len(x),
        "max_abs_diff": round(stats["max_abs_diff"], 6),
        "top1_agreement": round(stats["top1_agreement"], 4),
    }
    if fmt == "onnx":
        info["opset"] = opset
    written = save_card_beside(out, card, sha256=sha256_file(out), deploy=info)
    return {"path": str(out), "card": str(written.path), **info}


# --- loading a deployed file ------------------------------------------------------------------------


class OnnxRuntimeModel(nn.Module):
    """An ONNX file run by ONNX Runtime (CPU) behind the ``nn.Module`` interface ``evaluate`` uses.

    The graph's initializers are kept as frozen parameters only so that parameter counts match
    the exported model; the forward pass never reads them.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (default: torch's thread count).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        self.session = _ort_session(str(path), threads)
        self.input_name = self.session.get_inputs()[0].name
        graph = onnx.load(str(path), load_external_data=False).graph
        self.initializers = nn.ParameterList(
            nn.Parameter(
                torch.from_numpy(np.array(numpy_helper.to_array(t), dtype=np.float32)), requires_grad=False
            )
            for t in graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
            and len(t.dims) >= 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out)


class _ExportedProgramModel(nn.Module):
    """A ``.pt2`` program's module behind a plain module (inference only).

    The program's module refuses ``.eval()``/``.train()``; this wrapper accepts them.
    """

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "program", program_module)  # not a submodule: eval() must not reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.program(x)


def load_deployed(card: ModelCard, wpath: Path, trust_checkpoint: bool = False) -> nn.Module:
    """Load a file written by :func:`deploy` (called by :func:`datafree.cards.load_model`).

    Args:
        card: its card (``format`` ``onnx`` or ``pt2``).
        wpath: the file (its sha256 already checked against the card).
        trust_checkpoint: allow a ``.pt2`` archive (it contains pickled parts).

    Returns:
        An ``nn.Module`` on CPU: :class:`OnnxRuntimeModel` or the ``.pt2`` program's module.
    """
    fmt = card.extra.get("format")
    if not wpath.is_file():
        raise UserInputError(f"deployed model file not found: {wpath}")
    if fmt == "onnx":
        require_onnx()
        try:
            return OnnxRuntimeModel(wpath)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise UserInputError(
                f"{wpath}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:200]})"
            ) from None
    if fmt == "pt2":
        if not trust_checkpoint:
            raise UserInputError(
                f"{wpath} is a .pt2 archive, which contains pickled parts; pass --trust-checkpoint if you "
                "trust it"
            )
        return _ExportedProgramModel(torch.export.load(str(wpath)).module())
    raise UserInputError(f"{card.path}: unknown deployed format {fmt!r} (expected {' or '.join(FORMATS)})")


WEIGHT_LOADERS["onnx"] = WEIGHT_LOADERS["pt2"] = load_deployed
