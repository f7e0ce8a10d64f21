"""Session 7 rule of the online backends: KD epochs from the teacher's MACs (cheap teachers train longer)."""

from __future__ import annotations

import math

import pytest
import torch

from datafree.rules import ONLINE_MAX_EPOCH_FACTOR, ONLINE_REF_MACS, conv_linear_macs, online_kd_epochs

torch.set_num_threads(1)

METHODS = ("dafl", "zskt", "dfad")


def test_online_kd_epochs_scales_with_the_reference_over_the_teachers_macs():
    assert online_kd_epochs(30, ONLINE_REF_MACS) == 30  # the reference (resnet8_digits): as measured
    assert online_kd_epochs(30, 4 * ONLINE_REF_MACS) == 30  # costlier teachers: never fewer epochs
    assert online_kd_epochs(30, ONLINE_REF_MACS // 2) == 60  # in proportion between
    assert online_kd_epochs(30, round(ONLINE_REF_MACS / 1.5)) == 45
    assert online_kd_epochs(30, 233_640) == round(30 * ONLINE_MAX_EPOCH_FACTOR) == 90  # lenet5_digits: capped
    assert online_kd_epochs(30, 1) == 90
    assert online_kd_epochs(30, 0) == 30  # MACs not counted: the method's epochs
    assert online_kd_epochs(10, ONLINE_REF_MACS // 2) == 20  # a factor of the method's own epochs
    # the least factor (a BN-less teacher's): costlier teachers get it, cheaper ones keep the MAC rule's
    assert online_kd_epochs(30, 4 * ONLINE_REF_MACS, 2.0) == 60
    assert online_kd_epochs(30, round(ONLINE_REF_MACS / 1.5), 2.0) == 60
    assert online_kd_epochs(30, 233_640, 2.0) == 90
    assert online_kd_epochs(30, 0, 2.0) == 60
    assert online_kd_epochs(30, ONLINE_REF_MACS, 5.0) == 90  # never above the cap


def test_reference_is_resnet8_digits(bn_teacher, plain_teacher):
    assert conv_linear_macs(bn_teacher.model, tuple(bn_teacher.card.input_shape)) == ONLINE_REF_MACS
    assert conv_linear_macs(plain_teacher.model, tuple(plain_teacher.card.input_shape)) == 233_640


@pytest.mark.parametrize("method", METHODS)
def test_plan_gives_cheap_teachers_more_epochs_and_the_user_wins(method, plain_teacher, bn_teacher):
    from datafree.plan import kd_settings, plan

    cheap = plan(plain_teacher, method=method, seed=0)
    ref = plan(bn_teacher, method=method, seed=0)
    assert ref.kd.epochs == 30  # resnet8_digits: the measured 30, unchanged
    assert cheap.kd.epochs == 90  # lenet5_digits: 13x cheaper, capped at 3x
    # the generator's lr schedule spans the longer KD stage
    assert cheap.synthesizer.config.iterations == 90 * cheap.kd.rounds * cheap.kd.g_steps
    assert ref.synthesizer.config.iterations == 30 * ref.kd.rounds * ref.kd.g_steps
    assert plan(plain_teacher, method=method, kd={"epochs": 30}, seed=0).kd.epochs == 30  # --epochs wins
    assert kd_settings(method, teacher=plain_teacher.model).epochs == 30  # no input shape: no MAC count
    # only the epochs change: every other KD setting is the method's
    rest = {k: v for k, v in vars(cheap.kd).items() if k != "epochs"}
    same = plan(plain_teacher, method=method, kd={"epochs": 90}, seed=0)
    assert rest == {k: v for k, v in vars(same.kd).items() if k != "epochs"}
    assert same.synthesizer.config == cheap.synthesizer.config


def test_costlier_bn_less_teacher_gets_twice_zskts_and_dfads_epochs_where_the_budget_has_room(plain_teacher):
    """A BN-less teacher costlier than the reference (as plain_32: 10.8M MACs): ZSKT and DFAD get 60 epochs.

    ``ONLINE_BN_LESS_MIN_EPOCH_FACTOR`` (session 35); a BN teacher of the same cost keeps the method's 30,
    and where 60 epochs do not fit the compute budget the extra epochs are its first cut (back to 30).
    """
    import dataclasses

    from torch import nn

    from datafree.cards import LoadedModel
    from datafree.plan import plan
    from datafree.rules import ONLINE_BN_LESS_MIN_EPOCH_FACTOR

    torch.manual_seed(0)

    def teacher(bn: bool) -> LoadedModel:
        norm = (lambda: nn.BatchNorm2d(64)) if bn else nn.Identity
        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), norm(), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), norm(), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip
        card = dataclasses.replace(plain_teacher.card, input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3)
        return LoadedModel(model.eval(), card)

    big, big_bn = teacher(False), teacher(True)
    assert conv_linear_macs(big.model, (3, 32, 32)) > ONLINE_REF_MACS
    assert ONLINE_BN_LESS_MIN_EPOCH_FACTOR == 2.0
    for method in ("zskt", "dfad"):
        assert plan(big, method=method, seed=0, budget_s=math.inf).kd.epochs == 60
        assert plan(big_bn, method=method, seed=0, budget_s=math.inf).kd.epochs == 30
        # this teacher's 60 epochs do not fit the default budget: the extra epochs are the first cut
        tight = plan(big, method=method, seed=0)
        assert tight.kd.epochs == 30 and tight.info["compute_budget"]["notches"][0] == "epochs 60 -> 30"
    # DAFL keeps the MAC rule's epochs (not measured better at 60 on plain_32)
    assert plan(big, method="dafl", seed=0, budget_s=math.inf).kd.epochs == 30


@pytest.mark.parametrize("method", METHODS)
def test_bench_online_ablation_runs_the_cli_defaults(method, plain_teacher):
    """bench/online_ablation.py without --set/--kd plans what ``datafree distill --method M`` plans.

    The bench calls ``train_online(..., {}, seed=S)``; the command passes its seed as a KD setting.
    """
    import dataclasses

    import cli
    from datafree.plan import DEFAULT_NUM_IMAGES, plan

    for seed in (0, 1):
        kd, options = cli._kd_settings({}, seed), cli._parse_set(())
        via_cli = plan(plain_teacher, data=None, method=method, pool=False, kd=kd, method_options=options,
                       num_images=DEFAULT_NUM_IMAGES, seed=seed)  # fmt: skip
        via_bench = plan(plain_teacher, method=method, kd={}, method_options={}, seed=seed)
        assert dataclasses.asdict(via_cli.kd) == dataclasses.asdict(via_bench.kd)
        assert via_cli.synthesizer.config == via_bench.synthesizer.config
        assert via_bench.kd.epochs == 90 and via_bench.kd.seed == seed
