"""Accuracy of a model on real labelled data: the user's, or digits for models trained on digits.

The data is the user's (``--data`` / ``--eval-data``), or the digits test split for models whose
card says they were trained on digits (``"trained_on": "digits"``).

Nothing is claimed for other models unless data is given: :func:`default_eval_data` is ``None`` for
them, and the pipeline reports their accuracy as ``null``. Evaluation streams the data in batches
(:func:`datafree.data.evalsets.open_eval_data`), so memory does not grow with the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cards import LoadedModel, ModelCard, load_model
from .data.digits import resize_images
from .data.evalsets import open_eval_data
from .errors import UserInputError
from .normalize import Normalizer
from .utils import count_params, device_of, model_size_bytes

__all__ = ["accuracy", "evaluate", "evaluate_model", "default_eval_data", "measure", "TRAINED_ON"]

# The card field naming the real dataset of a model's task (a teacher: what it was trained on; a model
# distilled, pruned or quantized from it carries its teacher's). "digits" makes the digits test split
# the default evaluation data.
TRAINED_ON = "trained_on"


def _logits(out: Any) -> torch.Tensor:
    """A model's logits: the output itself, a tuple's first tensor, or a dict's ``logits``."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    return out


@torch.no_grad()
def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalizer: Normalizer,
    batch_size: int = 512,
) -> float:
    """Top-1 accuracy of ``model`` on pixels ``images`` ``(N, C, H, W)`` in [0, 1]."""
    was_training = model.training
    model.eval()
    dev = device_of(model)
    correct = 0
    for i in range(0, len(images), batch_size):
        x = normalizer(images[i : i + batch_size].to(dev))
        correct += (_logits(model(x)).argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(1, len(images))


def default_eval_data(card: ModelCard) -> str | None:
    """``"digits:test"`` when the card says the model's task is digits, else ``None`` (nothing to claim)."""
    return "digits:test" if card.extra.get(TRAINED_ON) == "digits" else None


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    card: ModelCard,
    data: str | Path | None = None,
    *,
    batch_size: int = 256,
    workers: int = 0,
    teacher: LoadedModel | None = None,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of ``model`` on ``data``, streamed in batches.

    Args:
        model: the model (its card's input shape and normalisation apply).
        card: the model's card.
        data: see :func:`datafree.data.evalsets.open_eval_data`; ``None``: the card's default
            (:func:`default_eval_data`); a card without one is refused.
        batch_size: images per forward pass.
        workers: DataLoader workers for image folders.
        teacher: also report ``agreement``, the fraction of images where the arg-max of the model
            and of this teacher agree (the teacher sees the same images at its own input).

    Returns:
        ``{"accuracy", "top5", "num_samples", "params", "size_bytes", "data", "per_class",
        "class_images"}`` (+ ``agreement``): ``per_class`` is the top-1 accuracy on each class's images
        (None for a class the data lacks), ``class_images`` how many images each class has.
    """
    spec = data if data is not None else default_eval_data(card)
    if spec is None:
        raise UserInputError(
            f"no evaluation data for {card.name or card.arch}: its card does not say it was trained on "
            "digits; "
            "give labelled data (--data / --eval-data: an ImageFolder dir, .npz, cifar10:ROOT, imagenet:DIR)"
        )
    ds = open_eval_data(spec, card, batch_size=batch_size, workers=workers)
    was_training = model.training
    model.eval()
    dev = device_of(model)
    norm = card.normalizer()
    k = min(5, card.num_classes)
    top1 = top5 = agree = n = 0
    hits = torch.zeros(card.num_classes, dtype=torch.long)
    seen = torch.zeros(card.num_classes, dtype=torch.long)
    t_shape = tuple(int(v) for v in teacher.card.input_shape) if teacher is not None else None
    if teacher is not None and teacher.card.num_classes != card.num_classes:
        raise UserInputError(
            f"--teacher has {teacher.card.num_classes} classes but the model has {card.num_classes}"
        )
    for x, y in ds:
        logits = _logits(model(norm(x.to(dev)))).float().cpu()
        if logits.ndim != 2 or logits.shape[1] != card.num_classes:
            raise UserInputError(
                f"the model returned {tuple(logits.shape)}, not (N, {card.num_classes}) logits"
            )
        pred = logits.argmax(1)
        right = pred == y
        top1 += int(right.sum())
        seen += torch.bincount(y, minlength=card.num_classes)[: card.num_classes]
        hits += torch.bincount(y[right], minlength=card.num_classes)[: card.num_classes]
        top5 += int((logits.topk(k, 1).indices == y[:, None]).any(1).sum())
        if teacher is not None:
            tx = resize_images(x, t_shape).to(device_of(teacher.model))  # type: ignore[arg-type]
            t_pred = _logits(teacher.model(teacher.card.normalizer()(tx))).argmax(1).cpu()
            agree += int((t_pred == pred).sum())
        n += len(y)
    model.train(was_training)
    res: dict[str, Any] = {
        "accuracy": top1 / max(1, n),
        "top5": top5 / max(1, n),
        "num_samples": n,
        "params": count_params(model),
        "size_bytes": model_size_bytes(model),
        "data": ds.name,
        "per_class": [round(int(h) / int(c), 4) if c else None for h, c in zip(hits, seen, strict=True)],
        "class_images": [int(c) for c in seen],
    }
    if teacher is not None:
        res["agreement"] = agree / max(1, n)
    return res


def measure(model: nn.Module, card: ModelCard, data: str | Path | None = None) -> dict[str, Any]:
    """:func:`evaluate_model` where there is data to measure on; otherwise accuracy ``None`` (no claim).

    The pipeline's way of reporting accuracy: on ``data`` when given, on digits for digits models,
    and nothing for a model whose card names no data.
    """
    if data is None and default_eval_data(card) is None:
        return {"accuracy": None, "top5": None, "num_samples": 0, "params": count_params(model),
                "size_bytes": model_size_bytes(model), "data": None, "per_class": None,
                "class_images": None}  # fmt: skip
    return evaluate_model(model, card, data)


def evaluate(
    spec: str | Path | LoadedModel,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 256,
    workers: int = 0,
    teacher: str | Path | LoadedModel | None = None,
    **load_kw: Any,
) -> dict[str, Any]:
    """Load a model from its card and evaluate it (see :func:`evaluate_model`)."""
    lm = spec if isinstance(spec, LoadedModel) else load_model(spec, device, **load_kw)
    t = (
        teacher
        if teacher is None or isinstance(teacher, LoadedModel)
        else load_model(teacher, device, **load_kw)
    )
    return evaluate_model(lm.model, lm.card, data, batch_size=batch_size, workers=workers, teacher=t)
