"""CMI and NAYER: what each adds over the shared contract, and their CLI paths.

Memory bank, views, noisy layer, embeddings; synthesize / compress / distill --pool / resume.
"""

from __future__ import annotations

import json

import pytest
import torch

from datafree.errors import UserInputError
from datafree.models import create_model
from generators import create_synthesizer, method_class
from generators.cmi import MemoryBank, random_crop_view, random_resized_crop_view
from tests.conftest import COMPRESS_TINY, SYNTH_TINY


def _round(synth, n, seed, student=None):
    synth.reset(n, torch.Generator().manual_seed(seed))
    for _ in range(synth.config.iterations):
        synth.step(student)
    return synth.sample()


def test_views_keep_shape_range_and_follow_the_seed():
    x = torch.rand(6, 1, 16, 16)
    for view in (
        lambda g: random_crop_view(x, 2, True, g),
        lambda g: random_resized_crop_view(x, 0.25, True, g),
    ):
        a, b = view(torch.Generator().manual_seed(1)), view(torch.Generator().manual_seed(1))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, view(torch.Generator().manual_seed(2)))
    # no padding, no flip: the crop view is the identity; a full-area crop of aspect 1 too
    torch.testing.assert_close(random_crop_view(x, 0), x)


def test_memory_bank_is_a_ring_and_samples_stored_rows():
    bank = MemoryBank(4, 2)
    assert bank.sample(3).shape == (0, 2)
    bank.add(torch.arange(6.0).view(3, 2))
    bank.add(torch.arange(6.0, 12.0).view(3, 2))  # 6 rows into 4: the two oldest are overwritten
    assert bank.count == 4 and bank.ptr == 2
    rows = {tuple(r.tolist()) for r in bank.sample(10, torch.Generator().manual_seed(0))}
    assert rows == {(4.0, 5.0), (6.0, 7.0), (8.0, 9.0), (10.0, 11.0)}
    clone = MemoryBank(4, 2)
    clone.load_state_dict(bank.state_dict())
    torch.testing.assert_close(clone.data, bank.data)


def test_cmi_rounds_fill_the_bank_and_use_it_as_negatives(bn_teacher):
    synth = create_synthesizer(
        "cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, negatives=4
    )
    a = _round(synth, 8, 0)
    assert synth.rounds == 1 and synth.bank.count == 8
    assert synth.bank.data.shape[1] % 2 == 0  # (local, global) features per image
    b = _round(synth, 8, 1)
    assert synth.bank.count == 16 and not torch.equal(a.images, b.images)
    # the contrastive term now also ranks 4 cached rows: resuming mid-round gives the same step
    synth.reset(8, torch.Generator().manual_seed(2))
    synth.step()
    clone = create_synthesizer(
        "cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, negatives=4
    )
    clone.load_state_dict(synth.state_dict())
    assert clone.bank.count == 16
    torch.testing.assert_close(clone.step()["total"], synth.step()["total"])


