"""Turn a float network into a fake-quantized one, calibrate it, and count its size.

:func:`quantize_network` folds BatchNorm into the convolutions, traces the result with
``torch.fx``, swaps every ``Conv2d``/``Linear`` for a weight-quantized twin (per output channel)
and inserts a per-tensor :class:`ActQuantizer` on:

* the network input;
* the output of every layer: convolutions, linear layers, activations, pooling, unfolded
  BatchNorms, and element-wise ``add``/``mul``/``cat`` (so residual additions are quantized);
* except that an output read only by a ReLU is quantized after the ReLU, as an int8 kernel fuses
  ``conv + ReLU`` and ``add + ReLU`` (quantizing before *and* after would double-count).

Shape-only operations (``flatten``, ``view``, ``getitem``, ...) and max-pooling, which keeps
values on the grid, get no quantizer. The quantizers' names derive from the graph, so building
the same architecture again gives the same state-dict keys: :func:`build_quantized` is what a
saved model's card names as its ``arch``.

Reference: Cai et al., "ZeroQ", CVPR 2020 (which quantizes only post-ReLU outputs; ZeroQ#4 lists
the input, residual additions and BN folding as gaps, all handled here).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..cards import ModelCard, build_model
from ..errors import UserInputError
from .calibration import CALIBRATORS, RangeObserver, calibrate_range
from .fakequant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer, check_bits
from .fold import fold_batchnorm

__all__ = [
    "QuantConfig",
    "quantize_network",
    "build_quantized",
    "calibrate",
    "weight_quantizers",
    "act_quantizers",
    "quantized_size_bytes",
    "set_quantization",
]

_RELUS = (nn.ReLU, F.relu, torch.relu)
_QUANTIZED_FUNCTIONS = {
    operator.add,
    operator.iadd,
    torch.add,
    operator.mul,
    torch.mul,
    torch.cat,
    F.relu,
    torch.relu,
    F.relu6,
    F.hardswish,
    F.silu,
    F.gelu,
    torch.sigmoid,
    torch.tanh,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    torch.mean,
    F.conv2d,
    F.linear,
}
_QUANTIZED_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "mean", "sigmoid", "tanh"}
_UNQUANTIZED_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.MaxPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class QuantConfig:
    """What to quantize and how.

    Attributes:
        weight_bits: bits per weight (2 to 8), per output channel.
        act_bits: bits per activation (2 to 8), per tensor.
        weight_symmetric: symmetric signed weights (else asymmetric with a zero point).
        weight_calib: weight clipping: ``minmax``, ``percentile`` or ``mse``.
        act_calib: activation clipping: ``minmax``, ``percentile`` or ``mse``.
        percentile: upper percentile for the ``percentile`` method.
        quantize_output: also quantize the network's output (logits) to ``act_bits``. Off by
            default: an integer kernel hands the last layer's int32 accumulator back dequantized,
            and requantizing logits to a range calibrated on unlabelled data clips the winning
            class (ties in the argmax).
    """

    weight_bits: int = 8
    act_bits: int = 8
    weight_symmetric: bool = True
    weight_calib: str = "mse"
    act_calib: str = "mse"
    percentile: float = 99.99
    quantize_output: bool = False

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the first bad value."""
        check_bits(self.weight_bits, "weight bits")
        check_bits(self.act_bits, "activation bits")
        for name in ("weight_calib", "act_calib"):
            if getattr(self, name) not in CALIBRATORS:
                raise UserInputError(
                    f"{name} must be one of {', '.join(CALIBRATORS)}, got {getattr(self, name)!r}"
                )
        if not (math.isfinite(self.percentile) and 50.0 < self.percentile <= 100.0):
            raise UserInputError(f"percentile must be in (50, 100], got {self.percentile}")


def _only_user_is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if len(node.users) != 1:
        return False
    user = next(iter(node.users))
    if user.op == "call_module":
        return isinstance(modules[user.target], nn.ReLU)  # type: ignore[index]
    if user.op == "call_function":
        return user.target in (F.relu, torch.relu)
    return user.op == "call_method" and user.target in ("relu", "relu_")


def _produces_quantized_value(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "placeholder":
        return True
    if node.op == "call_module":
        return not isinstance(modules[node.target], _UNQUANTIZED_MODULES)  # type: ignore[index]
    if node.op == "call_function":
        return node.target in _QUANTIZED_FUNCTIONS
    if node.op == "call_method":
        return node.target in _QUANTIZED_METHODS
    return False


def _swap_layers(gm: fx.GraphModule, cfg: QuantConfig) -> None:
    for name, module in list(gm.named_modules()):
        swapped: nn.Module | None = None
        if type(module) is nn.Conv2d:
            swapped = QuantConv2d(module, cfg.weight_bits, cfg.weight_symmetric)
        elif type(module) is nn.Linear:
            swapped = QuantLinear(module, cfg.weight_bits, cfg.weight_symmetric)
        if swapped is not None:
            parent, _, attr = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, swapped)


