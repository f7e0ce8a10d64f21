"""One contract for every registered backend (STYLE.md rule 4).

Shapes, finite values, valid pixel range after Normalizer.inverse, same seed -> same images, a few
steps lower the objective.
"""

from __future__ import annotations

import pytest
import torch

from datafree.models import create_model
from generators import GENERATORS, create_synthesizer, method_class

# Tiny budgets per backend so the contract runs in seconds; a backend may add its entry here.
# (The BN-less teacher's class-balance term of zskt/dfad sits near its floor -log K from the first
# step, so over 6 noisy steps it hides the papers' objective: the contract checks that one.)
TINY: dict[str, dict] = {
    "deepinversion": {"batch_size": 16, "iterations": 8, "warmup": 2},
    "fast": {"batch_size": 16, "iterations": 4},
    "cmi": {"batch_size": 16, "iterations": 4, "negatives": 8},
    "nayer": {"batch_size": 16, "iterations": 4},
    "zeroq": {"batch_size": 16, "iterations": 8},
    "dafl": {"batch_size": 32, "generator_lr": 0.005},
    "zskt": {"batch_size": 16, "balance": 0.0},
    "dfad": {"batch_size": 16, "balance": 0.0},
}
STEPS = 6


def _make(name, teacher, seed=0):
    synth = create_synthesizer(name, teacher.model, teacher.card, seed=seed, **TINY.get(name, {}))
    return synth


def _student(teacher):
    torch.manual_seed(0)
    return create_model("resnet8_quarter", teacher.card.num_classes, teacher.card.in_channels)


def _teacher_for(name, bn_teacher, plain_teacher):
    return bn_teacher if method_class(name).requires_batchnorm else plain_teacher


def _images(synth, n, seed, student):
    g = torch.Generator().manual_seed(seed)
    if synth.online:
        return synth.sample(n, g).images
    synth.reset(n, g)
    for _ in range(2):
        synth.step(student)
    return synth.sample(n).images


@pytest.mark.parametrize("name", GENERATORS.names())
def test_contract_shapes_range_and_determinism(name, bn_teacher, plain_teacher):
    teacher = _teacher_for(name, bn_teacher, plain_teacher)
    student = _student(teacher)
    a = _images(_make(name, teacher), 8, seed=3, student=student)
    b = _images(_make(name, teacher), 8, seed=3, student=student)
    assert a.shape == (8, *teacher.card.input_shape)
    assert torch.isfinite(a).all()
    pixels = teacher.card.normalizer().inverse(a)
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", GENERATORS.names())
def test_contract_steps_lower_the_objective(name, bn_teacher, plain_teacher):
    teacher = _teacher_for(name, bn_teacher, plain_teacher)
    student = _student(teacher)
    torch.manual_seed(0)
    synth = _make(name, teacher)
    if not synth.online:
        synth.reset(TINY.get(name, {}).get("batch_size", 16), torch.Generator().manual_seed(0))
    losses = [synth.step(student)["total"].item() for _ in range(STEPS)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-2:]) < losses[0]


@pytest.mark.parametrize("name", GENERATORS.names())
def test_contract_state_dict_round_trip(name, bn_teacher, plain_teacher):
    teacher = _teacher_for(name, bn_teacher, plain_teacher)
    student = _student(teacher)
    synth = _make(name, teacher)
    if not synth.online:
        synth.reset(8, torch.Generator().manual_seed(0))
    synth.step(student)
    state = synth.state_dict()
    clone = _make(name, teacher)
    clone.load_state_dict(state)
    torch.manual_seed(5)
    la = synth.step(student)["total"]
    torch.manual_seed(5)
    lb = clone.step(student)["total"]
    torch.testing.assert_close(la, lb)


def test_bn_method_on_teacher_without_bn_is_refused(plain_teacher):
    from datafree.errors import UserInputError

    for name in GENERATORS.names():
        if method_class(name).requires_batchnorm:
            with pytest.raises(UserInputError, match="no BatchNorm"):
                create_synthesizer(name, plain_teacher.model, plain_teacher.card)


def test_unknown_option_is_refused(bn_teacher):
    from datafree.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown option 'bn'"):
        create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, bn=1.0)
