"""datafree: data-free distillation, pruning, quantization and dataset synthesis.

Typical use::

    from datafree import load_model, compress
    report = compress("resnet8_digits", "runs/demo")   # synthesize -> distil -> evaluate
"""

from __future__ import annotations

import importlib
from typing import Any

from . import deploy as _deploy  # noqa: F401  (registers the .onnx/.pt2 card loaders)
from .cards import LoadedModel, ModelCard, load_card, load_model, save_model, shipped_teachers
from .dataset import SyntheticDataset, export_dataset
from .distill import DistillResult, KDConfig, distill
from .errors import DatafreeError, UserInputError
from .evaluate import evaluate, evaluate_model
from .models import MODELS, create_model, list_models
from .quant import int8_artefact as _int8_artefact  # noqa: F401  (registers the int8 card loader)
from .sources import DatasetSource, NoiseSource, SynthesizerSource, TensorSource

__version__ = "0.1.0"

# The jobs sit above the backends (generators/ imports datafree's core, so importing the package
# must not import them eagerly): loaded on first use (PEP 562).
_LAZY = {"synthesize_dataset": "synthesis", "compress": "pipeline", "distill_to_dir": "pipeline"}


def __getattr__(name: str) -> Any:
    """Import the upper-layer names of ``__all__`` on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datafree' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "DatafreeError",
    "DatasetSource",
    "DistillResult",
    "KDConfig",
    "LoadedModel",
    "MODELS",
    "ModelCard",
    "NoiseSource",
    "SyntheticDataset",
    "SynthesizerSource",
    "TensorSource",
    "UserInputError",
    "__version__",
    "compress",
    "create_model",
    "distill",
    "distill_to_dir",
    "evaluate",
    "evaluate_model",
    "export_dataset",
    "list_models",
    "load_card",
    "load_model",
    "save_model",
    "shipped_teachers",
    "synthesize_dataset",
]
