"""KD fine-tuning of a fake-quantized network on synthetic data, the full-precision model as teacher.

GDFQ-style (Xu et al., "Generative Low-bitwidth Data Free Quantization", ECCV 2020): after
calibration, the quantized copy learns to match the full-precision network's soft outputs on
surrogate images; gradients reach the (folded) float weights through the straight-through
rounding, while the calibrated clipping ranges stay fixed. It reuses the shared KD stage
(:func:`datafree.distill.distill`) with a :class:`~datafree.sources.TensorSource` over the
synthetic images, with its random-crop augmentation, so a small calibration set goes further.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..distill import DistillResult, KDConfig, distill
from ..errors import UserInputError
from ..sources import TensorSource

__all__ = ["FinetuneConfig", "finetune"]


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (GDFQ uses KL at a high temperature and a small learning rate)."""

    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    temperature: float = 4.0
    augment: bool = True
    seed: int = 0

    def kd_config(self) -> KDConfig:
        """The equivalent :class:`KDConfig` of the shared KD stage."""
        return KDConfig(
            epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
            optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
            temperature=self.temperature, augment=self.augment, seed=self.seed,
        )


def finetune(
    quantized: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    config: FinetuneConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
) -> DistillResult:
    """Fine-tune ``quantized`` in place to match ``teacher`` on ``images``.

    Args:
        quantized: a calibrated model from :func:`datafree.quant.quantize_network`.
        teacher: the full-precision network (frozen, eval mode).
        images: normalised synthetic images ``(N, C, H, W)``.
        config: :class:`FinetuneConfig`.
        checkpoint_dir: resumable checkpoints of the KD stage.

    Returns:
        The KD stage's result (history per epoch); ``quantized`` ends in eval mode.
    """
    cfg = config or FinetuneConfig()
    if len(images) == 0:
        raise UserInputError("no images to fine-tune on")
    source = TensorSource(images.to(next(iter(teacher.parameters())).device), seed=cfg.seed)
    return distill(
        teacher, quantized, source, cfg.kd_config(), input_shape=list(images.shape[1:]),
        checkpoint_dir=checkpoint_dir, desc="quantized fine-tuning",
    )
