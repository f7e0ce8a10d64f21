"""The KD stage's random affine warp (KDConfig.affine, datafree.augment.kd_augmentation).

That it changes a run and resumes exactly: tests/test_mixup.py
(test_mixup_and_the_warp_change_the_run_and_resume_exactly).
"""

import dataclasses

import pytest
import torch

from datafree.augment import kd_transform
from datafree.distill import KDConfig
from datafree.errors import UserInputError


def test_affine_warps_each_image_within_its_bounds():
    # a centred bright square, cropped with and without the warp under the same crop offsets (one seed)
    x = torch.zeros(32, 1, 16, 16)
    x[:, :, 5:11, 5:11] = 1.0
    torch.manual_seed(0)
    crop = kd_transform([1, 16, 16], augment=True)(x)
    torch.manual_seed(0)
    warped = kd_transform([1, 16, 16], augment=True, affine=30)(x)
    assert warped.shape == x.shape
    assert not torch.allclose(warped, crop)  # the warp changed the images
    # each image differs from the others: per-sample angles, not one warp for the batch
    shifted = warped - warped.mean(dim=(2, 3), keepdim=True)
    assert len({round(float(v), 3) for v in shifted.abs().sum(dim=(1, 2, 3))}) > 20
    # the bright mass stays about the same (scale within 1 +- 0.3 of the side: area within 0.49-1.69)
    mass = warped.sum(dim=(1, 2, 3)) / x[0].sum()
    assert bool(((mass > 0.45) & (mass < 1.75)).all())
    torch.manual_seed(0)
    off = kd_transform([1, 16, 16], augment=True, affine=0)(x)
    torch.testing.assert_close(off, crop)  # 0: no warp, the crop alone
    # the warp is part of the crop's augmentation: without it, nothing
    assert torch.equal(kd_transform([1, 16, 16], augment=False, affine=30)(x), x)


@pytest.mark.parametrize("bad", [-1.0, 90.0, float("nan"), float("inf")])
def test_bad_affine(bad):
    with pytest.raises(UserInputError, match="affine"):
        KDConfig(affine=bad).validate()


def test_generator_students_warp_by_default(plain_teacher, bn_teacher):
    from datafree.plan import plan
    from datafree.rules import KD_AFFINE

    assert KD_AFFINE == 20.0
    for method in ("dafl", "zskt", "dfad"):  # every teacher (sessions 38-39)
        assert plan(plain_teacher, method=method).kd.affine == KD_AFFINE
        assert plan(bn_teacher, method=method).kd.affine == KD_AFFINE
        assert plan(plain_teacher, method=method, kd={"affine": 0}).kd.affine == 0.0  # the user's value wins
        assert plan(bn_teacher, method=method, kd={"affine": 5}).kd.affine == 5.0
    # DAFL's input-size rule for the student's lr still applies beside it
    assert plan(plain_teacher, method="dafl").kd.lr == 1e-2
    for method in ("cmi", "nayer"):  # session 40: a written dataset and the growing pool alike
        for pool in (False, True):
            p = plan(bn_teacher, method=method, pool=pool)
            assert p.kd.affine == KD_AFFINE
            assert plan(bn_teacher, method=method, pool=pool, kd={"affine": 0}).kd.affine == 0.0
        unwarped = plan(bn_teacher, method=method, kd={"affine": 0}).kd
        assert dataclasses.replace(unwarped, affine=KD_AFFINE) == plan(bn_teacher, method=method).kd
    for method in ("deepinversion", "fast", "zeroq"):  # the crop (DI, Fast: level with the warp, s41)
        assert plan(bn_teacher, method=method).kd.affine == 0.0
    assert plan(bn_teacher, method="fast", pool=True).kd.affine == 0.0
