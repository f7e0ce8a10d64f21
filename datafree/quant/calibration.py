"""Clipping-range calibration: min/max, percentile and MSE-optimal, per row of a 2-D tensor.

Every method is a pure function ``(values (R, N), bits, symmetric, **options) -> (lo (R,), hi (R,))``
registered in :data:`CALIBRATORS`: one row per output channel for weights, a single row for a
per-tensor activation. :class:`RangeObserver` collects an activation's values during the
calibration forward passes (exact min/max plus a bounded random subsample for the other methods).

References: Jacob et al., CVPR 2018 (min/max); McKinstry et al., "Discovering Low-Precision
Networks Close to Full-Precision Networks", 2018 (percentile clipping); Banner et al., "Post
training 4-bit quantization", NeurIPS 2019, and Choukroun et al., "Low-bit Quantization of Neural
Networks for Efficient Inference", ICCVW 2019 (MSE-optimal clipping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UserInputError
from .fakequant import fake_quantize, quant_params, quant_range

__all__ = [
    "CALIBRATORS",
    "minmax_range",
    "percentile_range",
    "mse_range",
    "calibrate_range",
    "RangeObserver",
]

Calibrator = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def minmax_range(
    values: torch.Tensor, bits: int = 8, symmetric: bool = False, **_: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full range of each row.

    Shape:
        - values: ``(R, N)``; outputs: ``(R,)`` each.
    """
    return values.amin(dim=1), values.amax(dim=1)


def percentile_range(
    values: torch.Tensor, bits: int = 8, symmetric: bool = False, percentile: float = 99.99, **_: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``100 - percentile`` and ``percentile`` percentiles of each row (outliers clipped).

    Args:
        values: ``(R, N)``.
        bits: unused (same signature as the other methods).
        symmetric: unused.
        percentile: upper percentile in ``(50, 100]``.

    Returns:
        ``(lo, hi)``, each ``(R,)``.
    """
    if not 50.0 < percentile <= 100.0:
        raise UserInputError(f"percentile must be in (50, 100], got {percentile}")
    n = values.shape[1]
    k_hi = max(1, min(n, int(round(percentile / 100.0 * n))))
    k_lo = max(1, min(n, n - k_hi + 1))
    lo = values.kthvalue(k_lo, dim=1).values
    hi = values.kthvalue(k_hi, dim=1).values
    return lo, hi


def mse_range(
    values: torch.Tensor, bits: int = 8, symmetric: bool = False, grid: int = 100, **_: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipping range ``alpha * [min, max]`` minimising each row's quantization MSE.

    ``alpha`` is searched on ``grid`` evenly spaced values in ``(0, 1]`` (one per row).

    Args:
        values: ``(R, N)``.
        bits: bit width of the grid.
        symmetric: symmetric signed grid (weights) or asymmetric (activations).
        grid: number of candidate clipping ratios.

    Returns:
        ``(lo, hi)``, each ``(R,)``.
    """
    lo0, hi0 = minmax_range(values)
    qmin, qmax = quant_range(bits, symmetric)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    for i in range(1, int(grid) + 1):
        alpha = i / grid
        lo, hi = alpha * lo0, alpha * hi0
        scale, zp = quant_params(lo, hi, bits, symmetric)
        err = (fake_quantize(values, scale[:, None], zp[:, None], qmin, qmax) - values).pow(2).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
    return best_lo, best_hi


CALIBRATORS: dict[str, Calibrator] = {
    "minmax": minmax_range,
    "percentile": percentile_range,
    "mse": mse_range,
}


def calibrate_range(
    method: str, values: torch.Tensor, bits: int, symmetric: bool, **options: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to :data:`CALIBRATORS` ``[method]`` (a clear error for an unknown name)."""
    fn = CALIBRATORS.get(method)
    if fn is None:
        raise UserInputError(f"unknown calibration method {method!r}; known: {', '.join(CALIBRATORS)}")
    with torch.no_grad():
        return fn(values, bits, symmetric, **options)


class RangeObserver:
    """Collects one activation's values over calibration batches.

    Keeps the exact min and max, and a uniform random subsample of at most ``max_samples``
    values (all of them when fewer) for the percentile and MSE methods.

    Args:
        max_samples: bound on the values kept.
        generator: for the subsample (CPU generator).
    """

    def __init__(self, max_samples: int = 1 << 20, generator: torch.Generator | None = None) -> None:
        self.max_samples = max_samples
        self.generator = generator
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []
        self.seen = 0

    def __call__(self, x: torch.Tensor) -> None:
        """Record ``x`` (copied: the caller may modify it in place afterwards)."""
        flat = x.detach().reshape(-1).float()
        lo, hi = flat.min(), flat.max()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.seen += flat.numel()
        if flat.numel() > self.max_samples:
            idx = torch.randint(flat.numel(), (self.max_samples,), generator=self.generator).to(flat.device)
            flat = flat[idx]
        self.samples.append(flat.clone())
        total = sum(s.numel() for s in self.samples)
        if total > self.max_samples:  # keep a bounded, uniformly thinned pool
            pool = torch.cat(self.samples)
            idx = torch.randint(pool.numel(), (self.max_samples,), generator=self.generator).to(pool.device)
            self.samples = [pool[idx]]

    def compute(self, method: str, bits: int, **options: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipping range ``(lo, hi)`` (scalars) by ``method`` from what was observed."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("no activation was observed: the calibration forward pass did not reach it")
        if method == "minmax":
            return self.lo, self.hi
        values = torch.cat(self.samples)[None]  # (1, N)
        lo, hi = calibrate_range(method, values, bits, False, **options)
        return lo[0], hi[0]
