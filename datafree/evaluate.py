"""Accuracy of a model on real labelled data (the digits test split by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cards import LoadedModel, ModelCard, load_model
from .data import digits_split, load_labelled
from .normalize import Normalizer
from .utils import count_params, device_of, model_size_bytes

__all__ = ["accuracy", "evaluate", "evaluate_model"]


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer, batch_size: int = 512
) -> float:
    """Top-1 accuracy of ``model`` on pixels ``images`` ``(N, C, H, W)`` in [0, 1]."""
    was_training = model.training
    model.eval()
    dev = device_of(model)
    correct = 0
    for i in range(0, len(images), batch_size):
        x = normalizer(images[i : i + batch_size].to(dev))
        correct += (model(x).argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(1, len(images))


def evaluate_model(model: nn.Module, card: ModelCard, data: str | Path | None = None) -> dict[str, Any]:
    """Accuracy on ``data`` (ImageFolder dir or ``.npz``) or on the digits test split."""
    shape = tuple(card.input_shape)
    if data is None:
        x, y = digits_split("test", shape)  # type: ignore[arg-type]
        source = "digits:test"
    else:
        from .data.files import check_labels

        x, y = load_labelled(data, shape)  # type: ignore[arg-type]
        check_labels(y, card.num_classes, data)
        source = str(data)
    return {
        "accuracy": accuracy(model, x, y, card.normalizer()),
        "num_samples": len(y),
        "params": count_params(model),
        "size_bytes": model_size_bytes(model),
        "data": source,
    }


def evaluate(
    spec: str | Path | LoadedModel, data: str | Path | None = None, device: str | torch.device = "cpu", **load_kw: Any
) -> dict[str, Any]:
    """Load a model from its card and evaluate it (see :func:`evaluate_model`)."""
    lm = spec if isinstance(spec, LoadedModel) else load_model(spec, device, **load_kw)
    return evaluate_model(lm.model, lm.card, data)
