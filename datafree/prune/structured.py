"""Structured channel pruning with Torch-Pruning: channels are removed, not masked.

Torch-Pruning traces the model into a dependency graph, so every layer coupled to a pruned
channel shrinks with it: the BatchNorm after a conv, the next conv's input, both branches of a
residual addition, and the classifier's input features. The classifier's outputs (the classes)
are never pruned.

Reference: Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023 (Torch-Pruning).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from ..errors import UserInputError
from .importance import Criterion, accumulate_taylor_gradients

__all__ = ["classifier_layers", "prune_channels", "check_ratio"]


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float in (0, 1), or a :class:`UserInputError` naming it."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise UserInputError(f"--ratio must be a fraction of channels in (0, 1), got {ratio!r}")
    return float(ratio)


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layers whose outputs are the class scores.

    That is the last Linear (or 1x1 conv head) with ``num_classes`` outputs. These must keep all
    their outputs.
    """
    heads = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes)
    ]
    if not heads:
        raise UserInputError(
            f"no layer with {num_classes} outputs found: cannot tell which layer is the classifier"
        )
    return heads[-1:]


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    ratio: float,
    criterion: Criterion,
    *,
    num_classes: int,
    global_pruning: bool = False,
    ignored_layers: Sequence[nn.Module] = (),
    batches: Iterable[torch.Tensor] = (),
    max_layer_ratio: float = 0.9,
) -> nn.Module:
    """Remove ``ratio`` of the channels of ``model`` in place; returns the (same) model.

    Args:
        model: the network to prune (a copy of the teacher); modified in place.
        example_inputs: one normalised input batch ``(B, C, H, W)`` to trace the graph.
        ratio: fraction of channels to remove, in (0, 1). Uniform: from every prunable layer
            group. Global: ranked across all groups (importances normalised per group), so some
            layers lose more than others (at most ``max_layer_ratio``).
        criterion: from :func:`~datafree.prune.importance.create_criterion`.
        num_classes: the classifier's output count (its outputs are protected).
        global_pruning: global rather than uniform ranking.
        ignored_layers: further layers whose outputs must not be pruned.
        batches: synthetic batches for data-driven criteria (``taylor``).
        max_layer_ratio: with global pruning, the most any single layer may lose.

    Returns:
        ``model``, now smaller, in eval mode.
    """
    ratio = check_ratio(ratio)
    # Torch-Pruning leaves out layers whose parameters do not require gradients (a frozen teacher
    # copy would come back unpruned), and the pruned model is trained next anyway.
    model.requires_grad_(True)
    if criterion.needs_gradients:
        accumulate_taylor_gradients(model, batches)
    ignored = [*classifier_layers(model, num_classes), *ignored_layers]
    pruner = tp.pruner.BasePruner(
        model,
        example_inputs,
        importance=criterion.importance,
        global_pruning=global_pruning,
        pruning_ratio=ratio,
        max_pruning_ratio=max_layer_ratio,
        ignored_layers=ignored,
    )
    with torch.no_grad():
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()
