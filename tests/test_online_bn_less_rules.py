"""Session 6 rules of the online backends on BN-less teachers.

DAFL's student lr by input size, the class-coverage form of the class-balance term, and the noise share
only for teachers whose answers to noise are diverse.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datafree.errors import UserInputError
from datafree.generator_losses import class_coverage_loss, information_entropy_loss
from datafree.rules import dafl_bn_less_lr
from generators import create_synthesizer
from tests.bn_cases import plain_32

torch.set_num_threads(1)


def test_dafl_bn_less_lr_is_a_rule_of_the_input_side():
    assert dafl_bn_less_lr((1, 16, 16)) == pytest.approx(1e-2)  # lenet5_digits, as measured
    assert dafl_bn_less_lr((3, 32, 32)) == pytest.approx(5e-3)  # plain_32, as measured
    assert dafl_bn_less_lr((3, 24, 24)) == pytest.approx(1e-2 * 16 / 24)  # 1 / side between them
    assert dafl_bn_less_lr((1, 8, 8)) == pytest.approx(1e-2)  # held at the measured ends
    assert dafl_bn_less_lr((3, 224, 224)) == pytest.approx(5e-3)
    assert dafl_bn_less_lr((3, 16, 32)) == pytest.approx(5e-3)  # the larger side


def test_dafl_student_lr_follows_the_rule_on_bn_less_teachers_only(plain_teacher, bn_teacher):
    from datafree.plan import kd_settings, plan

    p32 = plain_32(plain_teacher)
    assert plan(plain_teacher, method="dafl").kd.lr == pytest.approx(1e-2)  # unchanged at 16 px
    assert plan(p32, method="dafl").kd.lr == pytest.approx(5e-3)
    assert plan(p32, method="dafl", kd={"lr": 3e-3}).kd.lr == 3e-3  # the user's value wins
    assert plan(bn_teacher, method="dafl").kd.lr == pytest.approx(5e-3)  # BN teachers: kd_defaults
    assert kd_settings("dafl", teacher=p32.model).lr == pytest.approx(1e-2)  # no shape: the 16 px reference
    assert kd_settings("dafl", teacher=p32.model, input_shape=(3, 32, 32)).lr == pytest.approx(5e-3)
    for method in ("zskt", "dfad"):  # their rules are not of the input size
        assert plan(p32, method=method).kd.lr == plan(plain_teacher, method=method).kd.lr


def test_class_coverage_loss_values_and_gradient():
    k = 10
    uniform = torch.zeros(4, k)
    assert class_coverage_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)
    balanced = torch.eye(k) * 30.0  # every class once, confidently
    assert class_coverage_loss(balanced).item() == pytest.approx(0.0, abs=1e-4)
    missing = torch.full((k, k), -30.0)
    missing[torch.arange(k), torch.arange(k) % (k - 1)] = 30.0  # class 9 never predicted
    assert class_coverage_loss(missing).item() > 5.0  # large where the entropy form is near its floor
    assert information_entropy_loss(missing).item() < -math.log(k) + 0.15  # 0.14 above its floor
    # the pull toward the missing class: vanishing for the entropy form, not for the coverage form
    for loss, expect_large in ((class_coverage_loss, True), (information_entropy_loss, False)):
        x = missing.clone().requires_grad_(True)
        loss(x).backward()
        pull = -x.grad[:, k - 1].sum().item()  # raising class 9's logits lowers the loss by this much
        assert (pull > 1e-3) == expect_large, (loss.__name__, pull)
    assert torch.isfinite(class_coverage_loss(torch.tensor([[1e4, -1e4, 0.0]]))).all()


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_balance_loss_option(method, plain_teacher):
    lm = plain_teacher
    images = torch.rand(8, 1, 16, 16)
    student = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    default = create_synthesizer(method, lm.model, lm.card, batch_size=8)
    assert default.config.balance_loss == "coverage"
    torch.testing.assert_close(
        default.objective(images, student)["balance"][1], class_coverage_loss(lm.model(images))
    )
    ent = create_synthesizer(method, lm.model, lm.card, batch_size=8, balance_loss="entropy")  # the old form
    torch.testing.assert_close(
        ent.objective(images, student)["balance"][1], information_entropy_loss(lm.model(images))
    )
    with pytest.raises(UserInputError, match="balance_loss"):
        create_synthesizer(method, lm.model, lm.card, balance_loss="kl")


class _OneClass(nn.Module):
    """A BN-less teacher that calls every input class 3."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x.flatten(1)) * 0.0
        out[:, 3] = 10.0
        return out


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_noise_share_needs_diverse_answers_to_noise(method, plain_teacher):
    from datafree.rules import NOISE_MIN_ENTROPY, noise_answer_entropy

    lm = plain_teacher
    h = noise_answer_entropy(lm.model, lm.card)
    assert h >= NOISE_MIN_ENTROPY  # lenet5_digits spreads noise over its classes: the share stays on
    assert h == noise_answer_entropy(lm.model, lm.card)  # fixed seed
    state = torch.random.get_rng_state()
    synth = create_synthesizer(method, lm.model, lm.card, batch_size=8)
    assert synth.noise_share == synth.auto_noise == 0.25
    assert torch.equal(state, torch.random.get_rng_state())  # the run's RNG does not move
    one = _OneClass().eval()
    assert noise_answer_entropy(one, lm.card) < 0.01
    narrow = create_synthesizer(method, one, lm.card, batch_size=8)
    assert narrow.noise_share == 0.0  # noise would teach "never any class but 3"
    assert create_synthesizer(method, one, lm.card, batch_size=8, noise_fraction=0.25).noise_share == 0.25
