"""The online backends' ``jitter`` option: the generator's loss sees G(z) rolled by a random offset."""

from __future__ import annotations

import pytest
import torch

from datafree.cards import load_model
from datafree.errors import UserInputError
from generators import create_synthesizer

torch.set_num_threads(1)


class _Recorder(torch.nn.Module):
    """The teacher, recording every batch it is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("method", ["dafl", "dfad"])
def test_the_teacher_sees_a_roll_of_the_generated_batch(method):
    lenet = load_model("lenet5_digits")
    synth = create_synthesizer(method, lenet.model, lenet.card, batch_size=8, jitter=3, seed=4)
    assert synth.jitter == 3
    recorder = _Recorder(lenet.model)
    synth.teacher = recorder
    student = load_model("lenet5_digits").model if synth.needs_student else None
    z = synth.draw_z(8)
    images = synth.generate(z).detach()
    rolls = set()
    for _ in range(6):
        recorder.seen.clear()
        synth.generator_loss(z, student)
        seen = recorder.seen[0]
        shift = next(
            (dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)
            if torch.allclose(seen, torch.roll(images, (dx, dy), (2, 3)))
        )  # fmt: skip
        rolls.add(shift)
    assert len(rolls) > 1  # a fresh offset per step


def test_jitter_is_off_by_default_and_automatic_is_an_eighth_of_the_side():
    lenet = load_model("lenet5_digits")  # 16 px
    synth = create_synthesizer("zskt", lenet.model, lenet.card, batch_size=8, seed=0)
    assert synth.jitter == 0
    recorder = _Recorder(lenet.model)
    synth.teacher = recorder
    z = synth.draw_z(8)
    synth.generator_loss(z, load_model("lenet5_digits").model)
    torch.testing.assert_close(recorder.seen[0], synth.generate(z))  # off: G(z) itself
    assert create_synthesizer("zskt", lenet.model, lenet.card, jitter=-1).jitter == 2
    with pytest.raises(UserInputError, match="jitter"):
        create_synthesizer("zskt", lenet.model, lenet.card, jitter=-2)
