"""The registry of datafree's own architectures (the factories register themselves here)."""

from __future__ import annotations

from torch import nn

from ..registry import Registry

__all__ = ["MODELS"]

MODELS: Registry[nn.Module] = Registry("model")
