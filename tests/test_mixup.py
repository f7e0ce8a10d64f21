"""Mixup and contrast of the KD stage's batches (KDConfig.mixup / contrast, datafree.augment)."""

import pytest
import torch

from datafree.augment import contrast_batch, mix_batch
from datafree.distill import KDConfig, distill
from datafree.errors import UserInputError
from datafree.sources import NoiseSource, TensorSource
from tests.kd_cases import assert_same_student, interrupt_and_resume, tiny_student


def test_mix_batch_blends_each_image_with_another_of_the_batch():
    torch.manual_seed(0)
    # image i is the constant i: a mixed image is a constant too, lam * i + (1 - lam) * j
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 3, 3).clone()
    torch.manual_seed(5)
    mixed = mix_batch(x, 1.0)
    assert mixed.shape == x.shape
    assert torch.equal(mixed, mixed[:, :, :1, :1].expand_as(mixed))  # still constant per image
    torch.manual_seed(5)
    lam = torch.distributions.Beta(1.0, 1.0).sample((8,))
    perm = torch.randperm(8)
    torch.testing.assert_close(mixed[:, 0, 0, 0], lam * torch.arange(8.0) + (1 - lam) * perm.float())
    assert not torch.equal(mixed, x)
    # a tiny alpha puts lam near 0 or 1: nearly every image is one of the batch's own
    near = mix_batch(x, 0.01)[:, 0, 0, 0]
    assert ((near - near.round()).abs() < 1e-3).float().mean() > 0.8
    one = torch.ones(1, 1, 2, 2)
    assert torch.equal(mix_batch(one, 1.0), one)  # nothing to mix with


def test_contrast_batch_scales_each_image_about_its_channel_means():
    x = torch.randn(64, 3, 5, 5) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + 3.0
    torch.manual_seed(1)
    y = contrast_batch(x, 0.5)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))  # the channel means stay
    ratio = y.std(dim=(2, 3)) / x.std(dim=(2, 3))  # one factor per image, the same on its channels
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    f = ratio[:, 0]
    assert f.min() >= 1 / 1.5 - 1e-5 and f.max() <= 1.5 + 1e-5
    assert (f < 0.9).any() and (f > 1.1).any()  # both ways
    torch.manual_seed(1)
    u = torch.rand(64) * 2 - 1  # the documented draw: log-uniform within [1 / 1.5, 1.5]
    torch.testing.assert_close(f, torch.exp(u * torch.log(torch.tensor(1.5))), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [-0.1, 11.0, float("nan")])
def test_bad_contrast(bad):
    with pytest.raises(UserInputError, match="contrast"):
        KDConfig(contrast=bad).validate()


# mixup, the warp (test_kd_affine) and the contrast
@pytest.mark.parametrize("option", [{"mixup": 1.0}, {"affine": 15.0}, {"contrast": 0.5}])
def test_mixup_and_the_warp_change_the_run_and_resume_exactly(tmp_path, bn_teacher, option):
    images = NoiseSource(64, bn_teacher.card).images
    cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16, **option)
    ref = distill(bn_teacher.model, tiny_student(), TensorSource(images), cfg, checkpoint_dir=tmp_path / "a")
    plain_cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16)
    plain = distill(bn_teacher.model, tiny_student(), TensorSource(images), plain_cfg)
    assert not torch.allclose(next(ref.student.parameters()), next(plain.student.parameters()))
    resumed = interrupt_and_resume(bn_teacher.model, images, cfg, tmp_path / "b")
    assert resumed.resumed_from_epoch == 2
    assert_same_student(ref, resumed)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_mixup(bad):
    with pytest.raises(UserInputError, match="mixup"):
        KDConfig(mixup=bad).validate()
