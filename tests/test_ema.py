"""The student weight average of the KD stage (KDConfig.ema_decay)."""

import pytest
import torch

from datafree.distill import KDConfig, distill
from datafree.ema import WeightEMA
from datafree.errors import UserInputError
from datafree.sources import NoiseSource, TensorSource
from tests.kd_cases import assert_same_student, interrupt_and_resume, tiny_student


def test_weight_ema_is_the_warmed_up_running_average():
    net = torch.nn.Linear(2, 1)
    ema = WeightEMA(net, 0.5)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # d = min(0.5, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1.0))
    with ema.applied(net):
        torch.testing.assert_close(net.weight, ema.shadow["weight"])
    torch.testing.assert_close(net.weight.detach(), w0 + 1.0)  # live weights restored


def test_ema_run_returns_the_average_and_resumes_exactly(tmp_path, bn_teacher):
    cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16, ema_decay=0.9)
    images = NoiseSource(64, bn_teacher.card).images
    seen: list[torch.Tensor] = []
    ref = distill(bn_teacher.model, tiny_student(), TensorSource(images), cfg, checkpoint_dir=tmp_path / "a",
                  eval_fn=lambda s: seen.append(next(s.parameters()).detach().clone()) or 0.0)  # fmt: skip
    plain_cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16)
    plain = distill(bn_teacher.model, tiny_student(), TensorSource(images), plain_cfg)
    # the returned student is the average (not the last iterate), and the last evaluation saw it
    first = next(ref.student.parameters())
    assert not torch.allclose(first, next(plain.student.parameters()))
    torch.testing.assert_close(seen[-1], first.detach())
    resumed = interrupt_and_resume(bn_teacher.model, images, cfg, tmp_path / "b")
    assert resumed.resumed_from_epoch == 2
    assert_same_student(ref, resumed)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_bad_ema_decay(bad):
    with pytest.raises(UserInputError, match="ema_decay"):
        KDConfig(ema_decay=bad).validate()
