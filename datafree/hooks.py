"""Forward hooks as resources: they exist only inside a ``with`` block.

* :class:`BNStatistics` records, for every BatchNorm layer, the statistics of the layer's input
  on the current batch, to be compared with the layer's running statistics (DeepInversion, ZeroQ,
  DFQ). Reference: Yin et al., "Dreaming to Distill", CVPR 2020; Cai et al., "ZeroQ", CVPR 2020.
* :class:`FeatureRecorder` records the input or output of named modules (penultimate features
  for DAFL, block outputs for attention transfer), so any teacher works unmodified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import UserInputError
from .stats import channel_mean_var

__all__ = [
    "BNStatistics",
    "FeatureRecorder",
    "batchnorm_layers",
    "batchnorm_spatial_sizes",
    "spatial_batchnorm_layers",
    "input_mean_from_batchnorm",
    "InputStructure",
    "input_structure_from_batchnorm",
    "structured_images",
    "first_batchnorm",
    "batchnorm_input_variance",
    "variance_scale_fit",
    "require_batchnorm",
    "penultimate_module",
]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer that tracks running statistics, in module order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


@torch.no_grad()
def batchnorm_spatial_sizes(model: nn.Module, input_shape: Sequence[int]) -> list[int]:
    """Each BN layer's input positions (H x W) at ``input_shape``, in :func:`batchnorm_layers` order.

    One forward pass of a zero batch of 2 in eval mode (the running statistics do not move); 1 for a
    ``BatchNorm1d``'s ``(N, C)`` input.
    """
    from .utils import device_of, eval_mode

    layers = batchnorm_layers(model)
    if not layers:
        return []
    with eval_mode(model), FeatureRecorder(layers, "input") as rec:
        model(torch.zeros((2, *input_shape), device=device_of(model)))
        return [int(x[0, 0].numel()) for x in rec.features]  # type: ignore[index]


def spatial_batchnorm_layers(
    model: nn.Module, input_shape: Sequence[int], min_hw: int = 2
) -> list[_BatchNorm]:
    """The BN layers whose input has at least ``min_hw`` spatial positions (H x W) at ``input_shape``.

    The layers on 1 x 1 and 2 x 2 maps (the last one or two stages of an ImageNet layout at 32 px, the
    last at 64 px, a ``BatchNorm1d``) carry most of a noise batch's BN loss, and on some families real
    data stays far from the 1 x 1 ones' running statistics: Fast-Datafree leaves them out of its BN loss
    (``bn_min_hw`` 5; the other BN-inverting generators have the option at 1). Every layer when none
    would be kept; ``min_hw <= 1``: every layer (no forward pass).
    """
    layers = batchnorm_layers(model)
    if min_hw <= 1 or not layers:
        return layers
    sizes = batchnorm_spatial_sizes(model, input_shape)
    kept = [m for m, hw in zip(layers, sizes, strict=True) if hw >= min_hw]
    return kept or layers


class _StopForward(Exception):
    pass


def _forward_until(
    model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor
) -> tuple[int, torch.Tensor] | None:
    """Run ``model`` on ``x`` until it reaches one of ``layers``: that layer's index and its input.

    The forward stops there (a pre-hook raises), so only the layers before it run; None when it reaches none.
    """
    seen: list[tuple[int, torch.Tensor]] = []

    def reached(i: int):
        def fn(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            seen.append((i, inputs[0]))
            raise _StopForward

        return fn

    hooks = [m.register_forward_pre_hook(reached(i)) for i, m in enumerate(layers)]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in hooks:
            h.remove()
    return seen[0] if seen else None


def _input_of(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reached = _forward_until(model, [layer], x)
    if reached is None:
        raise RuntimeError("the forward pass did not reach the BatchNorm layer")
    return reached[1]


@torch.no_grad()
def first_batchnorm(model: nn.Module, input_shape: Sequence[int]) -> _BatchNorm | None:
    """The BatchNorm layer a forward pass reaches first (one image of zeros, eval mode), or None."""
    from .utils import device_of, eval_mode

    layers = batchnorm_layers(model)
    if not layers:
        return None
    with eval_mode(model):
        reached = _forward_until(model, layers, torch.zeros((1, *input_shape), device=device_of(model)))
    return layers[0] if reached is None else layers[reached[0]]  # none run: the first in module order


@torch.no_grad()
def batchnorm_input_variance(model: nn.Module, layer: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Per-channel (biased) variance of ``layer``'s input on batch ``x``; the forward stops there.

    Costs the layers before ``layer`` only (a convolution stem for the first BN layer). The model must be
    in eval mode; no gradient.
    """
    return channel_mean_var(_input_of(model, layer, x).float())[1]


