"""Quantization from synthetic data: fake-quant simulation (2-8 bits), calibration, KD fine-tuning, int8."""

from .api import CALIBRATION_DATA, calibration_images, quantize
from .calibration import CALIBRATORS, calibrate_range, minmax_range, mse_range, percentile_range
from .fakequant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer, fake_quantize, quant_params
from .fold import fold_batchnorm, fold_bn_weights
from .qat import FinetuneConfig, finetune
from .qmodel import QuantConfig, build_quantized, calibrate, quantize_network, quantized_size_bytes

__all__ = [
    "CALIBRATION_DATA",
    "FinetuneConfig",
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
