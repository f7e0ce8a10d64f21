"""Issue 13: --precision and --channels-last reach compress's pool path (the ``fast`` generator)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree import precision
from generators import create_synthesizer


@pytest.fixture(autouse=True)
def _reset_options(bn_teacher):
    yield
    precision.configure()  # process-wide options back to fp32 for the tests that follow
    bn_teacher.model.to(memory_format=torch.contiguous_format)


def _conv_dtypes_and_formats(model: nn.Module, run) -> tuple[set[torch.dtype], set[bool]]:
    """The output dtypes of ``model``'s convolutions, and whether their inputs were channels_last."""
    dtypes: set[torch.dtype] = set()
    formats: set[bool] = set()

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        dtypes.add(out.dtype)
        formats.add(inputs[0].is_contiguous(memory_format=torch.channels_last))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return dtypes, formats


@pytest.mark.parametrize("adv", [0.0, 1.0])
def test_fast_runs_the_teacher_in_bf16_channels_last_with_fp32_losses(bn_teacher, adv):
    precision.configure("bf16", channels_last=True)
    teacher = bn_teacher.model
    synth = create_synthesizer("fast", teacher, bn_teacher.card, batch_size=8, iterations=2, adv_weight=adv)
    synth.reset(8, torch.Generator().manual_seed(0))
    student = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    student(torch.zeros(1, *bn_teacher.card.input_shape))  # materialise the lazy layer
    logs: dict[str, torch.Tensor] = {}
    dtypes, formats = _conv_dtypes_and_formats(teacher, lambda: logs.update(synth.step(student)))
    assert dtypes == {torch.bfloat16} and formats == {True}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in logs.values())
    assert all(m.dtype == torch.float32 for m, _ in synth.bn_ema.last)
    synth.step(student)  # the round's last step: the meta-update and the fp32 EMA of the statistics
    assert synth.bn_ema.average is not None and all(m.dtype == torch.float32 for m, _ in synth.bn_ema.average)
    assert synth.sample().images.dtype == torch.float32  # the pool stores fp32 pixels


def test_fast_stays_fp32_by_default(bn_teacher):
    precision.configure("fp32")
    synth = create_synthesizer("fast", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2)
    synth.reset(8, torch.Generator().manual_seed(0))
    dtypes, formats = _conv_dtypes_and_formats(bn_teacher.model, synth.step)
    assert dtypes == {torch.float32} and False in formats  # (a 1-channel input is both formats)
