"""KD fine-tuning of a fake-quantized network on synthetic data, the full-precision model as teacher.

GDFQ-style (Xu et al., "Generative Low-bitwidth Data Free Quantization", ECCV 2020): after
calibration, the quantized copy learns to match the full-precision network's soft outputs on
surrogate images; gradients reach the (folded) float weights through the straight-through
rounding, while the calibrated clipping ranges stay fixed. It reuses the shared KD stage
(:func:`datafree.distill.distill`) with a :class:`~datafree.sources.TensorSource` over the
synthetic images, with its random-crop augmentation, so a small calibration set goes further.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..distill import DistillResult, KDConfig, distill
from ..errors import UserInputError
from ..plan import kd_settings
from ..sources import TensorSource

__all__ = ["FINETUNE_KD", "finetune_kd", "finetune"]


# GDFQ's fine-tuning (KL at a high temperature, Adam at a small learning rate): the defaults of
# :func:`finetune_kd`, over :class:`KDConfig`'s.
FINETUNE_KD: dict[str, Any] = {
    "epochs": 10, "steps_per_epoch": 50, "batch_size": 64, "lr": 1e-4, "optimizer": "adam",
    "weight_decay": 0.0, "temperature": 4.0, "augment": True,
}  # fmt: skip


def finetune_kd(**overrides: Any) -> KDConfig:
    """The KD settings of quantization fine-tuning: :data:`FINETUNE_KD` with ``overrides`` on top."""
    return kd_settings(None, {**FINETUNE_KD, **overrides})


def finetune(
    quantized: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    config: KDConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
) -> DistillResult:
    """Fine-tune ``quantized`` in place to match ``teacher`` on ``images``.

    Args:
        quantized: a calibrated model from :func:`datafree.quant.quantize_network`.
        teacher: the full-precision network (frozen, eval mode).
        images: normalised synthetic images ``(N, C, H, W)``.
        config: the KD settings (default :func:`finetune_kd`).
        checkpoint_dir: resumable checkpoints of the KD stage.

    Returns:
        The KD stage's result (history per epoch); ``quantized`` ends in eval mode.
    """
    cfg = config or finetune_kd()
    if len(images) == 0:
        raise UserInputError("no images to fine-tune on")
    source = TensorSource(images.to(next(iter(teacher.parameters())).device), seed=cfg.seed)
    return distill(
        teacher,
        quantized,
        source,
        cfg,
        input_shape=list(images.shape[1:]),
        checkpoint_dir=checkpoint_dir,
        desc="quantized fine-tuning",
    )
