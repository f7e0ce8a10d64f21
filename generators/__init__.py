"""Generator backends, registered by their paper's name: ``create_synthesizer(name, teacher, card)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from datafree.cards import ModelCard
from datafree.errors import UserInputError
from datafree.hooks import require_batchnorm

from . import cmi as cmi  # noqa: E402  (registers)
from . import dafl as dafl  # noqa: E402  (registers)
from . import deepinversion as deepinversion  # noqa: E402  (registers)
from . import dfad as dfad  # noqa: E402  (registers)
from . import fast as fast  # noqa: E402  (registers)
from . import nayer as nayer  # noqa: E402  (registers)
from . import zeroq as zeroq  # noqa: E402  (registers)
from . import zskt as zskt  # noqa: E402  (registers)
from .base import GENERATORS, Batch, SynthConfig, Synthesizer, parse_overrides, register

__all__ = [
    "GENERATORS",
    "Batch",
    "SynthConfig",
    "Synthesizer",
    "create_synthesizer",
    "list_methods",
    "method_class",
    "register",
]


def list_methods() -> list[str]:
    """Registered backend names."""
    return GENERATORS.names()


def method_class(name: str) -> type[Synthesizer]:
    """The backend class registered as ``name`` (a clear error for an unknown one)."""
    return GENERATORS.get(name)  # type: ignore[return-value]


def create_synthesizer(name: str, teacher: nn.Module, card: ModelCard, **overrides: Any) -> Synthesizer:
    """Build backend ``name`` for ``teacher``; ``overrides`` set fields of its config.

    A BN-based backend on a teacher without BatchNorm raises a clear error naming the alternatives.
    Fields not given take the backend's rule-based defaults for this teacher
    (:meth:`Synthesizer.default_overrides`), then the config's own defaults.
    """
    cls = method_class(name)
    if card.is_int8:
        raise UserInputError(
            f"{card.path or card.name} is a real int8 model: synthesis needs gradients through the teacher, "
            "which int8 kernels do not give; use the float model it was made from as the teacher"
        )
    config = parse_overrides(cls.Config, {**cls.default_overrides(card), **overrides})
    if cls.requires_batchnorm:
        require_batchnorm(teacher, name)
    return cls(teacher, card, config)
