"""Quantization from synthetic data: fake-quant simulation (2-8 bits), calibration, KD fine-tuning, int8."""

import importlib
from typing import Any

from .calibration import CALIBRATORS, calibrate_range, minmax_range, mse_range, percentile_range
from .fakequant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer, fake_quantize, quant_params
from .fold import fold_batchnorm, fold_bn_weights
from .qmodel import QuantConfig, build_quantized, calibrate, quantize_network, quantized_size_bytes

# The jobs (calibration data, quantize, KD fine-tuning) sit above the backends and the KD stage; the
# kernels above do not. Importing a kernel module (datafree.cards loads int8 models through
# int8_artefact) must not import the jobs: they load on first use (PEP 562).
_LAZY = {
    "CALIBRATION_DATA": "api", "QuantizeJob": "api", "calibration_images": "api", "quantize": "api",
    "FINETUNE_KD": "qat", "finetune_kd": "qat", "finetune": "qat",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """Import the job names of ``__all__`` on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datafree.quant' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "CALIBRATION_DATA",
    "QuantizeJob",
    "FINETUNE_KD",
    "finetune_kd",
    "calibration_images",
    "finetune",
    "quantize",
    "CALIBRATORS",
    "ActQuantizer",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "build_quantized",
    "calibrate",
    "calibrate_range",
    "fake_quantize",
    "fold_batchnorm",
    "fold_bn_weights",
    "minmax_range",
    "mse_range",
    "percentile_range",
    "quant_params",
    "quantize_network",
    "quantized_size_bytes",
]
