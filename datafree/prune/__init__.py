"""Structured channel pruning fed by synthetic data, with KD recovery from the unpruned model.

``prune_model(card, ratio, importance="l2", data=DIR | method=NAME, epochs=E, out_dir=OUT)``
removes channels for real (Torch-Pruning), recovers accuracy through :func:`datafree.distill`
and writes a normal model card whose ``module_shapes`` describe the pruned layers.
"""

from __future__ import annotations

from .importance import CRITERIA, Criterion, accumulate_taylor_gradients, create_criterion, list_criteria
from .stage import REPORT, PruneResult, prune_model, prune_stage, surrogate_source
from .structured import check_ratio, classifier_layers, prune_channels

__all__ = [
    "CRITERIA",
    "Criterion",
    "PruneResult",
    "REPORT",
    "accumulate_taylor_gradients",
    "check_ratio",
    "classifier_layers",
    "create_criterion",
    "list_criteria",
    "prune_channels",
    "prune_model",
    "prune_stage",
    "surrogate_source",
]
