"""Contract tests of the online generator backends (DAFL, ZSKT, DFAD) and their loss terms."""

from __future__ import annotations

import io
import math

import pytest
import torch

from datafree.cards import load_model
from datafree.errors import UserInputError
from datafree.generator_losses import (
    activation_loss,
    attention_map,
    attention_transfer_loss,
    class_coverage_loss,
    information_entropy_loss,
    logit_l1,
    one_hot_loss,
)
from datafree.models import create_model
from datafree.utils import torch_generator
from generators import create_synthesizer, list_methods, method_class
from generators.networks import DCGANGenerator
from generators.zskt import AttentionKD, matched_blocks, resolution_blocks, stages_aligned
from tests.bn_cases import plain_32

ONLINE = ["dafl", "zskt", "dfad"]

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet5_digits")


@pytest.fixture(scope="module")
def resnet():
    return load_model("resnet8_digits")


def _student(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("lenet5_half", 10, 1)


def test_registered_as_online():
    for name in ONLINE:
        assert name in list_methods()
        cls = method_class(name)
        assert cls.online and not cls.requires_batchnorm
    assert method_class("zskt").needs_student and method_class("dfad").needs_student
    assert not method_class("dafl").needs_student


@pytest.mark.parametrize("method", ONLINE)
def test_sample_shape_finite_valid_range(method, lenet):
    synth = create_synthesizer(method, lenet.model, lenet.card, batch_size=16)
    synth.step(_student())
    x = synth.sample(8, torch_generator(1)).images
    assert x.shape == (8, 1, 16, 16)
    assert torch.isfinite(x).all()
    pixels = synth.normalizer.inverse(x)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert x.std() > 0.1  # not a constant image


@pytest.mark.parametrize("method", ONLINE)
def test_same_seed_same_images(method, lenet):
    a = create_synthesizer(method, lenet.model, lenet.card, seed=3, batch_size=16)
    b = create_synthesizer(method, lenet.model, lenet.card, seed=3, batch_size=16)
    c = create_synthesizer(method, lenet.model, lenet.card, seed=4, batch_size=16)
    xa = a.sample(8, torch_generator(5)).images
    assert torch.equal(xa, b.sample(8, torch_generator(5)).images)
    assert not torch.equal(xa, c.sample(8, torch_generator(5)).images)
    assert not torch.equal(xa, a.sample(8, torch_generator(6)).images)
    # training is deterministic too
    sa, sb = _student(), _student()
    for _ in range(2):
        a.step(sa)
        b.step(sb)
    assert torch.equal(a.sample(4, torch_generator(0)).images, b.sample(4, torch_generator(0)).images)


@pytest.mark.parametrize("method", ONLINE)
def test_steps_lower_generator_objective(method, lenet):
    synth = create_synthesizer(method, lenet.model, lenet.card, seed=0, batch_size=64, lr_schedule="constant")
    student = _student().eval()  # fixed student: the generator's objective is then well defined
    z = synth.draw_z(64, torch_generator(123))
    before = synth.generator_loss(z, student)[0].item()
    for _ in range(8):
        synth.step(student)
    after = synth.generator_loss(z, student)[0].item()
    assert after < before, (before, after)


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_adversarial_step_leaves_student_alone_and_needs_one(method, lenet):
    synth = create_synthesizer(method, lenet.model, lenet.card, batch_size=8)
    student = _student()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    logs = synth.step(student)
    assert logs["adversarial"] < 0  # -discrepancy with the real student: never ~0 as teacher-vs-teacher
    assert all(p.grad is None for p in student.parameters())
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(UserInputError, match="needs a student"):
        synth.step(None)


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_adversarial_step_keeps_the_students_bn_running_statistics(method, resnet):
    synth = create_synthesizer(method, resnet.model, resnet.card, batch_size=8)
    student = create_model("resnet8_half", 10, 1).train()
    before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    synth.step(student)
    after = student.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(m.momentum == 0.1 for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bn_term_only_for_batchnorm_teachers(lenet, resnet):
    assert "bn" not in create_synthesizer("dafl", lenet.model, lenet.card, batch_size=8).step()
    assert "bn" in create_synthesizer("dafl", resnet.model, resnet.card, batch_size=8).step()
    assert (
        "bn" not in create_synthesizer("dafl", resnet.model, resnet.card, batch_size=8, bn_weight=0.0).step()
    )
    synth = create_synthesizer("dfad", resnet.model, resnet.card, bn_weight=0.5, batch_size=8)
    logs = synth.step(create_model("resnet8_half", 10, 1))
    assert "bn" in logs and torch.isfinite(logs["bn"]) and logs["bn"] > 0


@pytest.mark.parametrize("method", ONLINE)
def test_bn_max_ratio_caps_the_bn_term_for_the_whole_run(method, resnet):
    """Set at the first step from the terms' sizes, kept for later steps and across a resume; 0: off."""
    student = create_model("resnet8_half", 10, 1)

    def make(**kw):
        return create_synthesizer(method, resnet.model, resnet.card, batch_size=8, seed=3, **kw)

    off = make()
    logs = off.step(student)
    assert off.bn_scale == 1.0
    weights = {**off.objective_weights(), "adversarial": getattr(off.config, "adv_weight", 0.0)}
    size = sum(abs(weights[k] * float(v)) for k, v in logs.items() if k not in ("bn", "total"))
    ratio = float(logs["bn"]) / size  # bn_weight 1: the BN term's size against the others'
    capped = make(bn_max_ratio=ratio / 4)
    low = capped.step(student)  # the same first batch: only the BN term's weight differs
    assert capped.bn_scale == pytest.approx(0.25, rel=1e-3)
    assert float(logs["total"] - low["total"]) == pytest.approx(0.75 * float(logs["bn"]), rel=1e-3)
    within = make(bn_max_ratio=ratio * 2)
    within.step(student)
    assert within.bn_scale == 1.0
    again = make(bn_max_ratio=ratio / 4)
    again.load_state_dict(capped.state_dict())
    assert again.bn_scale == capped.bn_scale
    assert torch.equal(again.step(student)["total"], capped.step(student)["total"])
    with pytest.raises(UserInputError, match="bn_max_ratio"):
        make(bn_max_ratio=-1)


@pytest.mark.parametrize("method", ONLINE)
def test_state_dict_roundtrip_resumes_exactly(method, lenet):
    a = create_synthesizer(method, lenet.model, lenet.card, batch_size=8, seed=1)
    student = _student()
    a.step(student)
    a.sample(8)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = create_synthesizer(method, lenet.model, lenet.card, batch_size=8, seed=99)
    b.load_state_dict(state)
    assert b.steps == 1
    la, lb = a.step(student), b.step(student)
    assert torch.equal(la["total"], lb["total"])
    assert torch.equal(a.sample(8).images, b.sample(8).images)


def test_zskt_student_sees_the_generators_z_batch(lenet):
    synth = create_synthesizer("zskt", lenet.model, lenet.card, batch_size=8, share_z=1)  # auto: BN teachers
    student = _student()
    synth.step(student)
    z = synth.z.clone()
    x1 = synth.sample(8).images
    assert torch.equal(x1, synth.sample(8).images)  # n_S student steps share one z batch
    synth.step(student)  # a new round draws a new z
    assert not torch.equal(z, synth.z)


def test_generator_network_sizes():
    for shape in [(1, 16, 16), (3, 32, 32), (3, 28, 20)]:
        for head in ("tanh_bn", "bn"):
            g = DCGANGenerator(10, shape, 8, head)
            assert g(torch.randn(3, 10)).shape == (3, *shape)
    assert len(list(DCGANGenerator(10, (1, 16, 16), 8).buffers())) == 0  # batch statistics only


def test_resolution_blocks_match_resnet_stages(resnet):
    t = resnet.model
    blocks = resolution_blocks(t, (1, 16, 16))
    assert blocks == {(16, 16): t.layer1, (8, 8): t.layer2, (4, 4): t.layer3}
    s = create_model("resnet8_half", 10, 1).train()
    t_mods, s_mods = matched_blocks(t, s, (1, 16, 16))
    assert t_mods == [t.layer1, t.layer2, t.layer3] and s_mods == [s.layer1, s.layer2, s.layer3]
    assert s.training  # mode restored


def _unaligned_student():
    """A student whose only feature map (8x8) is the *middle* stage of a 16-pixel ResNet-8 or LeNet-5."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 10),
    )  # fmt: skip


def test_stages_aligned_compares_the_sets_of_resolutions(resnet):
    same = stages_aligned(resnet.model, create_model("resnet8_half", 10, 1), (1, 16, 16))
    assert same == {"aligned": True, "teacher": ["16x16", "8x8", "4x4"], "student": ["16x16", "8x8", "4x4"]}
    other = stages_aligned(resnet.model, _unaligned_student(), (1, 16, 16))
    assert other == {"aligned": False, "teacher": ["16x16", "8x8", "4x4"], "student": ["8x8"]}


def test_zskt_describe_names_the_blocks_and_whether_the_stages_differ(resnet):
    """The report's account of the attention term; the term itself is the paper's on any shared resolution."""
    from datafree.losses import kd_kl_loss

    synth = create_synthesizer("zskt", resnet.model, resnet.card, batch_size=8)
    x = synth.sample(8, torch_generator(0)).images
    objective = synth.student_objective()
    assert objective.beta == 62.5
    aligned = create_model("resnet8_half", 10, 1)
    info = objective.describe(aligned, resnet.model)
    assert info["beta"] == 62.5 and info["blocks"] == ["16x16", "8x8", "4x4"] and info["aligned"]
    assert info["rule"] == "attention transfer at beta 62.5 on the blocks at 16x16, 8x8, 4x4"
    student = _unaligned_student()
    info = objective.describe(student, resnet.model)
    assert info["beta"] == 62.5 and info["blocks"] == ["8x8"] and not info["aligned"]
    assert "the stages differ" in info["rule"] and "16x16, 8x8, 4x4, the student's 8x8" in info["rule"]
    with torch.no_grad():  # the term is still used on the one shared resolution
        kl = kd_kl_loss(student(x), resnet.model(x), 1.0)
        assert objective(student, resnet.model, x).item() > kl.item()
    off = AttentionKD((1, 16, 16), 0.0).describe(student, resnet.model)
    assert off["beta"] == 0.0 and off["blocks"] == [] and off["rule"] == "no attention transfer (at_beta=0)"
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))  # no feature map at all
    lone = AttentionKD((1, 16, 16), 62.5).describe(flat, resnet.model)
    assert lone["beta"] == 0.0 and "no feature-map resolution in common" in lone["rule"]


def test_zskt_student_objective_is_kl_plus_attention(lenet):
    synth = create_synthesizer("zskt", lenet.model, lenet.card, batch_size=8)
    objective = synth.student_objective()
    x = synth.sample(8, torch_generator(0)).images
    student = _student()
    loss = objective(student, lenet.model, x)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in student.parameters())
    objective.beta = 0.0
    with torch.no_grad():
        from datafree.losses import kd_kl_loss

        kl = kd_kl_loss(student(x), lenet.model(x), 1.0)
        assert torch.allclose(objective(student, lenet.model, x), kl)
        assert loss.item() > kl.item()  # the attention term is positive for a random student


def test_zskt_student_kl_takes_the_kd_temperature(lenet):
    """``--kd temperature`` reaches ZSKT's own student loss (it was fixed at 1 and silently ignored)."""
    from datafree.losses import kd_kl_loss
    from datafree.plan import plan

    assert plan(lenet, method="zskt").student_objective.temperature == 1.0  # the paper's, kd_defaults
    objective = plan(lenet, method="zskt", kd={"temperature": 4.0}).student_objective
    assert objective.temperature == 4.0
    synth = create_synthesizer("zskt", lenet.model, lenet.card, batch_size=8)
    x = synth.sample(8, torch_generator(0)).images
    student = _student()
    objective.beta = 0.0
    with torch.no_grad():
        expected = kd_kl_loss(student(x), lenet.model(x), 4.0)
        assert torch.allclose(objective(student, lenet.model, x), expected)
        assert not torch.allclose(expected, kd_kl_loss(student(x), lenet.model(x), 1.0))


# -- loss terms ------------------------------------------------------------------------------


def test_information_entropy_uses_natural_log():
    uniform = torch.zeros(4, 10)
    assert math.isclose(information_entropy_loss(uniform).item(), -math.log(10), rel_tol=1e-6)
    one_class = torch.zeros(4, 10)
    one_class[:, 3] = 50.0
    assert information_entropy_loss(one_class).item() > -1e-6  # ~0: no balance


def test_one_hot_activation_l1_golden():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    assert math.isclose(one_hot_loss(logits).item(), expected, rel_tol=1e-6)
    assert activation_loss(torch.tensor([[-1.0, 3.0]])).item() == -2.0
    assert logit_l1(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item() == 1.5


def test_attention_transfer():
    a = torch.randn(2, 4, 5, 5)
    assert torch.allclose(attention_map(a).norm(dim=1), torch.ones(2))
    assert attention_transfer_loss([a], [a * 3]).item() < 1e-10  # scale invariant
    b = torch.randn(2, 7, 5, 5)  # channel counts may differ
    assert attention_transfer_loss([a], [b]).item() > 0


def test_zskt_attention_weight_is_the_papers_scaled_to_the_input(lenet):
    synth = create_synthesizer("zskt", lenet.model, lenet.card, batch_size=4)
    assert tuple(lenet.card.input_shape[1:]) == (16, 16)
    assert synth.beta == 250.0 * 16 * 16 / (32 * 32) == synth.student_objective().beta
    assert (
        create_synthesizer("zskt", lenet.model, lenet.card, at_beta=250.0).student_objective().beta == 250.0
    )
    with pytest.raises(UserInputError, match="at_beta"):
        create_synthesizer("zskt", lenet.model, lenet.card, at_beta=-2.0)


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_adversarial_backends_add_class_balance_only_without_batchnorm(method, lenet, resnet):
    plain = create_synthesizer(method, lenet.model, lenet.card, batch_size=8)
    assert plain.balance_weight == 20.0 and not plain.use_bn_term
    images = plain.sample(8).images
    terms = plain.objective(images, _student())
    assert set(terms) == {"adversarial", "balance", "confidence"}
    torch.testing.assert_close(terms["balance"][1], class_coverage_loss(lenet.model(images)))
    assert create_synthesizer(method, resnet.model, resnet.card, batch_size=8).balance_weight == 0.0
    assert "balance" not in create_synthesizer(method, lenet.model, lenet.card, balance=0.0).objective(
        images, _student()
    )
    with pytest.raises(UserInputError, match="balance"):
        create_synthesizer(method, lenet.model, lenet.card, balance=-2.0)


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_adversarial_confidence_term_is_dafls_one_hot_loss_on_bn_less_teachers(method, lenet, resnet):
    """``confidence``: DAFL's one-hot loss on the teacher's answers joins the generator's loss.

    Automatic (-1, the default): weight 3 on a teacher without BatchNorm, none on one with it.
    """
    synth = create_synthesizer(method, lenet.model, lenet.card, batch_size=8)
    assert synth.config.confidence == -1.0 and synth.confidence_weight == 3.0
    images = synth.sample(8).images
    weight, value = synth.objective(images, _student())["confidence"]
    assert weight == 3.0
    torch.testing.assert_close(value, one_hot_loss(lenet.model(images)))
    synth.step(_student())  # the generator trains with it
    off = create_synthesizer(method, lenet.model, lenet.card, batch_size=8, confidence=0.0)
    assert "confidence" not in off.objective(images, _student())
    bn = create_synthesizer(method, resnet.model, resnet.card, batch_size=8)
    assert bn.confidence_weight == 0.0
    # a BN teacher with its BN term off has no prior either, as for the class-balance term
    assert create_synthesizer(method, resnet.model, resnet.card, bn_weight=0.0).confidence_weight == 3.0
    assert create_synthesizer(method, resnet.model, resnet.card, confidence=0.5).confidence_weight == 0.5
    with pytest.raises(UserInputError, match="confidence"):
        create_synthesizer(method, lenet.model, lenet.card, confidence=-2.0)


def test_dafls_information_entropy_term_takes_the_coverage_form_without_a_bn_term(lenet, resnet):
    """``ie_loss``: "auto" is the coverage form on a BN-less teacher, the paper's on a BN one."""
    p32 = plain_32(lenet)  # a BN-less teacher at 3x32x32, and the 16 px LeNet
    for net, card in ((p32.model, p32.card), (lenet.model, lenet.card)):
        synth = create_synthesizer("dafl", net, card, batch_size=8)
        assert synth.config.ie_loss == "auto" and synth.ie_form == "coverage"
        images = synth.sample(8).images
        weight, value = synth.objective(images, None)["info_entropy"]
        assert weight == 5.0
        torch.testing.assert_close(value, class_coverage_loss(net(images)))
        synth.step()  # the generator trains with it
        paper = create_synthesizer("dafl", net, card, batch_size=8, ie_loss="entropy")
        torch.testing.assert_close(
            paper.objective(images, None)["info_entropy"][1], information_entropy_loss(net(images))
        )
    bn = create_synthesizer("dafl", resnet.model, resnet.card, batch_size=8)
    assert bn.ie_form == "entropy"
    x = bn.sample(8).images
    torch.testing.assert_close(
        bn.objective(x, None)["info_entropy"][1], information_entropy_loss(resnet.model(x))
    )
    # a BN teacher with its BN term off has no prior of the data either: the BN-less form
    assert create_synthesizer("dafl", resnet.model, resnet.card, bn_weight=0.0).ie_form == "coverage"
    assert create_synthesizer("dafl", resnet.model, resnet.card, ie_loss="coverage").ie_form == "coverage"
    with pytest.raises(UserInputError, match="ie_loss"):
        create_synthesizer("dafl", lenet.model, lenet.card, ie_loss="log10")


def test_dafl_has_its_own_class_balance_term():
    assert method_class("dafl").auto_balance == 0.0  # its information-entropy term is ie_weight


@pytest.mark.parametrize("method", ["zskt", "dfad"])
def test_student_eval_runs_the_adversarial_student_on_running_statistics(method, lenet):
    """``student_eval``: the student's BN normalises with running statistics in the generator's loss.

    The running statistics stay as they were either way (``frozen_bn_statistics``), and the student is
    handed back in the mode it came in.
    """
    modes: list[bool] = []

    def run(**options):
        torch.manual_seed(0)
        student = create_model("lenet5_half_bn", 10, 1).train()
        bn = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
        handle = student.register_forward_pre_hook(lambda m, args: modes.append(m.training))
        before = bn.running_mean.clone()
        synth = create_synthesizer(method, lenet.model, lenet.card, batch_size=8, **options)
        synth.step(student)
        handle.remove()
        assert student.training and torch.equal(before, bn.running_mean)

    run(student_eval=True)
    assert modes == [False]
    modes.clear()
    run()  # the papers' default: the student's train mode, batch statistics
    assert modes == [True]
