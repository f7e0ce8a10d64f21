"""Real data (for evaluation and teacher training only) and labelled datasets from disk."""

from .digits import DIGITS_SPLIT, digits_split
from .files import load_labelled

__all__ = ["DIGITS_SPLIT", "digits_split", "load_labelled"]
