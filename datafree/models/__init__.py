"""Model zoo: small architectures and the field's CIFAR zoo, for any input shape and class count.

Every factory has the signature ``fn(num_classes: int, in_channels: int, **kwargs) -> nn.Module``
and is registered in :data:`MODELS`. :func:`create_model` also accepts any torchvision classifier
name (``torchvision:NAME`` or bare) and any timm model (``timm:NAME``, the optional extra
``datafree[timm]``). Convention: activation modules are never reused inside a network (PT2E
quantizers need each use to be its own node).

A model's output is its logits ``(B, num_classes)``. Models that return more are accepted through
:func:`logits_of`: a tuple or list gives its first tensor (``(logits, features)``), a dict (or a
``ModelOutput``) its ``"logits"`` entry. :func:`attach_logits_hook` makes such a model return the logits
alone, so every stage (synthesis, KD, evaluation, pruning) sees the same thing.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from . import lenet as lenet  # (registers)
from . import mobilenetv2 as mobilenetv2  # (registers)
from . import resnet as resnet  # (registers)
from . import resnet_cifar as resnet_cifar  # (registers)
from . import vgg as vgg  # (registers)
from . import wresnet as wresnet  # (registers)
from .zoo import MODELS

__all__ = [
    "MODELS",
    "create_model",
    "list_models",
    "torchvision_names",
    "default_student_for",
    "known_student_for",
    "count_arch_params",
    "describe_models",
    "logits_of",
    "attach_logits_hook",
    "keep_logits_output",
    "TIMM_EXTRA_HINT",
]

TIMM_EXTRA_HINT = "install the extra: pip install 'datafree[timm]'"


def torchvision_names() -> list[str]:
    """Names of torchvision classification models."""
    return list(_torchvision_names())


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    # listing scans every model builder (seconds on a busy CPU): once per process
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


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

    if name in (
        "googlenet",
        "inception_v3",
    ):  # one logits tensor in training too (KD has no use for aux heads)
        kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        model = nn.Sequential(_RepeatChannels(in_channels), model)
    return model


def logits_of(output: Any) -> torch.Tensor | None:
    """The logits in a model's output, or None when there are none to find.

    A tensor is returned as is; a tuple or list gives its first tensor (``(logits, features)``); a
    dict (``ModelOutput`` included) its ``"logits"`` entry.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    if isinstance(output, dict):
        logits = output.get("logits")
        return logits if isinstance(logits, torch.Tensor) else None
    return None


def _logits_hook(module: nn.Module, args: Any, output: Any) -> torch.Tensor | None:
    """Forward hook: replace a tuple / dict output by its logits (a tensor output stays as it is)."""
    if isinstance(output, torch.Tensor):
        return None
    logits = logits_of(output)
    return logits if logits is not None else None


def attach_logits_hook(model: nn.Module) -> nn.Module:
    """Make ``model(x)`` return the logits alone (see :func:`logits_of`); idempotent, returns ``model``.

    A forward hook on the model itself: its module names and state-dict keys do not change.
    """
    if not getattr(model, "_datafree_logits_hook", False):
        model.register_forward_hook(_logits_hook)
        model._datafree_logits_hook = True  # type: ignore[assignment]
    return model


def keep_logits_output(gm: Any) -> bool:
    """Rewrite a ``torch.fx.GraphModule`` that returns a tuple or dict to return its logits; in place.

    Tracing does not run forward hooks, so a traced (logits, features) model needs this where
    :func:`attach_logits_hook` served the eager one. Returns whether the graph changed.
    """
    out = next(n for n in gm.graph.nodes if n.op == "output")
    value = out.args[0]
    if isinstance(value, (tuple, list)):
        logits = next((v for v in value if isinstance(v, torch.fx.Node)), None)
    elif isinstance(value, dict):
        logits = value.get("logits")
    else:
        return False
    if not isinstance(logits, torch.fx.Node):
        return False
    out.args = (logits,)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return True


