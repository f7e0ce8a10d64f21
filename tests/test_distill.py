import pytest
import torch

from datafree.distill import KDConfig, distill
from datafree.errors import DatafreeError
from datafree.models import create_model
from datafree.sources import NoiseSource, TensorSource
from tests.kd_cases import assert_same_student, interrupt_and_resume, tiny_student


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, bn_teacher):
    cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16)
    images = NoiseSource(64, bn_teacher.card).images
    ref = distill(bn_teacher.model, tiny_student(), TensorSource(images), cfg, checkpoint_dir=tmp_path / "a")
    resumed = interrupt_and_resume(bn_teacher.model, images, cfg, tmp_path / "b")
    assert resumed.resumed_from_epoch == 2
    assert_same_student(ref, resumed)


def test_other_settings_refuse_to_resume(tmp_path, bn_teacher):
    from datafree.errors import UserInputError

    images = NoiseSource(32, bn_teacher.card).images
    distill(
        bn_teacher.model,
        tiny_student(),
        TensorSource(images),
        KDConfig(epochs=1, steps_per_epoch=1, batch_size=8),
        checkpoint_dir=tmp_path,
    )
    # the refusal names what differs, so a user whose defaults moved can give the checkpoint's (--epochs 1)
    with pytest.raises(UserInputError, match=r"other settings \(checkpoint -> this run: epochs 1 -> 2\)"):
        distill(
            bn_teacher.model,
            tiny_student(),
            TensorSource(images),
            KDConfig(epochs=2, steps_per_epoch=1, batch_size=8),
            checkpoint_dir=tmp_path,
        )


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, bn_teacher):
    images = NoiseSource(32, bn_teacher.card).images
    cfg = KDConfig(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e30, momentum=0.0)
    with pytest.raises(DatafreeError, match="KD loss became"):
        distill(bn_teacher.model, tiny_student(), TensorSource(images), cfg, checkpoint_dir=tmp_path)


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"batch_size": -1}, {"lr": float("nan")}, {"optimizer": "rmsprop"}]
)
def test_bad_kd_config(bad):
    from datafree.errors import UserInputError

    with pytest.raises(UserInputError):
        KDConfig(**bad).validate()


def test_kd_schedule_spans_the_steps_really_run(bn_teacher, monkeypatch):
    # steps_per_epoch smaller than kd_steps runs one whole round per epoch: the cosine schedule and the
    # progress total must count those steps (the schedule used to run past its end and rise again).
    made = []

    class Spy(torch.optim.lr_scheduler.CosineAnnealingLR):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim.lr_scheduler, "CosineAnnealingLR", Spy)
    cfg = KDConfig(epochs=2, steps_per_epoch=3, kd_steps=4, batch_size=8)
    assert (cfg.rounds, cfg.steps_run_per_epoch) == (1, 4)
    student = create_model("resnet8_quarter", 10, 1)
    distill(bn_teacher.model, student, NoiseSource(16, bn_teacher.card), cfg)
    assert made[0].T_max == 8 and made[0].last_epoch == 8
    assert made[0].get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
