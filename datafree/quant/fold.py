"""BatchNorm folding: merge an inference-mode BN into the convolution that feeds it.

``BN(conv(x)) = gamma * (W x + b - mu) / sqrt(var + eps) + beta = W' x + b'`` with
``W' = W * s``, ``b' = (b - mu) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output channel,
so the quantized network quantizes the weights the integer kernel will actually use.

Reference: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, section 3.2.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

__all__ = ["fold_bn_weights", "fold_conv_bn", "fold_batchnorm", "trace"]


def fold_bn_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Folded ``(weight, bias)`` of a layer followed by an inference-mode BatchNorm.

    Args:
        weight: the layer's weight, output channels first.
        bias: its bias or None.
        running_mean: BN running mean.
        running_var: BN running variance.
        eps: BN epsilon.
        gamma: BN scale (None when the BN is not affine).
        beta: BN shift (None when the BN is not affine).

    Returns:
        ``(weight', bias')``, detached. PyTorch's ``fuse_conv_bn_weights`` computes them: the
        weights equal this module's former formula bit for bit, the bias differs by rounding
        (about 1e-7, the order of the products; tests/test_quant.py compares).

    Shape:
        - weight: ``(C_out, ...)``; bias, running stats, gamma, beta: ``(C_out,)``.
    """
    w, b = fuse_conv_bn_weights(weight, bias, running_mean, running_var, eps, gamma, beta)
    return w.detach(), b.detach()


def fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A new ``Conv2d`` (with bias) computing ``bn(conv(x))`` in inference mode.

    PyTorch's ``fuse_conv_bn_eval``; ``conv`` and ``bn`` are put in eval mode, not otherwise modified.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` of a copy of ``model`` (the original untouched), returning its logits."""
    from ..models import keep_logits_output

    gm = fx.symbolic_trace(copy.deepcopy(model))
    keep_logits_output(gm)  # a (logits, features) model: tracing skips its logits hook
    return gm


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` and fold every BatchNorm that directly follows a ``Conv2d`` into it.

    A BN counts only when its input is a convolution's output used by nothing else (found in
    the traced graph, not by module order). Other BNs stay as they are. The model's BN layers
    must hold trained running statistics; the result is for inference (its state-dict keys are
    the model's, minus the folded BNs, plus the convs' new biases).

    Args:
        model: a float network that ``torch.fx`` can trace.

    Returns:
        The folded ``GraphModule`` in eval mode; ``model`` is not modified.
    """
    gm = trace(model.eval())
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        if not isinstance(modules[src.target], nn.Conv2d):
            continue
        if len(src.users) != 1:
            continue
        bn = modules[node.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        _set_module(gm, src.target, fold_conv_bn(modules[src.target], bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
