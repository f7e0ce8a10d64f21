"""Per-channel normalisation and the valid pixel range it implies."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["Normalizer"]


class Normalizer:
    """``x_norm = (x_pixel - mean) / std`` for pixels in ``[0, 1]``.

    Args:
        mean: per-channel means, length C.
        std: per-channel standard deviations, length C.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        # bounds() per (device, dtype): the synthesis loops clamp their pixels every step
        self._bounds: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _to(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, C, H, W)`` in [0, 1] -> network input."""
        mean, std = self._to(x)
        return (x - mean) / std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Network input -> pixels in [0, 1] (not clamped)."""
        mean, std = self._to(x)
        return x * std + mean

    def bounds(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(low, high)`` of the valid normalised range, shaped ``(1, C, 1, 1)``.

        Made once per device and dtype and shared: not to be modified in place.
        """
        key = (like.device, like.dtype)
        if key not in self._bounds:
            mean, std = self._to(like)
            self._bounds[key] = ((0 - mean) / std, (1 - mean) / std)
        return self._bounds[key]

    def clamp_(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp normalised ``x`` in place to the range of valid pixels (one operation)."""
        return x.clamp_(*self.bounds(x))
