"""Shared pieces of the KD-stage tests (resume and interruption)."""

import pytest
import torch

from datafree.distill import DistillResult, KDConfig, distill
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


def interrupt_and_resume(teacher, images, cfg: KDConfig, out) -> DistillResult:
    """A KD run into ``out`` killed after 9 batches, then the same run resumed: its result."""
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, tiny_student(), InterruptingSource(images, 9), cfg, checkpoint_dir=out)
    return distill(teacher, tiny_student(), TensorSource(images), cfg, checkpoint_dir=out)


def assert_same_student(a: DistillResult, b: DistillResult) -> None:
    """The two runs' students have equal weights and buffers."""
    for (k, x), y in zip(a.student.state_dict().items(), b.student.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=k)
