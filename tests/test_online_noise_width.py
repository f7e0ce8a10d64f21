"""The online backends' noise share of the student's batches and their automatic generator width."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from datafree.errors import UserInputError
from datafree.sources import SynthesizerSource
from generators import create_synthesizer
from generators.networks import make_generator
from generators.online import auto_generator_width, generator_macs

ONLINE = ["dafl", "zskt", "dfad"]

torch.set_num_threads(1)


@pytest.mark.parametrize("method", ONLINE)
def test_noise_share_is_automatic_on_bn_less_teachers_only(method, plain_teacher, bn_teacher):
    plain = create_synthesizer(method, plain_teacher.model, plain_teacher.card, batch_size=8)
    assert plain.config.noise_fraction == -1.0 and plain.noise_share == plain.auto_noise
    assert plain.auto_noise == (0.0 if method == "dafl" else 0.25)  # DAFL: its own entropy term
    assert create_synthesizer(method, bn_teacher.model, bn_teacher.card, batch_size=8).noise_share == 0.0
    assert (
        create_synthesizer(method, bn_teacher.model, bn_teacher.card, noise_fraction=0.5).noise_share == 0.5
    )
    assert (
        create_synthesizer(method, plain_teacher.model, plain_teacher.card, noise_fraction=0.0).noise_share
        == 0.0
    )
    assert (
        create_synthesizer(method, plain_teacher.model, plain_teacher.card, noise_fraction=0.3).noise_share
        == 0.3
    )
    for bad in (-0.5, 1.0, 2.0):
        with pytest.raises(UserInputError, match="noise_fraction"):
            create_synthesizer(method, plain_teacher.model, plain_teacher.card, noise_fraction=bad)


def test_training_batch_mixes_generated_images_and_clamped_noise(plain_teacher):
    synth = create_synthesizer(
        "dafl", plain_teacher.model, plain_teacher.card, batch_size=16, noise_fraction=0.25, seed=2
    )
    x = synth.training_batch(16)
    assert x.shape == (16, 1, 16, 16) and torch.isfinite(x).all()
    lo, hi = synth.normalizer.bounds(x)
    assert (x >= lo - 1e-6).all() and (x <= hi + 1e-6).all()
    # the first 12 are G(z) for the backend's next latents, the last 4 noise from the same stream
    again = create_synthesizer(
        "dafl", plain_teacher.model, plain_teacher.card, batch_size=16, noise_fraction=0.25, seed=2
    )
    torch.testing.assert_close(x[:12], again.sample(12).images)
    noise = torch.randn((4, 1, 16, 16), generator=again.rng)
    torch.testing.assert_close(x[12:], torch.max(torch.min(noise, hi), lo))
    # without noise the KD stage's source draws plain samples
    none = create_synthesizer(
        "dafl", plain_teacher.model, plain_teacher.card, batch_size=16, noise_fraction=0.0, seed=2
    )
    ref = create_synthesizer(
        "dafl", plain_teacher.model, plain_teacher.card, batch_size=16, noise_fraction=0.0, seed=2
    )
    torch.testing.assert_close(SynthesizerSource(none).next_batch(16), ref.sample(16).images)
    mixed = create_synthesizer("dafl", plain_teacher.model, plain_teacher.card, noise_fraction=0.25, seed=2)
    torch.testing.assert_close(SynthesizerSource(mixed).next_batch(16), x)


def test_zskt_noise_keeps_the_generators_z_batch(plain_teacher):
    synth = create_synthesizer(
        "zskt", plain_teacher.model, plain_teacher.card, batch_size=8, noise_fraction=0.5, share_z=1
    )
    synth.step(torch.nn.Sequential(nn.Flatten(), nn.Linear(256, 10)))
    x = synth.training_batch(8)
    torch.testing.assert_close(x[:4], synth.generate(synth.z[:4]))


def test_generator_macs_counts_the_network():
    for shape in [(1, 16, 16), (3, 32, 32), (3, 28, 20)]:
        g = make_generator(100, shape, 16, "tanh_bn", 0)
        total = 0

        def hook(m: nn.Module, inp: object, out: torch.Tensor) -> None:
            nonlocal total
            if isinstance(m, nn.Conv2d):
                total += out[0].numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels
            elif isinstance(m, nn.Linear):
                total += m.in_features * m.out_features

        for m in g.modules():
            m.register_forward_hook(hook)
        with torch.no_grad():
            g(torch.randn(2, 100))
        if shape[1] % 4 == 0 and shape[2] % 4 == 0:  # no final resize
            assert total == generator_macs(100, shape, 16)


def test_generator_width_is_capped_by_the_teachers_cost(plain_teacher, bn_teacher):
    # 16 px: the size rule gives 16 already
    assert auto_generator_width(plain_teacher.model, (1, 16, 16)) == 16
    assert auto_generator_width(bn_teacher.model, (1, 16, 16)) == 16

    def conv_net(width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, 10))  # fmt: skip

    big, small = conv_net(512), conv_net(8)  # 14M and 0.2M MACs at 32 px
    assert generator_macs(100, (3, 32, 32), 64) > 14e6 * 7
    assert auto_generator_width(big, (3, 32, 32)) == 16  # 64 and 32 cost more than the teacher
    assert auto_generator_width(small, (3, 32, 32)) == 16  # never below 16
    huge = conv_net(8192)  # 226M MACs: the papers' width 64 stays
    assert auto_generator_width(huge, (3, 32, 32)) == 64
    card = dataclasses.replace(plain_teacher.card, input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3)
    synth = create_synthesizer("dafl", huge, card)
    assert synth.generator.body[2].out_channels == 128  # 2 * width 64
    explicit = create_synthesizer("dafl", plain_teacher.model, plain_teacher.card, generator_width=24)
    assert explicit.generator.body[2].out_channels == 48


def test_zskt_shares_the_z_batch_on_batchnorm_teachers_only(plain_teacher, bn_teacher):
    assert create_synthesizer("zskt", bn_teacher.model, bn_teacher.card, batch_size=8).reuse_z  # the paper's
    fresh = create_synthesizer(
        "zskt", plain_teacher.model, plain_teacher.card, batch_size=8, noise_fraction=0.0
    )
    assert not fresh.reuse_z
    student = torch.nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    fresh.step(student)
    assert not torch.equal(fresh.sample(8).images, fresh.sample(8).images)  # fresh latents per batch
    shared = create_synthesizer(
        "zskt", plain_teacher.model, plain_teacher.card, batch_size=8, share_z=1, noise_fraction=0.0
    )
    shared.step(student)
    assert shared.reuse_z and torch.equal(shared.sample(8).images, shared.sample(8).images)
    with pytest.raises(UserInputError, match="share_z"):
        create_synthesizer("zskt", plain_teacher.model, plain_teacher.card, share_z=2)


@pytest.mark.parametrize(("method", "bn_less_lr", "bn_lr"), [("dafl", 1e-2, 5e-3), ("zskt", 5e-3, 2e-3),
                                                             ("dfad", 5e-3, 2e-3)])  # fmt: skip
def test_kd_defaults_for_bn_less_teachers(method, bn_less_lr, bn_lr, plain_teacher, bn_teacher):
    from datafree.plan import kd_settings, plan

    assert plan(plain_teacher, method=method).kd.lr == bn_less_lr
    assert plan(bn_teacher, method=method).kd.lr == bn_lr  # BN teachers keep the settings measured on them
    assert kd_settings(method).lr == bn_lr  # no teacher: kd_defaults
    assert kd_settings(method, teacher=plain_teacher.model).lr == bn_less_lr
    assert plan(plain_teacher, method=method, kd={"lr": 3e-3}).kd.lr == 3e-3  # the user's value wins
