"""BatchNorm folded into the preceding layer, for BN-statistics synthesis (DeepInversion's step).

DeepInversion compares the statistics of each BN layer's *input* with the layer's running statistics.
Observed by a hook, that costs the teacher's own eval-mode BN forward and backward on top of the
statistics. An eval-mode BN is a per-channel affine map ``y = a * (x - running_mean) + beta`` with
``a = gamma / sqrt(running_var + eps)``; folded into the convolution (or linear layer) before it, the
teacher computes ``y`` directly and the input statistics are recovered from the folded output's::

    mean_x = (mean_y - beta) / a + running_mean,        var_x = var_y / a^2

so the BN layers' forward and backward disappear from the step (their statistics are still matched,
with the same gradients up to fp32 rounding). A layer is folded only where the BN directly follows a
convolution or linear layer whose output nothing else reads, both used once, and where ``a`` is not
tiny against ``beta`` (the recovery would amplify rounding; the guard is :data:`MAX_AMPLIFICATION`);
every other BN layer keeps its module and is observed by a hook, as :class:`datafree.hooks.BNStatistics`
does. A model :mod:`torch.fx` cannot trace is not folded at all (:func:`fold_batchnorm` returns None).

Reference: Yin et al., "Dreaming to Distill", CVPR 2020 (the statistics); the folding is the usual
conv-BN fusion (``torch.nn.utils.fusion``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .bnstats_loss import bn_loss_from_activations, layer_sums
from .hooks import BNStatistics, batchnorm_layers
from .losses import BNStatisticLoss
from .models import attach_logits_hook
from .stats import channel_mean_var

__all__ = ["FoldedTeacher", "FoldedBNStatistics", "StridedPointwiseConv2d", "fold_batchnorm",
           "MAX_AMPLIFICATION"]  # fmt: skip

#: A BN layer is folded only when ``max_c (|beta_c| / |a_c| + sqrt(var_c)) / sqrt(var_c + eps)`` is at
#: most this: the factor by which recovering ``mean_x`` from the folded output can amplify the output's
#: rounding error, relative to the channel's running standard deviation (1e3 x fp32's 6e-8 = 6e-5).
MAX_AMPLIFICATION = 1e3
#: With the one-node statistics, each layer's sums are taken by a tap node right after the layer, whose
#: backward makes the layer's input gradient when the engine reaches it, while the teacher's observed
#: activations of one batch exceed this many bytes; up to it, the loss's node takes the sums and makes every
#: layer's gradient at once (:mod:`datafree.bnstats_loss`, ``pre`` None). The taps bound the memory (one
#: activation-sized gradient at a time instead of all of them, a full set on MobileNetV2) and cost about
#: 50 us of autograd-node overhead per layer and step; below 32 MiB the extra buffers are small next to the
#: step's own activations. Step / bare pass with taps -> without, batch 128, 2 threads
#: (bench/di_step_variants.py --variants 'taps:taps=always;default:', di_step_variants_s8_taps.json):
#: resnet8_digits (10.5 MiB) 1.21x -> 1.14x, resnet18_32 (24.8 MiB) 1.08x -> 1.08x; mobilenetv2_32 (66.5 MiB)
#: keeps them
#: (docs/speed.md, "Session 8").
TAP_MIN_BYTES = 32 * 2**20
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}  # fmt: skip


@dataclass
class _Layer:
    """One BN layer of the original model: folded (observe ``module``'s output) or hooked (its input)."""

    bn: _BatchNorm
    module: nn.Module  # the fused conv/linear when folded, else the BN layer itself
    folded: bool
    scale: torch.Tensor | None = None  # a = gamma / sqrt(running_var + eps), (C,)
    beta: torch.Tensor | None = None  # the BN's bias (zeros without affine), (C,)


@dataclass
class FoldedTeacher:
    """A teacher with foldable BN layers folded; :meth:`statistics` observes every BN layer.

    Attributes:
        net: the folded network (a :class:`torch.fx.GraphModule`); call it instead of the teacher.
        layers: one entry per :func:`datafree.hooks.batchnorm_layers` layer of the teacher, in order.

    The forward hooks that feed :meth:`statistics` are registered on the first use and stay on the
    observed modules (one per layer, passing to the statistics context open at the time, doing nothing
    outside one) instead of being registered and removed on every step; :meth:`remove_hooks` takes them
    off.
    """

    net: nn.Module
    layers: list[_Layer]
    _observer: FoldedBNStatistics | None = field(default=None, init=False, repr=False)
    _hook_handles: list[torch.utils.hooks.RemovableHandle] = field(
        default_factory=list, init=False, repr=False
    )
    # the observed activations' elements per sample, summed over the layers (measured by the fold's trial
    # pass; None without one): with the batch, whether the one-node statistics use taps (TAP_MIN_BYTES)
    observed_per_sample: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # the BN loss in terms of the observed tensors: folded layers' output statistics are an affine
        # image of the BN input's, mean_x - running_mean = (mean_y - beta) / a, var_x = var_y / a^2
        centers, scales, running_vars = [], [], []
        for layer in self.layers:
            rm, rv = layer.bn.running_mean, layer.bn.running_var
            assert rm is not None and rv is not None
            if layer.folded:
                assert layer.scale is not None and layer.beta is not None
                centers.append(layer.beta)
                scales.append(1.0 / layer.scale)
            else:
                centers.append(rm)
                scales.append(torch.ones_like(rm))
            running_vars.append(rv)
        self.bn_loss = BNStatisticLoss(centers, scales, running_vars)

    def standardize_bn_loss(self) -> None:
        """Make :attr:`bn_loss` the loss on standardised statistics (:meth:`BNStatisticLoss.standardized`).

        Call before the first :meth:`statistics` or :meth:`loss_graph`: both read :attr:`bn_loss` then.
        """
        self.bn_loss = self.bn_loss.standardized([float(layer.bn.eps) for layer in self.layers])

    @property
    def num_folded(self) -> int:
        """How many BN layers were folded (the rest are observed by hooks)."""
        return sum(layer.folded for layer in self.layers)

    def statistics(self, one_node: bool = False) -> FoldedBNStatistics:
        """A context like :class:`datafree.hooks.BNStatistics` (per-batch statistics) for :attr:`net`.

        Args:
            one_node: :meth:`FoldedBNStatistics.loss` computes all layers' statistics and the loss in one
                autograd node (:mod:`datafree.bnstats_loss`) instead of per layer in the hooks.
        """
        return FoldedBNStatistics(self.layers, self.bn_loss, one_node, owner=self)

    def taps(self, batch: int, itemsize: int = 4) -> bool:
        """Whether the one-node statistics take each layer's sums with a tap node (:data:`TAP_MIN_BYTES`)."""
        per = self.observed_per_sample
        return per is None or batch * per * itemsize > TAP_MIN_BYTES

    def _observe(self, stats: FoldedBNStatistics | None) -> FoldedBNStatistics | None:
        """Make ``stats`` the statistics the hooks record into (None: none); returns the previous one."""
        if stats is not None and not self._hook_handles:
            self._hook_handles = [layer.module.register_forward_hook(self._dispatch(i))  # type: ignore[attr-defined]
                                  for i, layer in enumerate(self.layers)]  # fmt: skip
        previous, self._observer = self._observer, stats
        return previous

    def _dispatch(self, index: int):
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            observer = self._observer
            if observer is not None:
                observer._record(index, module, inputs, output)

        return fn

    def remove_hooks(self) -> None:
        """Take the statistics' forward hooks off the observed modules (registered again when needed)."""
        for h in self._hook_handles:
            h.remove()
        self._hook_handles = []

    def loss_graph(
        self, first_layer_weight: float
    ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``x -> (logits, BN loss)`` without hooks or custom autograd functions, for ``torch.compile``.

        A copy of :attr:`net` that also returns every observed activation (a folded convolution's output,
        an unfolded BN layer's input); their statistics are ``torch.var_mean`` (inductor compiles it to a
        one-pass Welford reduction, exact without a shift) and the loss is :attr:`bn_loss`'s, layer by layer
        with plain operations, so one compiled graph holds the network, the statistics and the loss, and
        inductor fuses the statistics' backward into the network's. Same loss and gradients as
        :meth:`statistics` up to fp32 rounding. Raises ValueError when the network cannot be rewritten
        (an observed module called other than once, or an output that is not one tensor).
        """
        self.remove_hooks()  # the compiled graph shares net's modules: no statistics hooks on them
        net = self.net
        graph = copy.deepcopy(net.graph)
        names = {id(m): n for n, m in net.named_modules()}
        calls: dict[str, list[fx.Node]] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls.setdefault(node.target, []).append(node)  # type: ignore[arg-type]
        observed = []
        for layer in self.layers:
            nodes = calls.get(names.get(id(layer.module), ""), [])
            if len(nodes) != 1 or (not layer.folded and not isinstance(nodes[0].args[0], fx.Node)):
                raise ValueError("a BN layer's observed module is not called exactly once")
            observed.append(nodes[0] if layer.folded else nodes[0].args[0])
        out = next(n for n in graph.nodes if n.op == "output")
        if not isinstance(out.args[0], fx.Node):
            raise ValueError("the folded network does not return one tensor")
        out.args = ((out.args[0], observed),)
        graph.lint()
        gm = fx.GraphModule(net, graph).eval()  # shares net's modules and parameters
        spec = self.bn_loss
        centers, running_vars = spec.center.split(spec.sizes), spec.running_var.split(spec.sizes)
        scales = spec.scale.split(spec.sizes) if spec.scale is not None else [None] * len(spec.sizes)
        weights = [float(first_layer_weight)] + [1.0] * (len(spec.sizes) - 1)

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits, acts = gm(x)
            bn = None
            for t, k, sc, rv, w in zip(acts, centers, scales, running_vars, weights, strict=True):
                t = t.float()  # statistics in fp32 under autocast, as the hooks
                var, mean = torch.var_mean(t, dim=[0, *range(2, t.dim())], correction=0)
                dm, var = (mean - k, var) if sc is None else ((mean - k) * sc, var * (sc * sc))
                term = w * (torch.linalg.vector_norm(dm) + torch.linalg.vector_norm(var - rv))
                bn = term if bn is None else bn + term
            assert bn is not None
            return logits, bn

        return forward


class FoldedBNStatistics(BNStatistics):
    """Per-batch input statistics of every BN layer of a :class:`FoldedTeacher`'s teacher.

    After a forward pass of ``FoldedTeacher.net`` inside the ``with`` block, ``means[i]`` and
    ``vars[i]`` hold BN layer i's input mean and biased variance, ``(C,)``, as
    :class:`datafree.hooks.BNStatistics` would on the unfolded teacher; gradients flow to the input.
    :meth:`loss` computes DeepInversion's BN loss from the observed statistics directly (no per-layer
    recovery). With ``one_node`` the hooks take only each layer's sums and :meth:`loss` computes every
    layer's statistics and the loss in one autograd node (:mod:`datafree.bnstats_loss`); ``means`` and
    ``vars`` are then computed when first read (per layer, as without it).
    """

    def __init__(  # noqa: D107
        self,
        layers: list[_Layer],
        bn_loss: BNStatisticLoss | None = None,
        one_node: bool = False,
        owner: FoldedTeacher | None = None,
    ) -> None:
        self.layers = layers  # type: ignore[assignment]
        # with an owner, its persistent hooks record into this object inside the with block; without,
        # the hooks are registered on entering and removed on leaving (datafree.hooks.BNStatistics)
        self._owner = owner
        self._previous: FoldedBNStatistics | None = None
        self.one_node = one_node and bn_loss is not None
        self.per_sample = False
        self._bn_loss = bn_loss
        # the statistics of what each hook observes: a folded layer's output, else the BN's input
        self.observed_means: list[torch.Tensor | None] = [None] * len(layers)
        self.observed_vars: list[torch.Tensor | None] = [None] * len(layers)
        # what each hook observed (fp32) and its version then: the statistics are computed when asked for,
        # all layers' with the loss in one autograd node (datafree.bnstats_loss)
        self.observed: list[torch.Tensor | None] = [None] * len(layers)
        self._versions: list[int] = [0] * len(layers)
        self._sums: list = [None] * len(layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _check_versions(self) -> None:
        for layer, t, v in zip(self.layers, self.observed, self._versions, strict=True):
            if t is not None and t._version != v:
                raise RuntimeError(
                    f"the activation observed for BN layer {layer.bn!r} was modified by an inplace operation "  # type: ignore[attr-defined]
                    "after the hook recorded it"
                )

    def _statistics(self) -> None:
        """Each observed layer's statistics, where not computed yet (:func:`channel_mean_var`)."""
        if all(t is None or m is not None for t, m in zip(self.observed, self.observed_means, strict=True)):
            return
        self._check_versions()
        for i, (layer, t) in enumerate(zip(self.layers, self.observed, strict=True)):
            if t is not None and self.observed_means[i] is None:
                self.observed_means[i], self.observed_vars[i] = channel_mean_var(t, layer.module)  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def means(self) -> list[torch.Tensor | None]:
        """BN layer i's input mean, recovered from the folded output's where folded."""
        self._statistics()
        out: list[torch.Tensor | None] = []
        for layer, mean in zip(self.layers, self.observed_means, strict=True):
            if mean is not None and layer.folded:  # type: ignore[attr-defined]
                mean = (mean - layer.beta) / layer.scale + layer.bn.running_mean  # type: ignore[attr-defined]
            out.append(mean)
        return out

    @means.setter
    def means(self, value: list[torch.Tensor | None]) -> None:
        self.observed_means = value  # BNStatistics.__exit__ clears the lists; only None lists arrive
        self.observed = list(value)
        self._sums = list(value)

    @property  # type: ignore[override]
    def vars(self) -> list[torch.Tensor | None]:
        """BN layer i's input biased variance, recovered from the folded output's where folded."""
        self._statistics()
        out: list[torch.Tensor | None] = []
        for layer, var in zip(self.layers, self.observed_vars, strict=True):
            if var is not None and layer.folded:  # type: ignore[attr-defined]
                var = var / layer.scale.square()  # type: ignore[attr-defined]
            out.append(var)
        return out

    @vars.setter
    def vars(self, value: list[torch.Tensor | None]) -> None:
        self.observed_vars = value

    def loss(self, first_layer_weight: float = 1.0) -> torch.Tensor:
        """:func:`datafree.losses.bn_statistic_loss` of the BN inputs' statistics, from the observed ones."""
        if self._bn_loss is None or any(t is None for t in self.observed):
            return super().loss(first_layer_weight)
        if all(m is not None for m in self.observed_means):  # the statistics were asked for: reuse them
            return self._bn_loss(self.observed_means, self.observed_vars, first_layer_weight)  # type: ignore[arg-type]
        self._check_versions()
        keys = [layer.module for layer in self.layers]  # type: ignore[attr-defined]
        return bn_loss_from_activations(self._bn_loss, self.observed, keys, first_layer_weight, self._sums)  # type: ignore[arg-type]

    def _hooked(self) -> list[nn.Module]:
        """Layer i's folded conv (its output) or, unfolded, the BN module (its input)."""
        return [layer.module for layer in self.layers]  # type: ignore[attr-defined]

    def __enter__(self) -> FoldedBNStatistics:
        if self._owner is None:
            return super().__enter__()  # type: ignore[return-value]
        self._previous = self._owner._observe(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owner is None:
            return super().__exit__(*exc)
        self._owner._observe(self._previous)
        self._previous = None
        # drop the references to this step's activations (means' setter clears observed and the sums)
        self.means = [None] * len(self.layers)
        self.vars = [None] * len(self.layers)
        return None

    def _record(
        self, index: int, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        """The forward hook's work for layer ``index``: keep what it observes (and its sums or statistics)."""
        layer: _Layer = self.layers[index]  # type: ignore[assignment]
        t = output if layer.folded else inputs[0]
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()  # statistics in fp32 under bf16/fp16 autocast (datafree.precision)
        self.observed[index], self._versions[index] = t, t._version
        if not self.one_node:  # per layer, now (datafree.stats.channel_mean_var)
            self.observed_means[index], self.observed_vars[index] = channel_mean_var(t, module)
            return
        # the loss's per-layer sums, now while t is in cache (datafree.bnstats_loss.layer_sums), where the
        # batch's activations are large enough for taps; else the loss's node takes them (TAP_MIN_BYTES)
        owner = self._owner
        if owner is None or owner.taps(t.shape[0], t.element_size()):
            self._sums[index] = layer_sums(self._bn_loss, index, t)  # type: ignore[arg-type]
        else:
            self._sums[index] = None
        self.observed_means[index] = self.observed_vars[index] = None

    def _hook(self, index: int):
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self._record(index, module, inputs, output)

        return fn

    def running(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(running_mean, running_var)`` of every BN layer."""
        return [(layer.bn.running_mean, layer.bn.running_var) for layer in self.layers]  # type: ignore[misc]


class _PointwiseInputGrad(torch.autograd.Function):
    """A strided 1x1 convolution (no padding) whose backward computes only the input gradient.

    ``y = conv2d(x, w, b, stride s)`` reads only the pixels ``x[..., ::s, ::s]``, so ``dx`` is zero except
    there, where it is the 1x1 convolution of ``dy`` with ``w`` transposed: a small matrix product and one
    strided write. ATen's ``convolution_backward`` (oneDNN) computes the same values several times slower
    on CPU (a general strided backward-data kernel, then a copy of ``dx`` into NCHW order). The weights are
    frozen (a folded convolution), so no weight or bias gradient is made.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        groups: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.shape, ctx.stride, ctx.groups, ctx.dtype = x.shape, stride, groups, x.dtype
        return F.conv2d(x, weight, bias, stride, 0, 1, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        g = ctx.groups
        cout, cin_g = weight.shape[:2]
        # per group, the transposed (C_in / g, C_out / g) matrix, as a 1x1 kernel for conv2d
        wt = weight.reshape(g, cout // g, cin_g).transpose(1, 2).reshape(g * cin_g, cout // g, 1, 1)
        wt = wt.to(grad.dtype)  # under autocast the forward ran in grad's dtype (bf16/fp16), not the weight's
        dx = grad.new_zeros(ctx.shape, dtype=ctx.dtype)
        dx[:, :, :: ctx.stride[0], :: ctx.stride[1]] = F.conv2d(grad, wt, None, 1, 0, 1, g)
        return dx, None, None, None, None


class StridedPointwiseConv2d(nn.Conv2d):
    """A frozen 1x1, stride > 1, unpadded :class:`torch.nn.Conv2d` with a faster input gradient.

    Same forward; backward through :class:`_PointwiseInputGrad` (equal to ATen's input gradient up to
    fp32 rounding, several times faster on CPU). Used for folded convolutions (:func:`fold_batchnorm`),
    whose weights never need a gradient.
    """

    @staticmethod
    def applies(conv: nn.Module) -> bool:
        """Whether ``conv`` is a frozen 1x1 unpadded 2-d convolution with stride > 1 on the CPU."""
        return (
            type(conv) is nn.Conv2d
            and conv.kernel_size == (1, 1)
            and conv.padding == (0, 0)
            and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros"
            and max(conv.stride) > 1  # type: ignore[arg-type]
            and not any(p.requires_grad for p in conv.parameters())
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> StridedPointwiseConv2d:
        """The same layer (shares ``conv``'s parameters) with the faster input gradient."""
        new = copy.copy(conv)
        new.__class__ = cls
        return new  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.dim() != 4 or not x.requires_grad or x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        return _PointwiseInputGrad.apply(x, self.weight, self.bias, self.stride, self.groups)  # type: ignore[no-any-return]


def _fuse(conv: nn.Module, bn: _BatchNorm) -> nn.Module:
    """``conv`` with ``bn`` folded in, frozen; a strided 1x1 convolution gets the faster input gradient."""
    f = fuse_linear_bn_eval(conv, bn) if isinstance(conv, nn.Linear) else fuse_conv_bn_eval(conv, bn)  # type: ignore[arg-type]
    f.requires_grad_(False)
    return StridedPointwiseConv2d.from_conv(f) if StridedPointwiseConv2d.applies(f) else f  # type: ignore[arg-type]


def _scale_beta(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    rv = bn.running_var
    assert rv is not None
    inv = torch.rsqrt(rv + bn.eps)
    scale = inv * bn.weight if bn.weight is not None else inv
    beta = bn.bias if bn.bias is not None else torch.zeros_like(inv)
    return scale.detach().clone(), beta.detach().clone()


def _well_conditioned(bn: _BatchNorm, scale: torch.Tensor, beta: torch.Tensor) -> bool:
    rv = bn.running_var
    assert rv is not None
    if not (torch.isfinite(scale).all() and torch.isfinite(beta).all()) or bool((scale == 0).any()):
        return False
    std = rv.clamp_min(0).sqrt()
    amp = (beta.abs() / scale.abs() + std) / (rv + bn.eps).sqrt()
    return float(amp.max()) <= MAX_AMPLIFICATION


def _out_of_place_edit(gm: fx.GraphModule, user: fx.Node, modules: dict[str, nn.Module]):
    """How to make ``user`` leave its input unchanged: None if it already does, False if unknown.

    The folded output is saved for the statistics' backward, so an in-place activation on it (which the
    BN's fresh output allowed) must become out-of-place. Returns a function applying the change.
    """
    if user.op == "call_module":
        m = modules.get(user.target)  # type: ignore[arg-type]
        if getattr(m, "inplace", False):

            def edit() -> None:
                clone = copy.copy(m)  # parameter-free activation; the teacher's module is left as is
                clone.inplace = False  # type: ignore[union-attr]
                name = f"_bnfold_act_{len(list(gm.children()))}"
                gm.add_submodule(name, clone)  # type: ignore[arg-type]
                user.target = name

            return edit
        return None
    if user.op == "call_function":
        if user.kwargs.get("inplace", False):
            return lambda: setattr(user, "kwargs", {**user.kwargs, "inplace": False})
        if user.target in _INPLACE_OPERATORS:
            return lambda: setattr(user, "target", _INPLACE_OPERATORS[user.target])  # type: ignore[index]
        name = getattr(user.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            out = getattr(torch, name[:-1], None)
            return (lambda: setattr(user, "target", out)) if out is not None else False
        return None
    if user.op == "call_method" and isinstance(user.target, str) and user.target.endswith("_"):
        if user.target.endswith("__") or not hasattr(torch.Tensor, user.target[:-1]):
            return False
        return lambda: setattr(user, "target", user.target[:-1])  # type: ignore[index]
    return None


def _candidate(node: fx.Node, modules: dict[str, nn.Module], uses: dict[str, int]):
    """``(conv, bn)`` when ``node`` is a foldable BN, else None.

    Foldable: an eval-mode BN called once on the output of a conv/linear layer called once, whose
    output nothing else reads.
    """
    bn = modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
    if not isinstance(bn, _BatchNorm) or bn.training or uses[node.target] != 1 or len(node.args) != 1:  # type: ignore[index]
        return None
    prev = node.args[0]
    if not isinstance(prev, fx.Node) or prev.op != "call_module" or node.kwargs or len(prev.users) != 1:
        return None
    conv = modules.get(prev.target)  # type: ignore[arg-type]
    if not isinstance(conv, _FOLDABLE) or conv.training or uses[prev.target] != 1:  # type: ignore[index]
        return None
    if isinstance(conv, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
        return None
    return conv, bn


def fold_batchnorm(
    model: nn.Module, example: torch.Tensor | None = None, observe: Sequence[nn.Module] | None = None
) -> FoldedTeacher | None:
    """Fold every foldable eval-mode BN layer of ``model`` into its preceding conv/linear layer.

    ``model`` is not modified: the result's ``net`` shares its unfolded modules and owns fused copies
    of the folded convolutions (parameters frozen). Returns None when no layer can be folded: the
    model is in training mode, :mod:`torch.fx` cannot trace it, or no BN directly follows a
    convolution whose output only the BN reads; callers then use :class:`datafree.hooks.BNStatistics`.
    ``observe``: the BN layers whose statistics the result's :meth:`FoldedTeacher.statistics` and loss
    cover (default: every BN layer; all foldable layers are folded either way).
    """
    bns = batchnorm_layers(model)
    if not bns or model.training:
        return None
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: keep the hooks
        return None
    modules = dict(gm.named_modules())
    uses: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            uses[node.target] = uses.get(node.target, 0) + 1
    fused: dict[int, nn.Module] = {}  # id(original bn) -> fused conv/linear
    for node in list(gm.graph.nodes):
        pair = _candidate(node, modules, uses)
        if pair is None:
            continue
        conv, bn = pair
        prev = node.args[0]
        scale, beta = _scale_beta(bn)
        if scale.numel() != (conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels):
            continue
        if not _well_conditioned(bn, scale, beta):
            continue
        edits = [_out_of_place_edit(gm, u, modules) for u in node.users]
        if any(e is False for e in edits) or (any(edits) and len(node.users) != 1):
            continue  # an unknown in-place use, or an in-place one that other users would observe
        for e in edits:
            if e:
                e()
        f = _fuse(conv, bn)
        name = f"_bnfold_{len(fused)}"
        gm.add_submodule(name, f)
        prev.target = name
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        fused[id(bn)] = f
    if not fused:
        return None
    gm.graph.lint()
    gm.recompile()
    attach_logits_hook(gm)  # tracing skips the teacher's logits hook: a (logits, features) model
    layers = []
    for bn in bns if observe is None else observe:
        if id(bn) in fused:
            scale, beta = _scale_beta(bn)
            layers.append(_Layer(bn, fused[id(bn)], True, scale, beta))
        else:
            layers.append(_Layer(bn, bn, False))
    folded = FoldedTeacher(gm.eval(), layers)
    return folded if example is None or _trial(folded, example) else None


def _trial(folded: FoldedTeacher, example: torch.Tensor) -> bool:
    """One forward and input-gradient pass of ``example`` through the folded network.

    False when it fails, e.g. an in-place operation reached a folded output through an alias (an
    ``nn.Identity`` or a view between the convolution and an in-place activation, as in timm's
    ResNets) that :func:`_out_of_place_edit` does not follow, or a layer's statistics stay unset.
    """
    for one_node in (False, True):  # both ways of computing the statistics
        x = example.detach().clone().requires_grad_(True)
        try:
            with folded.statistics(one_node) as stats:
                out = folded.net(x)
                if not isinstance(out, torch.Tensor) or any(t is None for t in stats.observed):
                    return False
                per_sample = sum(t.numel() for t in stats.observed) // len(x)  # type: ignore[union-attr]
                bn = stats.loss()
                pairs = zip(stats.means, stats.vars, strict=True)
                loss = out.float().sum() + bn + sum(m.sum() + v.sum() for m, v in pairs)  # type: ignore[union-attr]
                torch.autograd.grad(loss, x)
        except RuntimeError:
            return False
    folded.observed_per_sample = per_sample  # set after the trial, so that it tries the taps too
    return True