def _timm_model(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise UserInputError(
            f"arch 'timm:{name}' needs timm, which is not installed; {TIMM_EXTRA_HINT}"
        ) from None
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        hint = f"; close: {', '.join(close)}" if close else ""
        raise UserInputError(f"timm has no model {name!r}{hint}")
    # never pretrained here: weights come from the card's file, nothing downloads at run time
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return attach_logits_hook(model)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build an architecture by registry, torchvision or timm name, randomly initialised.

    Args:
        name: a key of :data:`MODELS` (``resnet8``, ``wrn40_2``, ``resnet34_cifar``, ...), a torchvision
            classifier name (``resnet18``, ``mobilenet_v2``, ...), prefixed ``torchvision:`` or not, or
            ``timm:NAME`` (needs ``datafree[timm]``).
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
    if name.startswith("timm:"):
        return _timm_model(name.removeprefix("timm:"), num_classes, in_channels, **kwargs)
    tv_name = name.removeprefix("torchvision:")
    if tv_name in torchvision_names():
        # googlenet / inception return a namedtuple in train mode: the hook keeps the logits
        return attach_logits_hook(_torchvision_model(tv_name, num_classes, in_channels, **kwargs))
    raise UserInputError(
        f"unknown architecture {name!r}; registered: {', '.join(MODELS.names())} "
        "(or any torchvision classifier name, timm:NAME, or module:callable / file.py:callable in a card)"
    )


def count_arch_params(name: str, num_classes: int = 10, in_channels: int = 3) -> int:
    """Parameters of a registered architecture, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = MODELS.create(name, num_classes=num_classes, in_channels=in_channels)
    return sum(p.numel() for p in model.parameters())


def describe_models(num_classes: int = 10) -> list[dict[str, Any]]:
    """``[{name, params, description}]`` of every registered architecture (params at ``num_classes``)."""
    out = []
    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
        params = count_arch_params(name, num_classes)
        out.append({"name": name, "params": params, "description": doc[0] if doc else ""})
    return out


# teacher arch -> default student: the field's pairs (CMI / Fast-Datafree / RepDistiller tables) where
# there is one, otherwise a registered model less than half the teacher's size
_DEFAULT_STUDENTS = {
    "resnet20": "resnet8",
    "resnet14": "resnet8_half",
    "resnet8": "resnet8_half",
    "resnet8_half": "resnet8_quarter",
    "lenet5": "lenet5_half",
    "lenet5_bn": "lenet5_half_bn",
    "resnet34_cifar": "resnet18_cifar",
    "resnet50_cifar": "resnet18_cifar",
    "resnet18_cifar": "mobilenetv2_cifar",
    "mobilenetv2_cifar": "wrn16_2",
    "wrn40_2": "wrn16_2",
    "wrn40_1": "wrn16_1",
    "wrn16_2": "wrn16_1",
    "wrn16_1": "resnet8",
    "vgg13_cifar": "vgg8_cifar",
    "vgg11_cifar": "vgg8_cifar",
    "vgg8_cifar": "wrn16_1",
    "wrn40_2_post": "wrn16_2_post",
    "wrn16_2_post": "wrn16_1_post",
    "torchvision:resnet34": "torchvision:resnet18",
    "torchvision:resnet50": "torchvision:resnet18",
    "torchvision:resnet101": "torchvision:resnet18",
    "timm:resnet34": "timm:resnet18",
    "timm:resnet50": "timm:resnet18",
}


def known_student_for(teacher_arch: str) -> str | None:
    """The field's student pair for ``teacher_arch``, if any.

    For example resnet34 -> resnet18, wrn40_2 -> wrn16_2.
    """
    return _DEFAULT_STUDENTS.get(teacher_arch)


def default_student_for(teacher_arch: str) -> str:
    """The default student of ``teacher_arch``: the field's pair, or a registered smaller model."""
    return known_student_for(teacher_arch) or "resnet8_half"