def test_cmi_generator_is_reinitialised_every_round(bn_teacher):
    synth = create_synthesizer("cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2)
    _round(synth, 8, 0)
    trained = [p.detach().clone() for p in synth.net.parameters()]
    synth.reset(8, torch.Generator().manual_seed(0))
    fresh = [p.detach().clone() for p in synth.net.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(trained, fresh, strict=True))
    synth2 = create_synthesizer("cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2)
    synth2.reset(8, torch.Generator().manual_seed(0))
    for a, b in zip(fresh, synth2.net.parameters(), strict=True):  # a round's start depends on its seed only
        torch.testing.assert_close(a, b.detach())


def test_cmi_adversarial_term_needs_a_student(bn_teacher):
    synth = create_synthesizer(
        "cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, adv_weight=0.5
    )
    synth.reset(8, torch.Generator().manual_seed(0))
    with pytest.raises(UserInputError, match="student"):
        synth.step()
    logs = synth.step(create_model("resnet8_quarter", 10, 1))
    assert "adv" in logs and torch.isfinite(logs["adv"])


def test_nayer_noisy_layer_is_redrawn_each_round_and_the_body_persists(bn_teacher):
    synth = create_synthesizer("nayer", bn_teacher.model, bn_teacher.card, batch_size=20, iterations=2)
    _round(synth, 20, 0)
    assert synth.net.noisy_weight.shape[0] == 2  # 20 images in groups of the 10 classes
    body = [p.detach().clone() for p in synth.net.persistent_parameters()]
    noisy = synth.net.noisy_weight.detach().clone()
    synth.reset(20, torch.Generator().manual_seed(1))
    assert not torch.equal(noisy, synth.net.noisy_weight)
    for a, b in zip(body, synth.net.persistent_parameters(), strict=True):
        torch.testing.assert_close(a, b.detach())
    assert synth.targets.tolist() == list(range(10)) * 2  # every group holds one image per class


def test_nayer_handles_a_batch_of_one(bn_teacher):
    synth = create_synthesizer("nayer", bn_teacher.model, bn_teacher.card, iterations=2)
    assert _round(synth, 1, 0).images.shape == (1, 1, 16, 16)


def test_nayer_images_differ_within_a_class(bn_teacher):
    synth = create_synthesizer("nayer", bn_teacher.model, bn_teacher.card, batch_size=30, iterations=2)
    x = _round(synth, 30, 0).images
    same_class = x[[0, 10, 20]].flatten(1)
    assert torch.cdist(same_class, same_class).triu(1).sum() > 0


@pytest.mark.parametrize("embedding", ["random", "learned", "onehot"])
def test_nayer_embeddings(bn_teacher, embedding):
    synth = create_synthesizer(
        "nayer", bn_teacher.model, bn_teacher.card, batch_size=10, iterations=2, embedding=embedding
    )
    before = synth.net.embeddings.detach().clone()
    batch = _round(synth, 10, 0)
    assert torch.isfinite(batch.images).all()
    learned = embedding == "learned"
    assert (not torch.equal(before, synth.net.embeddings.detach())) == learned


@pytest.mark.parametrize(
    ("name", "opts", "match"),
    [
        ("nayer", {"embedding": "clip"}, "embedding must be one of"),
        ("nayer", {"le_size": 4, "embedding": "onehot"}, "le_size >= the 10 classes"),
        ("nayer", {"group_size": -1}, "group_size must be >= 0"),
        ("cmi", {"cr_temperature": 0.0}, "cr_temperature must be > 0"),
        ("cmi", {"local_min_area": 1.5}, "local_min_area"),
        ("cmi", {"negatives": -1}, "negatives must be >= 0"),
        ("cmi", {"feature_stride": -1}, "feature_stride must be >= 0"),
        ("nayer", {"le_emb_size": 0}, "le_emb_size must be > 0"),
        ("fast", {"ngf": 0}, "ngf must be > 0"),
        # Adam's betas, for every backend that has them (torch would raise a bare ValueError)
        ("fast", {"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
        ("nayer", {"beta2": -0.1}, r"beta2 must be in \[0, 1\)"),
        ("deepinversion", {"beta2": 1.5}, r"beta2 must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_user_errors(bn_teacher, name, opts, match):
    with pytest.raises(UserInputError, match=match):
        create_synthesizer(name, bn_teacher.model, bn_teacher.card, **opts)


@pytest.mark.parametrize("name", ["cmi", "nayer", "fast"])
def test_the_pool_passes_the_student_exactly_when_the_adversarial_term_is_on(bn_teacher, name):
    from datafree.sources import PoolSource

    for adv in (0.0, 0.5):
        synth = create_synthesizer(name, bn_teacher.model, bn_teacher.card, batch_size=4, adv_weight=adv)
        assert PoolSource(synth).needs_student is (adv > 0)


def test_both_refuse_a_teacher_without_batchnorm(plain_teacher):
    for name in ("cmi", "nayer"):
        assert method_class(name).requires_batchnorm
        with pytest.raises(UserInputError, match="no BatchNorm"):
            create_synthesizer(name, plain_teacher.model, plain_teacher.card)


def test_cli_synthesize_compress_and_pool_distill(run, tmp_path):
    from safetensors.torch import load_file

    r = run("synthesize", "--method", "cmi", *SYNTH_TINY, "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    r = run("compress", "--method", "nayer", *COMPRESS_TINY, "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "report.json").read_text())["method"] == "nayer"
    args = ["distill", "--method", "nayer", "--pool", "--student", "resnet8_quarter", "--epochs", "2",
            "--steps-per-epoch", "20", "--kd-batch-size", "16", "--set", "iterations=1", "-q",
            "--threads", "1"]  # fmt: skip
    r = run(*args, "-o", tmp_path / "p")
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=True)
    assert state["source"]["images"].shape[0] == 2 * method_class("nayer").pool_batch_size
    (tmp_path / "p" / "model.json").unlink()  # as if killed after the last checkpoint: same student
    before = load_file(tmp_path / "p" / "model.safetensors")
    assert run(*args, "-o", tmp_path / "p").exit_code == 0
    after = load_file(tmp_path / "p" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pool_options_apply_to_the_pool_loop_only_and_set_wins(bn_teacher, monkeypatch):
    from datafree.plan import plan

    cls = method_class("nayer")
    monkeypatch.setattr(cls, "pool_options", {"iterations": 3})
    default = cls.Config().iterations
    assert default != 3
    assert plan(bn_teacher, method="nayer", pool=True).synthesizer.config.iterations == 3
    assert plan(bn_teacher, method="nayer").synthesizer.config.iterations == default
    given = plan(bn_teacher, method="nayer", pool=True, method_options={"iterations": "5"})
    assert given.synthesizer.config.iterations == 5


def test_offline_kd_defaults_apply_to_a_written_dataset_not_the_pool_and_the_user_wins(monkeypatch):
    from datafree.plan import kd_settings
    from datafree.rules import kd_budget

    cls = method_class("cmi")
    monkeypatch.setattr(cls, "kd_defaults", {"temperature": 7.0})
    monkeypatch.setattr(cls, "pool_kd", {"kd_steps": 40})
    dataset = kd_settings("cmi", num_images=1024)
    assert dataset.temperature == 7.0 and dataset.steps_per_epoch == kd_budget(1024)
    assert kd_settings("cmi", pool=True).temperature != 7.0
    assert kd_settings("cmi", {"temperature": 3.0}, num_images=1024).temperature == 3.0


def test_nayer_bn_momentum_blends_the_ema_of_earlier_rounds_and_resumes(bn_teacher):
    synth = create_synthesizer(
        "nayer", bn_teacher.model, bn_teacher.card, batch_size=10, iterations=2, bn_momentum=0.9
    )
    assert synth.bn_ema.average is None
    _round(synth, 10, 0)
    first = [(m.clone(), v.clone()) for m, v in synth.bn_ema.average]
    means = [torch.ones_like(m) for m, _ in first]
    blended, _ = synth.bn_ema.blend(means, [v for _, v in first])
    torch.testing.assert_close(blended[0], 0.1 * means[0] + 0.9 * first[0][0])
    _round(synth, 10, 1)  # the EMA moves by (1 - m) towards the new round's statistics
    assert not torch.equal(first[0][0], synth.bn_ema.average[0][0])
    state = synth.state_dict()
    fresh = create_synthesizer(
        "nayer", bn_teacher.model, bn_teacher.card, batch_size=10, iterations=2, bn_momentum=0.9
    )
    fresh.load_state_dict(state)
    for (a, b), (c, d) in zip(synth.bn_ema.average, fresh.bn_ema.average, strict=True):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, d)
    with pytest.raises(UserInputError, match="bn_momentum"):
        create_synthesizer("nayer", bn_teacher.model, bn_teacher.card, bn_momentum=1.0)
    off = create_synthesizer("nayer", bn_teacher.model, bn_teacher.card, batch_size=10, iterations=2)
    _round(off, 10, 0)
    assert off.bn_ema.average is None


def test_cmi_contrastive_layers_rule_keeps_every_layer_unless_the_head_outgrows_the_teacher():
    from torch import nn

    from generators.cmi import contrastive_layers

    layers = [nn.BatchNorm2d(c) for c in (16, 32, 64, 128, 256, 512)]  # 1008 values in all
    # a cheap head next to the teacher's passes: every layer (the reference's choice)
    assert contrastive_layers(layers, 10**9, 256, 1024, 128) == (layers, 1)
    # rows 2 x (256 + 1024) = 2560; budget 2 x 256 x macs; every 2nd layer: 32 + 128 + 512 = 672 values
    need = lambda d: 2560 * (d * d + d * 128) / (2 * 256)  # noqa: E731
    chosen, stride = contrastive_layers(layers, int(need(672)), 256, 1024, 128)
    assert stride == 2 and chosen == layers[1::2]
    chosen, stride = contrastive_layers(layers, int(need(672)) - 1, 256, 1024, 128)
    assert stride == 3 and chosen == [layers[2], layers[5]]
    # a given stride wins; unknown MACs: every layer
    assert contrastive_layers(layers, 1, 256, 1024, 128, stride=4) == ([layers[3]], 4)
    assert contrastive_layers(layers, 0, 256, 1024, 128)[1] == 1


def test_cmi_features_follow_the_stride_and_resnet8_digits_keeps_every_layer(bn_teacher):
    from datafree.cards import load_model

    lm = load_model("resnet8_digits")
    synth = create_synthesizer("cmi", lm.model, lm.card)
    assert synth.feature_stride == 1 and synth.feature_layers == synth.bn_layers  # the measured setting
    synth = create_synthesizer(
        "cmi", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, negatives=4, feature_stride=2
    )
    dim = sum(m.num_features for m in synth.bn_layers[1::2])
    assert synth.bank.data.shape[1] == 2 * dim
    _round(synth, 8, 0)
    assert synth.bank.count == 8


def test_nayer_bn_ce_balance_is_fixed_at_the_first_step_and_resumes(bn_teacher):
    def make(**kw):
        card = bn_teacher.card
        return create_synthesizer("nayer", bn_teacher.model, card, batch_size=10, iterations=2, **kw)

    synth = make(bn_ce_max_ratio=1e-3)  # any real BN term is over 1e-3 x CE: scaled down
    synth.reset(10, torch.Generator().manual_seed(0))
    logs = synth.step()
    ratio = float(logs["bn"]) / float(logs["oh"])
    assert synth.bn_scale == pytest.approx(1e-3 / ratio, rel=1e-4)
    torch.testing.assert_close(logs["total"], synth.bn_scale * logs["bn"] + logs["oh"])
    first = synth.bn_scale
    _round(synth, 10, 1)  # later rounds keep the scale of the first step
    assert synth.bn_scale == first
    fresh = make(bn_ce_max_ratio=1e-3)
    fresh.load_state_dict(synth.state_dict())
    assert fresh.bn_scale == first
    for off in (make(bn_ce_max_ratio=0), make(bn_ce_max_ratio=1e9)):  # disabled / under the ratio
        _round(off, 10, 0)
        assert off.bn_scale == 1.0
    with pytest.raises(UserInputError, match="bn_ce_max_ratio"):
        make(bn_ce_max_ratio=-1)


def test_cmi_bn_ce_balance_is_set_at_each_rounds_first_step_and_resumes(bn_teacher):
    def make(**kw):
        card, model = bn_teacher.card, bn_teacher.model
        return create_synthesizer("cmi", model, card, batch_size=10, iterations=2, negatives=4, **kw)

    synth = make(bn_ce_max_ratio=1e-3)  # any real BN term is over 1e-3 x CE: scaled down
    synth.reset(10, torch.Generator().manual_seed(0))
    logs = synth.step()
    ratio = float(logs["bn"]) / float(logs["oh"])
    assert synth.bn_scale == pytest.approx(1e-3 / ratio, rel=1e-4)
    weights = synth.config.cr_weight
    torch.testing.assert_close(logs["total"], synth.bn_scale * logs["bn"] + logs["oh"] + weights * logs["cr"])
    first = synth.bn_scale
    fresh = make(bn_ce_max_ratio=1e-3)  # mid-round resume keeps the round's scale
    fresh.load_state_dict(synth.state_dict())
    assert fresh.bn_scale == first and fresh.iteration == 1
    # a new round (fresh generator, new z) measures its own first step again
    synth.reset(10, torch.Generator().manual_seed(1))
    logs = synth.step()
    assert synth.bn_scale == pytest.approx(1e-3 * float(logs["oh"]) / float(logs["bn"]), rel=1e-4)
    assert synth.bn_scale != first
    for off in (make(bn_ce_max_ratio=0), make(bn_ce_max_ratio=1e9)):  # disabled / under the ratio
        _round(off, 10, 0)
        assert off.bn_scale == 1.0
    with pytest.raises(UserInputError, match="bn_ce_max_ratio"):
        make(bn_ce_max_ratio=-1)
