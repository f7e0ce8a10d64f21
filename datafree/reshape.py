"""Per-module sizes that override an architecture's defaults: how a card describes a pruned model.

Structured pruning changes the sizes of layers (``out_channels``, ``num_features``, ...) but not
the code of the model. A card therefore describes a pruned model as its original ``arch`` plus a
``module_shapes`` table ``{module name: {attribute: size}}``; :func:`apply_module_shapes` resizes
those modules of a freshly built model (new, randomly initialised parameters of the new shapes),
after which the pruned weights load with ``load_state_dict(strict=True)``. Nothing is pickled and
nothing but the card and the weights is needed.

Supported module types are those of the :data:`RESIZERS` table (convolutions, linear layers and
the usual normalisation layers); a pruned model with another resized module type is refused when
it is saved, not silently mis-described.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserInputError

__all__ = ["RESIZERS", "module_shapes", "shape_changes", "apply_module_shapes"]

Shapes = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Resizer:
    """How to read and rewrite the size attributes of one module type."""

    attrs: tuple[str, ...]
    rebuild: Callable[[nn.Module], None]


def _new_param(like: torch.Tensor | None, shape: tuple[int, ...]) -> nn.Parameter | None:
    if like is None:
        return None
    return nn.Parameter(
        torch.empty(shape, dtype=like.dtype, device=like.device), requires_grad=like.requires_grad
    )


def _rebuild_conv(m: nn.Module) -> None:
    assert isinstance(m, nn.modules.conv._ConvNd)
    if m.in_channels % m.groups or m.out_channels % m.groups:
        raise UserInputError(
            f"conv with groups={m.groups} cannot have {m.in_channels} -> {m.out_channels} channels"
        )
    if m.transposed:  # ConvTranspose weight: (in, out / groups, *k)
        shape = (m.in_channels, m.out_channels // m.groups, *m.kernel_size)
    else:  # Conv weight: (out, in / groups, *k)
        shape = (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
    m.weight = _new_param(m.weight, shape)
    m.bias = _new_param(m.bias, (m.out_channels,))
    m.reset_parameters()


def _rebuild_linear(m: nn.Module) -> None:
    assert isinstance(m, nn.Linear)
    m.weight = _new_param(m.weight, (m.out_features, m.in_features))
    m.bias = _new_param(m.bias, (m.out_features,))
    m.reset_parameters()


def _rebuild_batchnorm(m: nn.Module) -> None:
    assert isinstance(m, nn.modules.batchnorm._NormBase)
    n = m.num_features
    m.weight = _new_param(m.weight, (n,))
    m.bias = _new_param(m.bias, (n,))
    for name in ("running_mean", "running_var"):
        buf = getattr(m, name)
        if buf is not None:
            setattr(m, name, torch.empty(n, dtype=buf.dtype, device=buf.device))
    m.reset_parameters()


def _rebuild_groupnorm(m: nn.Module) -> None:
    assert isinstance(m, nn.GroupNorm)
    m.weight = _new_param(m.weight, (m.num_channels,))
    m.bias = _new_param(m.bias, (m.num_channels,))
    m.reset_parameters()


def _rebuild_prelu(m: nn.Module) -> None:
    assert isinstance(m, nn.PReLU)
    m.weight = _new_param(m.weight, (m.num_parameters,))
    m.reset_parameters()


# Checked in order, so subclasses (ConvTranspose2d is a _ConvNd) are caught by their base entry.
RESIZERS: dict[type[nn.Module], Resizer] = {
    nn.modules.conv._ConvNd: Resizer(("in_channels", "out_channels", "groups"), _rebuild_conv),
    nn.Linear: Resizer(("in_features", "out_features"), _rebuild_linear),
    nn.modules.batchnorm._NormBase: Resizer(("num_features",), _rebuild_batchnorm),
    nn.GroupNorm: Resizer(("num_groups", "num_channels"), _rebuild_groupnorm),
    nn.PReLU: Resizer(("num_parameters",), _rebuild_prelu),
}


def _resizer(m: nn.Module) -> Resizer | None:
    for typ, resizer in RESIZERS.items():
        if isinstance(m, typ):
            return resizer
    return None


def module_shapes(model: nn.Module) -> Shapes:
    """``{name: {attribute: size}}`` of every module of a supported type."""
    out: Shapes = {}
    for name, m in model.named_modules():
        r = _resizer(m)
        if r is not None:
            out[name] = {a: int(getattr(m, a)) for a in r.attrs}
    return out


def _param_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        n: tuple(t.shape) for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
    }


def shape_changes(reference: nn.Module, changed: nn.Module) -> Shapes:
    """The entries of :func:`module_shapes` of ``changed`` that differ from ``reference``.

    Raises:
        UserInputError: a module whose parameter shapes differ but whose type is not in
            :data:`RESIZERS` (it could not be rebuilt from a card).
    """
    ref = module_shapes(reference)
    new = module_shapes(changed)
    ref_modules = dict(reference.named_modules())
    for name, m in changed.named_modules():
        if name not in new and name in ref_modules and _param_shapes(m) != _param_shapes(ref_modules[name]):
            raise UserInputError(
                f"module {name!r} ({type(m).__name__}) was resized but that type cannot be described in a "
                "card"
            )
    return {name: sizes for name, sizes in new.items() if ref.get(name) != sizes}


def apply_module_shapes(model: nn.Module, shapes: Shapes) -> nn.Module:
    """Resize the modules named in ``shapes`` in place (fresh parameters); returns ``model``.

    Raises:
        UserInputError: an unknown module name, an unsupported module type or attribute.
    """
    modules = dict(model.named_modules())
    for name, sizes in shapes.items():
        m = modules.get(name)
        if m is None:
            raise UserInputError(f"module_shapes names {name!r}, which the architecture does not have")
        r = _resizer(m)
        if r is None:
            raise UserInputError(f"module_shapes: {name!r} is a {type(m).__name__}, which cannot be resized")
        for attr, size in sizes.items():
            if attr not in r.attrs or not isinstance(size, int) or isinstance(size, bool) or size < 1:
                allowed = ", ".join(r.attrs)
                raise UserInputError(
                    f"module_shapes[{name!r}]: bad entry {attr}={size!r} (allowed: {allowed})"
                )
            setattr(m, attr, size)
        r.rebuild(m)
    return model
