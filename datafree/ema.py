"""An exponential moving average of a network's weights (Polyak averaging) for the KD stage.

After every optimiser step ``avg = d * avg + (1 - d) * w`` for every floating-point entry of the
state dict (parameters and BatchNorm running statistics; integer buffers are left live), with the
warm-up ``d = min(decay, (1 + t) / (10 + t))`` of TensorFlow's ``ExponentialMovingAverage`` and timm's
``ModelEmaV2`` so the first steps do not average in the random initialisation.

Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992; the
per-step EMA form as in Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """The running average of ``model``'s floating-point state.

    Args:
        model: the network being trained (its current weights start the average).
        decay: the EMA decay in ``[0, 1)``; 0 turns the average off (no copy is kept and every method
            is a no-op, so the caller needs no branch).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.steps = 0
        self.shadow = (
            {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
            if self.enabled
            else {}
        )

    @property
    def enabled(self) -> bool:
        """Whether an average is kept (``decay`` > 0)."""
        return self.decay > 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after every optimiser step)."""
        if not self.enabled:
            return
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
        self.steps += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the averaged weights; its own are restored after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                state = model.state_dict()
                for k, v in live.items():
                    state[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """The average and its step count (for the KD checkpoint)."""
        return {"steps": self.steps, "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (entries must match the model's)."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            raise KeyError("the checkpoint's weight average does not match the student")
        for k, v in shadow.items():
            self.shadow[k].copy_(v)
        self.steps = int(state["steps"])
