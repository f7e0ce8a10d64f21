"""Channel-importance criteria, registered by name: ``create_criterion("l2")``.

* ``l1`` / ``l2``: magnitude of each channel's weights across its coupled group
  (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).
* ``bn``: magnitude of the BatchNorm scale gamma of each channel (Liu et al., "Learning Efficient
  Convolutional Networks through Network Slimming", ICCV 2017). Needs BatchNorm, no data.
* ``taylor``: first-order Taylor estimate ``|w * dL/dw|`` summed over each channel's group
  (Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019). The
  gradients come from **synthetic** batches only (:func:`accumulate_taylor_gradients`).

The scoring itself is Torch-Pruning's; this module names the criteria and says which need data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ..errors import UserInputError
from ..registry import Registry

__all__ = ["Criterion", "CRITERIA", "create_criterion", "list_criteria", "accumulate_taylor_gradients"]


@dataclass(frozen=True)
class Criterion:
    """A named importance: the Torch-Pruning scorer and whether it needs gradients on data."""

    name: str
    importance: tp.importance.Importance
    needs_gradients: bool = False
    needs_batchnorm: bool = False


CRITERIA: Registry[Criterion] = Registry("importance")


def _register(name: str, make: Callable[[], tp.importance.Importance], **flags: bool) -> None:
    CRITERIA.register(name)(lambda: Criterion(name, make(), **flags))


_register("l1", lambda: tp.importance.MagnitudeImportance(p=1))
_register("l2", lambda: tp.importance.MagnitudeImportance(p=2))
_register("bn", lambda: tp.importance.BNScaleImportance(), needs_batchnorm=True)
_register("taylor", lambda: tp.importance.TaylorImportance(), needs_gradients=True)


def list_criteria() -> list[str]:
    """Registered criterion names."""
    return CRITERIA.names()


def create_criterion(name: str, model: nn.Module | None = None) -> Criterion:
    """The criterion registered as ``name``; with ``model``, check it applies (BN for ``bn``)."""
    crit = CRITERIA.create(name)
    if crit.needs_batchnorm and model is not None:
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise UserInputError(
                f"--importance {name} needs BatchNorm layers and this model has none; use l1, l2 or taylor"
            )
    return crit


def accumulate_taylor_gradients(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Fill ``param.grad`` with the summed gradient of the loss over ``batches``; returns images seen.

    Synthetic images carry no ground truth, so the loss is the cross-entropy to the model's own
    predicted class (the unpruned model is the teacher): the gradient says how much each weight
    supports the teacher's decisions. The forward runs in eval mode so BatchNorm uses its running
    statistics, as at inference, and those statistics are not changed.

    Args:
        model: the unpruned model (its parameters get ``requires_grad`` for the call).
        batches: normalised synthetic images, each ``(B, C, H, W)``.

    Returns:
        Number of images the gradients were summed over.
    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    seen = 0
    try:
        for x in batches:
            logits = model(x)
            loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
            loss.backward()
            seen += len(x)
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    if seen == 0:
        raise UserInputError("--importance taylor needs synthetic batches (give --data or --method)")
    return seen