def quantize_network(model: nn.Module, config: QuantConfig | None = None) -> fx.GraphModule:
    """Fold BN, then insert weight and activation fake-quantizers (see the module docstring).

    Args:
        model: a trained float network (traceable by ``torch.fx``); it is not modified.
        config: bit widths and calibration methods.

    Returns:
        An uncalibrated quantized ``GraphModule``: call :func:`calibrate` before using it.
    """
    cfg = config or QuantConfig()
    cfg.validate()
    try:
        gm = fold_batchnorm(model)
    except Exception as e:  # noqa: BLE001 - torch.fx raises many kinds of errors on untraceable code
        raise UserInputError(
            f"cannot trace {type(model).__name__} with torch.fx for quantization: {type(e).__name__}: {e}"
        ) from None
    _swap_layers(gm, cfg)
    modules = dict(gm.named_modules())
    gm.add_module("act_quant", nn.Module())
    for node in list(gm.graph.nodes):
        if not _produces_quantized_value(node, modules) or _only_user_is_relu(node, modules):
            continue
        if not cfg.quantize_output and all(u.op == "output" for u in node.users):
            continue
        target = f"act_quant.{node.name}"
        gm.add_submodule(target, ActQuantizer(cfg.act_bits))
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(target, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
    gm.graph.lint()
    gm.recompile()
    gm.quant_config = dataclasses.asdict(cfg)  # type: ignore[assignment]
    return gm.eval()


def build_quantized(
    num_classes: int,
    base_arch: str,
    in_channels: int,
    weight_bits: int,
    act_bits: int,
    weight_symmetric: bool = True,
    quantize_output: bool = False,
    base_arch_kwargs: dict[str, Any] | None = None,
    base_module_shapes: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """The quantized architecture of a saved quantized model (the ``arch`` of its card).

    Builds ``base_arch`` (any arch a card accepts; ``base_module_shapes`` for a pruned model
    whose card carries layer sizes), quantizes it with the given bit widths and returns it
    uncalibrated; loading the saved state dict restores folded weights and ranges.
    """
    extra: dict[str, Any] = {"module_shapes": dict(base_module_shapes)} if base_module_shapes else {}
    card = ModelCard(
        arch=base_arch,
        weights="",
        num_classes=num_classes,
        input_shape=[in_channels, 1, 1],
        mean=[0.0] * in_channels,
        std=[1.0] * in_channels,
        arch_kwargs=dict(base_arch_kwargs or {}),
        **extra,
    )
    cfg = QuantConfig(
        weight_bits=weight_bits,
        act_bits=act_bits,
        weight_symmetric=weight_symmetric,
        quantize_output=quantize_output,
    )
    return quantize_network(build_model(card).eval(), cfg)


def weight_quantizers(model: nn.Module) -> list[tuple[nn.Module, WeightQuantizer]]:
    """``(layer, quantizer)`` for every weight-quantized layer."""
    return [(m, m.weight_quant) for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


def act_quantizers(model: nn.Module) -> list[ActQuantizer]:
    """Every activation quantizer."""
    return [m for m in model.modules() if isinstance(m, ActQuantizer)]


def set_quantization(model: nn.Module, weights: bool = True, activations: bool = True) -> None:
    """Switch weight / activation fake quantization on or off (e.g. to measure each one's effect)."""
    for _, wq in weight_quantizers(model):
        wq.enabled = weights
    for aq in act_quantizers(model):
        aq.enabled = activations


@torch.no_grad()
def calibrate(
    model: nn.Module,
    images: torch.Tensor,
    config: QuantConfig | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Module:
    """Set every quantizer's range: weights from the weights, activations from ``images``.

    Activation ranges are observed in one pass over ``images`` with quantized weights and float
    activations (ZeroQ's calibration), then computed with ``config.act_calib``.

    Args:
        model: from :func:`quantize_network`.
        images: normalised calibration images ``(N, C, H, W)`` (synthetic, noise, or real).
        config: calibration methods (defaults to the model's own config).
        batch_size: forward batch size.
        seed: for the observers' subsampling.

    Returns:
        ``model``, calibrated, in eval mode.
    """
    cfg = config or QuantConfig(**getattr(model, "quant_config", {}))
    cfg.validate()
    if len(images) == 0:
        raise UserInputError("no calibration images")
    for layer, wq in weight_quantizers(model):
        w2d = layer.weight.flatten(1)  # (C_out, fan_in): one clipping range per output channel
        lo, hi = calibrate_range(cfg.weight_calib, w2d, wq.bits, wq.symmetric, percentile=cfg.percentile)
        wq.set_range(lo, hi)
    g = torch.Generator().manual_seed(seed)
    observers = {}
    for aq in act_quantizers(model):
        aq.observer = observers[id(aq)] = RangeObserver(generator=g)
    device = next(iter(model.parameters())).device
    try:
        model.eval()
        for i in range(0, len(images), batch_size):
            model(images[i : i + batch_size].to(device))
    finally:
        for aq in act_quantizers(model):
            aq.observer = None
    for aq in act_quantizers(model):
        lo, hi = observers[id(aq)].compute(cfg.act_calib, aq.bits, percentile=cfg.percentile)
        aq.set_range(lo, hi)
    return model


def quantized_size_bytes(model: nn.Module) -> dict[str, int]:
    """Storage of the quantized model at its bit widths.

    Quantized weights count ``bits`` each (rounded up to whole bytes per tensor); each weight
    channel adds a float32 scale (and a 1-byte zero point when asymmetric); biases and any other
    float parameter or buffer count 4 bytes per value; each activation quantizer adds a float32
    scale and a 1-byte zero point.

    Returns:
        ``{"total": ..., "weights": ..., "float32_baseline": ...}`` in bytes, where the baseline
        is the same network with 32-bit weights (BN folded).
    """
    weights = scales = other = baseline = 0
    counted: set[int] = set()
    for layer, wq in weight_quantizers(model):
        n = layer.weight.numel()
        weights += math.ceil(n * wq.bits / 8)
        scales += wq.scale.numel() * (4 if wq.symmetric else 5)
        baseline += 4 * n
        counted.update({id(layer.weight), id(wq.scale), id(wq.zero_point)})
    for aq in act_quantizers(model):
        scales += 5
        counted.update({id(aq.scale), id(aq.zero_point)})
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in counted:
            other += 4 * t.numel()
    return {"total": weights + scales + other, "weights": weights, "float32_baseline": baseline + other}