@torch.no_grad()
def input_mean_from_batchnorm(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor | None:
    """The per-channel mean of the data a BN model was trained on, from its first BatchNorm layer.

    Data-free: the first BN layer the forward pass reaches recorded the running mean of its input, and
    when the path from the input to it is affine (a convolution stem, as in ResNets, WRNs, VGG-BN and
    MobileNets) that input's mean is an affine function ``A m + b`` of the image's per-channel mean
    ``m`` (exact for constant images; up to the padded borders otherwise). ``A`` and ``b`` come from
    ``1 + C`` constant images; ``m`` is the least-squares solution of ``A m + b = running_mean`` in
    units of the layer's running spread. Returns ``(C,)`` in the model's (normalised) input space, or
    None: no BN layer, a non-affine path (checked on a doubled constant image), or a first BN layer
    with fewer channels than the input. On the 32 px suite teachers (digits under ImageNet or CIFAR
    mean / std) it is within 0.07 of the real digits' means of -0.45 to -0.79 (docs/online_generators.md,
    "Session 45").
    """
    from .utils import device_of, eval_mode

    first = first_batchnorm(model, input_shape)
    if first is None:
        return None
    c = int(input_shape[0])
    images = torch.zeros((2 + c, *input_shape), device=device_of(model))
    for i in range(c):
        images[1 + i, i] = 1.0
    images[1 + c, 0] = 2.0  # the affine check
    with eval_mode(model):  # one image at a time: each one's own mean; only the layers before `first` run
        means = [channel_mean_var(_input_of(model, first, img[None]).double())[0] for img in images]
    base = means[0]
    a = torch.stack([m - base for m in means[1 : 1 + c]], 1)  # (O, C)
    if a.shape[0] < c or not torch.allclose(means[1 + c] - base, 2 * a[:, 0], rtol=1e-3, atol=1e-5):
        return None
    spread = torch.sqrt(first.running_var.double() + first.eps)  # type: ignore[operator]
    target = (first.running_mean.double() - base) / spread  # type: ignore[operator]
    m = torch.linalg.lstsq(a / spread[:, None], target[:, None]).solution.flatten()
    return m.float()


@dataclass(frozen=True)
class InputStructure:
    """The second-order structure of a teacher's training images, as its first BN layer tells it.

    ``spread``: each channel's standard deviation in pixel units; ``correlation``: between channels, in
    pixel units (1: grey images); ``grain``: the noise model's grid (the images vary on an
    ``H / grain x W / grain`` grid, bilinearly interpolated); ``residual``: the fit's misfit, the RMS of
    the first BN layer's input variance against its running variance in units of the running variance.
    """

    spread: float
    correlation: float
    grain: int
    residual: float


# the correlations between channels :func:`input_structure_from_batchnorm` tries
STRUCTURE_CORRELATIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


def _smooth_noise(
    n: int, c: int, shape: tuple[int, int], grain: int, gen: torch.Generator | None
) -> torch.Tensor:
    h, w = shape
    u = torch.randn((n, c, h // grain, w // grain), generator=gen)
    if grain > 1:
        u = torch.nn.functional.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
    return u / u.std()


def _correlated(shared: torch.Tensor, own: torch.Tensor, rho: float) -> torch.Tensor:
    """Unit channels correlated by ``rho``: ``sqrt(rho) shared + sqrt(1 - rho) own`` (one shared channel)."""
    return rho**0.5 * shared if rho >= 1 else rho**0.5 * shared + (1 - rho) ** 0.5 * own


def variance_scale_fit(
    layer: _BatchNorm, v0: torch.Tensor, v1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s^2, residual)``: the scale of images ``c + s u`` that best gives ``layer``'s running variance.

    Through an affine path the variance at ``layer``'s input is ``v0 + s^2 (v1 - v0)`` (``v0``: of the
    constant image ``c``, its padded borders; ``v1``: at ``s`` 1); ``s^2`` is its least-squares solution in
    units of the running variance, ``residual`` the RMS misfit there (scalars, unclamped: ``s^2`` may be
    <= 0 when no scale fits).
    """
    unit = layer.running_var.float() + layer.eps  # type: ignore[operator]
    a = (v1 - v0) / unit
    b = (layer.running_var.float() - v0) / unit  # type: ignore[union-attr]
    s2 = (a * b).sum() / (a * a).sum().clamp_min(1e-12)
    return s2, ((s2 * a - b) ** 2).mean().sqrt()


@torch.no_grad()
def input_structure_from_batchnorm(
    model: nn.Module,
    input_shape: Sequence[int],
    mean: torch.Tensor,
    std: Sequence[float],
    images: int = 256,
    seed: int = 0,
    correlations: Sequence[float] = STRUCTURE_CORRELATIONS,
) -> InputStructure | None:
    """The spread and channel correlation of a BN model's training images, from its first BN layer.

    Data-free, as :func:`input_mean_from_batchnorm` (whose ``mean``, in normalised space, it takes): that
    layer's running variance is what the training images gave its input. Gaussian images of a given
    structure (channels correlated by ``rho``, in pixel units, varying on a grid of ``grain`` pixels;
    ``mean + spread * u / std`` in normalised space) give a variance ``v0 + spread^2 (v1 - v0)`` there
    (``v0``: the constant image's, ``v1``: at spread 1), so each structure's spread is a least-squares
    solution in units of the running variance; the structure whose fit is closest wins, over
    ``correlations`` (:data:`STRUCTURE_CORRELATIONS`) and grains 1, 2, 4, ... while the grid keeps 2 x 2
    cells. Grey digits under ImageNet / CIFAR constants (ten BN teachers of six families at 16-64 px):
    correlation 1 (0.9 once), the digits' own grain, the spread within 4.3% of theirs
    (docs/online_generators.md, "Session 46"). None without a BN layer. The path to that layer must be
    affine, which :func:`input_mean_from_batchnorm` checks (its None means: do not call this). The cost:
    the layers before that layer, about ``6 log2(H)`` batches of ``images`` (fewer above 32 px).
    """
    from .utils import device_of, eval_mode

    first = first_batchnorm(model, input_shape)
    if first is None:
        return None
    c, h, w = (int(v) for v in input_shape)
    dev = device_of(model)
    n = max(8, min(images, images * 1024 // (h * w)))
    mu = mean.to(dev, torch.float32).view(1, c, 1, 1)
    sd = torch.as_tensor(list(std), dtype=torch.float32, device=dev).view(1, c, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    best: InputStructure | None = None
    with eval_mode(model):
        v0 = channel_mean_var(_input_of(model, first, mu.expand(1, c, h, w)).float())[1]
        grain = 1
        while h // grain >= 2 and w // grain >= 2:
            shared = _smooth_noise(n, 1, (h, w), grain, gen)
            own = _smooth_noise(n, c, (h, w), grain, gen)
            for rho in correlations if c > 1 else (1.0,):
                u = _correlated(shared, own, rho).to(dev)
                v1 = channel_mean_var(_input_of(model, first, mu + u / sd).float())[1]
                s2, res = (float(t) for t in variance_scale_fit(first, v0, v1))
                if s2 > 0 and (best is None or res < best.residual):
                    best = InputStructure(s2**0.5, rho, grain, res)
            grain *= 2
    return best


def structured_images(
    n: int,
    structure: InputStructure,
    mean: torch.Tensor,
    std: Sequence[float],
    input_shape: Sequence[int],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` Gaussian images of ``structure`` around ``mean`` (normalised space, on the CPU).

    The noise model :func:`input_structure_from_batchnorm` fitted: channels correlated by
    ``structure.correlation`` in pixel units, varying on a ``structure.grain`` grid, each channel's
    spread ``structure.spread`` in pixels; ``mean`` ``(C,)`` in normalised space, ``std`` the card's.
    """
    c, h, w = (int(v) for v in input_shape)
    rho = structure.correlation if c > 1 else 1.0
    shared = _smooth_noise(n, 1, (h, w), structure.grain, generator)
    own = _smooth_noise(n, c, (h, w), structure.grain, generator) if rho < 1 else shared
    u = _correlated(shared, own, rho)
    sd = torch.as_tensor(list(std), dtype=torch.float32).view(1, c, 1, 1)
    return mean.detach().float().cpu().view(1, c, 1, 1) + structure.spread * u / sd


def require_batchnorm(model: nn.Module, method: str) -> list[_BatchNorm]:
    """The model's BN layers, or a clear error naming the methods that work without BN."""
    layers = batchnorm_layers(model)
    if not layers:
        raise UserInputError(
            f"method {method!r} inverts BatchNorm statistics, but this teacher has no BatchNorm layer; "
            "use a generator method that needs no BN instead: dafl, zskt or dfad"
        )
    return layers


class BNStatistics:
    """Records each BN layer's input mean and (biased) variance per forward pass.

    After a forward pass inside the ``with`` block, ``means[i]`` and ``vars[i]`` hold layer i's
    statistics, shaped ``(C,)`` (batch statistics over N, H, W) or ``(N, C)`` with
    ``per_sample=True`` (over H, W: ZeroQ's variant). Gradients flow to the input.

    Args:
        model: the network (usually the teacher, in eval mode).
        per_sample: statistics per sample instead of per batch.
        layers: the BN layers to record (default: every one).
        standardized: :meth:`loss` on the statistics in units of each channel's running spread
            (:meth:`datafree.losses.BNStatisticLoss.standardized`; per-batch statistics only).
    """

    def __init__(
        self,
        model: nn.Module,
        per_sample: bool = False,
        layers: Sequence[_BatchNorm] | None = None,
        standardized: bool = False,
    ) -> None:
        if standardized and per_sample:
            raise ValueError("standardized BN loss needs per-batch statistics")
        self.layers = batchnorm_layers(model) if layers is None else list(layers)
        self.per_sample = per_sample
        self.standardized = standardized
        self.means: list[torch.Tensor | None] = [None] * len(self.layers)
        self.vars: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, index: int):
        per_sample = self.per_sample

        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0]
            if x.is_floating_point() and x.dtype != torch.float32:
                x = x.float()  # statistics in fp32 under bf16/fp16 autocast (datafree.precision)
            if per_sample:
                dims = tuple(range(2, x.dim()))  # (N, C, H, W) -> stats over H, W
                if not dims:
                    raise ValueError("per-sample statistics need spatial dimensions")
                # Two passes (mean, then mean squared deviation): as exact as var_mean and about
                # twice as fast forward+backward on CPU for (N, C) outputs (ZeroQ's hot loop).
                mean = x.mean(dim=dims, keepdim=True)
                var = (x - mean).pow(2).mean(dim=dims)
                mean = mean.reshape(var.shape)
            else:
                mean, var = channel_mean_var(x, module)  # (N, C, H, W) -> stats over N, H, W, fused
            self.vars[index], self.means[index] = var, mean

        return fn

    def _hooked(self) -> list[nn.Module]:
        """The modules whose forward hook records layer i's statistics (the BN layers themselves)."""
        return list(self.layers)

    def __enter__(self) -> BNStatistics:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self._hooked())]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.means = [None] * len(self.layers)
        self.vars = [None] * len(self.layers)

    def running(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(running_mean, running_var)`` of every layer."""
        return [(m.running_mean, m.running_var) for m in self.layers]  # type: ignore[misc]

    def loss(
        self,
        first_layer_weight: float = 1.0,
        means: Sequence[torch.Tensor] | None = None,
        variances: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """DeepInversion's BN loss of the recorded statistics (:func:`datafree.losses.bn_statistic_loss`).

        Standardised when the context was made with ``standardized``. ``means``/``variances``: statistics
        to score in place of the recorded ones (NAYER's blend of them across rounds), one per layer.
        """
        from .losses import BNStatisticLoss, bn_statistic_loss

        means = self.means if means is None else means  # type: ignore[assignment]
        variances = self.vars if variances is None else variances  # type: ignore[assignment]
        running = self.running()
        if not self.standardized:
            return bn_statistic_loss(means, variances, running, first_layer_weight)  # type: ignore[arg-type]
        spec = BNStatisticLoss([rm for rm, _ in running], None, [rv for _, rv in running])
        return spec.standardized([m.eps for m in self.layers])(means, variances, first_layer_weight)  # type: ignore[arg-type]


def penultimate_module(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in module order: its input is the penultimate feature vector."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserInputError("the model has no nn.Linear classifier whose input could serve as features")
    return linears[-1]


class FeatureRecorder:
    """Records the input (``what="input"``) or output of the given modules on each forward pass.

    ``features[i]`` is the tensor seen at ``modules[i]`` on the last forward pass.
    """

    def __init__(self, modules: Sequence[nn.Module], what: str = "output") -> None:
        if what not in ("input", "output"):
            raise ValueError(f"what must be 'input' or 'output', got {what!r}")
        self.modules = list(modules)
        self.what = what
        self.features: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> FeatureRecorder:
        def make(i: int):
            def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                self.features[i] = inputs[0] if self.what == "input" else output

            return fn

        self._handles = [m.register_forward_hook(make(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.features = [None] * len(self.modules)
