"""Simulated (fake) uniform quantization with a straight-through estimator, for 2 to 8 bits.

``fake_quantize(x) = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``; the
rounding passes gradients straight through (Bengio et al. 2013), the clamp does not (values outside
the range get zero gradient), as in ZeroQ's ``QuantAct`` / ``Quant_Conv2d`` and GDFQ.

* Weights: per output channel, symmetric (``[-(2^(b-1) - 1), 2^(b-1) - 1]``, zero point 0) or
  asymmetric (``[0, 2^b - 1]`` with a zero point).
* Activations: per tensor, asymmetric (the range always contains 0, so 0 is exact).

Reference: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018; Cai et al., "ZeroQ", CVPR 2020.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError

__all__ = [
    "MIN_BITS",
    "MAX_BITS",
    "check_bits",
    "quant_range",
    "quant_params",
    "fake_quantize",
    "WeightQuantizer",
    "ActQuantizer",
    "QuantConv2d",
    "QuantLinear",
]

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int, what: str = "bits") -> int:
    """``bits`` if it is an int in ``[2, 8]``, else a :class:`UserInputError` naming it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UserInputError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)``: signed and restricted when symmetric, unsigned otherwise."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def quant_params(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the real range ``[lo, hi]`` onto ``bits``-bit integers.

    The range is widened to contain 0 (so zero padding and ReLU zeros are exact).

    Args:
        lo: lower clipping bounds (any shape, e.g. ``(C,)`` per channel or ``()``).
        hi: upper clipping bounds, same shape.
        bits: bit width.
        symmetric: symmetric signed grid (zero point 0) or asymmetric unsigned grid.

    Returns:
        ``(scale, zero_point)``, float tensors shaped like ``lo``; the zero point is integral.
    """
    qmin, qmax = quant_range(bits, symmetric)
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(tiny)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(tiny)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point


class _RoundSTE(torch.autograd.Function):
    """``round`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # noqa: D102
        return grad


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Quantize then dequantize ``x`` with a straight-through gradient for the rounding.

    Args:
        x: real values.
        scale: step size, broadcastable to ``x`` (per tensor ``()`` or per channel ``(C, 1, ...)``).
        zero_point: integral offset, same shape as ``scale``.
        qmin: smallest integer level.
        qmax: largest integer level.

    Returns:
        ``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``.

    Shape:
        - x: any; output: same as ``x``.

    Reference: Jacob et al., CVPR 2018 (affine quantization); Bengio et al. 2013 (STE).
    """
    q = torch.clamp(_RoundSTE.apply(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(-1, *([1] * (ndim - 1)))  # (C,) -> (C, 1, 1, 1) for a conv weight


class WeightQuantizer(nn.Module):
    """Per-output-channel weight quantizer; ``scale``/``zero_point`` are set by calibration.

    Args:
        channels: output channels (dim 0 of the weight).
        bits: bit width (2 to 8).
        symmetric: symmetric signed grid, or asymmetric unsigned grid with a zero point.
    """

    def __init__(self, channels: int, bits: int, symmetric: bool = True) -> None:
        super().__init__()
        self.bits = check_bits(bits, "weight bits")
        self.symmetric = symmetric
        self.qmin, self.qmax = quant_range(bits, symmetric)
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("zero_point", torch.zeros(channels))
        self.enabled = True

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Set the per-channel clipping range ``[lo, hi]`` (each ``(C,)``)."""
        scale, zp = quant_params(lo, hi, self.bits, self.symmetric)
        self.scale.copy_(scale)
        self.zero_point.copy_(zp)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.enabled:
            return w
        s, z = _channel_view(self.scale, w.dim()), _channel_view(self.zero_point, w.dim())
        return fake_quantize(w, s, z, self.qmin, self.qmax)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, symmetric={self.symmetric}, per_channel=True"


class ActQuantizer(nn.Module):
    """Per-tensor asymmetric activation quantizer.

    In ``observing`` mode it passes values through unchanged and hands each tensor to
    ``observer`` (a calibration collector); otherwise it fake-quantizes with its buffers.

    Args:
        bits: bit width (2 to 8).
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.qmin, self.qmax = quant_range(bits, symmetric=False)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.enabled = True
        self.observer: object | None = None

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Set the clipping range ``[lo, hi]`` (scalars)."""
        scale, zp = quant_params(lo.reshape(()), hi.reshape(()), self.bits, symmetric=False)
        self.scale.copy_(scale)
        self.zero_point.copy_(zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.observer is not None:
            self.observer(x.detach())  # type: ignore[operator]
            return x
        if not self.enabled:
            return x
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, per_tensor=True"


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is fake-quantized per output channel (same state-dict keys + quantizer)."""

    def __init__(self, conv: nn.Conv2d, bits: int, symmetric: bool = True) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)  # type: ignore[union-attr]
        self.weight_quant = WeightQuantizer(conv.out_channels, bits, symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(x, self.weight_quant(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized per output feature."""

    def __init__(self, linear: nn.Linear, bits: int, symmetric: bool = True) -> None:
        super().__init__(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            self.weight.copy_(linear.weight)
            if linear.bias is not None:
                self.bias.copy_(linear.bias)
        self.weight_quant = WeightQuantizer(linear.out_features, bits, symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x, self.weight_quant(self.weight), self.bias)
