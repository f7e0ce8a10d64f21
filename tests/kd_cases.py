"""Shared pieces of the KD-stage tests (resume and interruption)."""

import torch

from datafree.models import create_model
from datafree.sources import TensorSource


class InterruptingSource(TensorSource):
    """A tensor source that raises KeyboardInterrupt on batch ``limit + 1``: a run killed mid-stage."""

    def __init__(self, images, limit):
        super().__init__(images)
        self.limit, self.calls = limit, 0

    def next_batch(self, n):  # noqa: D102
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return super().next_batch(n)


def tiny_student():
    """The same small student every call (seeded initialisation)."""
    torch.manual_seed(1)
    return create_model("resnet8_quarter", 10, 1)
