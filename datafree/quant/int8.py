"""Real int8 on CPU through PT2E: ``torch.export`` + torchao's ``prepare_pt2e``/``convert_pt2e``.

The float network is captured with ``torch.export`` (dynamic batch axis), annotated by torchao's
``X86InductorQuantizer`` (per-channel symmetric int8 weights, per-tensor affine uint8 activations,
BN folded, ``conv+ReLU`` and ``add+ReLU`` patterns), observed on the calibration images (the same
synthetic batch the simulation uses) and converted: the result is a ``GraphModule`` of
``quantized_decomposed`` quantize/dequantize ops around float ``conv``/``linear`` with int8 weight
constants. That graph is the *reference* form: in eager mode it runs float kernels (slower than
fp32); ``torch.compile`` (inductor, needs a C++ compiler) lowers its Q/DQ patterns to oneDNN int8
kernels, and ``datafree deploy --format onnx`` exports the same Q/DQ pairs as QDQ ONNX, which ONNX
Runtime runs with int8 kernels (``QLinearConv``). This replaces the FX flow of
``torch.ao.quantization`` (deprecated by PyTorch in favour of PT2E); it needs torchao (the
``int8`` extra).

The last layer stays float (``fc`` reads the dequantized features): requantizing logits to a
range calibrated on unlabelled synthetic data clips the winning class, exactly as in the
simulation's ``quantize_output=False``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError

__all__ = [
    "export_int8",
    "int8_available",
    "require_torchao",
    "INT8_ENGINE",
    "INT8_EXTRA_HINT",
]

INT8_ENGINE = "x86"
INT8_EXTRA_HINT = "pip install 'datafree[int8]'"


def int8_available() -> bool:
    """Whether torchao (the ``int8`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


def require_torchao() -> tuple[Any, Any, Any]:
    """``(prepare_pt2e, convert_pt2e, x86_inductor_quantizer module)``.

    Raises a one-line error naming the extra when torchao is missing.
    """
    # importing torchao logs a warning about its own enum registration through torch's pytree logger
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise UserInputError(
            f"int8 (PT2E quantization, QDQ export) needs torchao: {INT8_EXTRA_HINT}"
        ) from None
    finally:
        pytree_log.setLevel(level)
    return prepare_pt2e, convert_pt2e, xiq


def _last_linear_name(model: nn.Module) -> str | None:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


# Parameter-free modules a network may call more than once
# (torchvision's ResNet blocks use one nn.ReLU twice).
_SHAREABLE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh)


def _split_shared_calls(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give every call of a shared parameter-free module its own source partition.

    PT2E's quantizer groups the nodes of one module instance into one partition and refuses a
    partition with two outputs ("Input partition has more than one output node"), which is what a
    module called twice gives. Each such node is renamed apart in its ``source_fn_stack`` /
    ``nn_module_stack`` metadata; the computation is unchanged.
    """
    for node in gm.graph.nodes:
        stack = node.meta.get("source_fn_stack")
        if stack and isinstance(stack[-1][1], type) and issubclass(stack[-1][1], _SHAREABLE):
            node.meta["source_fn_stack"] = [*stack[:-1], (f"{stack[-1][0]}__{node.name}", stack[-1][1])]
        modules = node.meta.get("nn_module_stack")
        if stack is None and modules:
            key, (fqn, cls) = list(modules.items())[-1]
            name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
            if name in {c.__name__ for c in _SHAREABLE}:
                node.meta["nn_module_stack"] = {**modules, key: (f"{fqn}__{node.name}", cls)}
    return gm


def export_int8(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, keep_last_float: bool = True
) -> torch.fx.GraphModule:
    """A CPU int8 copy of a float ``model``, calibrated on ``images`` (PT2E, x86 quantizer).

    Args:
        model: trained float network (BN not yet folded; PT2E folds it), capturable by ``torch.export``.
        images: normalised calibration images ``(N, C, H, W)``.
        batch_size: calibration batch size.
        keep_last_float: leave the final ``nn.Linear`` in fp32 (see the module docstring).

    Returns:
        The converted ``GraphModule`` (CPU; dynamic batch axis).
    """
    prepare_pt2e, convert_pt2e, xiq = require_torchao()
    float_model = copy.deepcopy(model).cpu().eval()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    last = _last_linear_name(float_model) if keep_last_float else None
    if last is not None:
        quantizer.set_module_name_qconfig(last, None)
    example = images[:2].cpu()
    try:
        captured = torch.export.export(
            float_model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
        )
        prepared = prepare_pt2e(_split_shared_calls(captured.module()), quantizer)
    except Exception as e:  # noqa: BLE001 - torch.export raises many kinds of errors
        msg = " ".join(str(e).split())[:240]
        raise UserInputError(
            f"cannot capture {type(model).__name__} for int8 export: {type(e).__name__}: {msg}"
        ) from None
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            prepared(images[i : i + batch_size].cpu())
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    # callers (evaluate, load_model) call .eval(): allowed on the converted graph (no dropout/BN left)
    return allow_exported_model_train_eval(convert_pt2e(prepared))
