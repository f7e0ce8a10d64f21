"""Real int8 inference on CPU with PyTorch's FX graph-mode post-training quantization (x86 engine).

``prepare_fx`` inserts observers, the calibration images (the same synthetic batch the
simulation uses) run through it, and ``convert_fx`` lowers conv/linear/add/ReLU to the
``quantized::`` oneDNN/FBGEMM int8 kernels: per-channel symmetric int8 weights, per-tensor
affine uint8 activations, BN folded, ``conv+ReLU`` and ``add+ReLU`` fused. No compiler, no
extra dependency, and no compile time.

Why FX rather than PT2E (torchao ``X86InductorQuantizer`` + ``torch.compile``): on this machine
both measured the same int8 speed-up over fp32 (ResNet-20, shared/ECOSYSTEM.md section 1d:
17.3 ms vs 16.4 ms), while PT2E needs torchao as a new dependency, a C++ toolchain and seconds of
inductor compilation per model (and per batch-size specialisation). The FX flow lives in the
deprecated ``torch.ao.quantization`` namespace and warns so; its deprecation warnings are
silenced here. Moving to PT2E later only changes :func:`export_int8`.

The last layer stays float (``fc`` reads the dequantized features): requantizing logits to a
range calibrated on unlabelled synthetic data clips the winning class, exactly as in the
simulation's ``quantize_output=False``.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import UserInputError

__all__ = ["export_int8", "INT8_ENGINE"]

INT8_ENGINE = "x86"


def _last_linear_name(model: nn.Module) -> str | None:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def export_int8(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, keep_last_float: bool = True
) -> nn.Module:
    """A CPU int8 copy of a float ``model``, calibrated on ``images``.

    Args:
        model: trained float network (BN not yet folded; FX folds it), traceable by ``torch.fx``.
        images: normalised calibration images ``(N, C, H, W)``.
        batch_size: calibration batch size.
        keep_last_float: leave the final ``nn.Linear`` in fp32 (see the module docstring).

    Returns:
        The quantized ``GraphModule`` (CPU, eval mode).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if INT8_ENGINE not in torch.backends.quantized.supported_engines:
        raise UserInputError(
            f"this PyTorch build has no {INT8_ENGINE!r} quantized engine "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})"
        )
    torch.backends.quantized.engine = INT8_ENGINE
    float_model = copy.deepcopy(model).cpu().eval()
    if getattr(model, "_datafree_logits_hook", False):  # tracing skips the hook: keep the logits in the graph
        from ..models import keep_logits_output

        traced = torch.fx.symbolic_trace(float_model)
        float_model = traced if keep_logits_output(traced) else float_model
    mapping = get_default_qconfig_mapping(INT8_ENGINE)
    last = _last_linear_name(float_model) if keep_last_float else None
    if last is not None:
        mapping = mapping.set_module_name(last, None)
    example = (images[:1].cpu(),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(float_model, mapping, example)
        except Exception as e:  # noqa: BLE001 - FX tracing raises many kinds of errors
            raise UserInputError(
                f"cannot trace {type(model).__name__} for int8 export: {type(e).__name__}: {e}"
            ) from None
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                prepared(images[i : i + batch_size].cpu())
        return convert_fx(prepared).eval()
