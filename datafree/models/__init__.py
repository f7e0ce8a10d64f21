"""Model zoo: small architectures that adapt to any input shape and class count.

Every factory has the signature ``fn(num_classes: int, in_channels: int, **kwargs) -> nn.Module``
and is registered in :data:`MODELS`. :func:`create_model` also accepts any torchvision classifier
name. Convention: activation modules are never reused inside a network (PT2E quantizers need each
use to be its own node).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserInputError
from ..registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

from . import lenet as lenet  # noqa: E402  (registers)
from . import resnet as resnet  # noqa: E402  (registers)

__all__ = ["MODELS", "create_model", "list_models", "torchvision_names", "default_student_for"]


def torchvision_names() -> list[str]:
    """Names of torchvision classification models."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models(pattern: str = "*") -> list[str]:
    """Registered datafree architectures matching ``pattern``."""
    return MODELS.names(pattern)


class _RepeatChannels(nn.Module):
    """Adapts a C-channel input to a 3-channel torchvision network by repeating / averaging."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x):  # noqa: D102
        if self.in_channels == 1:
            return x.expand(-1, 3, -1, -1)
        return x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)


def _torchvision_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision

    if name in ("googlenet", "inception_v3"):  # one logits tensor in training too (KD has no use for aux heads)
        kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        model = nn.Sequential(_RepeatChannels(in_channels), model)
    return model


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build an architecture by registry name or torchvision name, randomly initialised.

    Args:
        name: a key of :data:`MODELS` (``resnet8``, ``lenet5``, ...) or a torchvision
            classifier name (``resnet18``, ``mobilenet_v2``, ...), prefixed ``torchvision:`` or not.
        num_classes: number of output logits.
        in_channels: input channels.
        **kwargs: forwarded to the factory.

    Returns:
        The model, on CPU, in train mode.
    """
    if num_classes < 1 or in_channels < 1:
        raise UserInputError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
    if name in MODELS:
        return MODELS.create(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    tv_name = name.removeprefix("torchvision:")
    if tv_name in torchvision_names():
        return _torchvision_model(tv_name, num_classes, in_channels, **kwargs)
    raise UserInputError(
        f"unknown architecture {name!r}; registered: {', '.join(MODELS.names())} "
        "(or any torchvision classifier name, or module:callable / file.py:callable in a card)"
    )


def default_student_for(teacher_arch: str) -> str:
    """A registered student architecture that is smaller than ``teacher_arch``."""
    table = {
        "resnet20": "resnet8",
        "resnet14": "resnet8_half",
        "resnet8": "resnet8_half",
        "resnet8_half": "resnet8_quarter",
        "lenet5": "lenet5_half",
        "lenet5_bn": "lenet5_half_bn",
        "wrn16_2": "wrn16_1",
        "wrn40_2": "wrn16_2",
    }
    return table.get(teacher_arch, "resnet8_half")
