"""datafree: data-free distillation, pruning, quantization and dataset synthesis.

Typical use::

    from datafree import load_model, compress
    report = compress("resnet8_digits", "runs/demo")   # synthesize -> distil -> evaluate
"""

from __future__ import annotations

from .cards import LoadedModel, ModelCard, load_card, load_model, save_model, shipped_teachers
from .dataset import SyntheticDataset, export_dataset
from .distill import DistillResult, KDConfig, distill
from .errors import DatafreeError, UserInputError
from .evaluate import evaluate, evaluate_model
from .models import MODELS, create_model, list_models
from .pipeline import compress, distill_to_dir
from .sources import DatasetSource, NoiseSource, SynthesizerSource, TensorSource
from .synthesis import synthesize_dataset

__version__ = "0.1.0"

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
