"""The training data's per-channel mean recovered from a BN teacher, and the online generators' centring."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree.data.digits import digits_split
from datafree.errors import UserInputError
from datafree.hooks import input_mean_from_batchnorm
from generators import create_synthesizer

torch.set_num_threads(1)

MEAN = torch.tensor([-0.8, -0.6, -0.3])


def _net(stem: list[nn.Module]) -> nn.Sequential:
    return nn.Sequential(*stem, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _fit_running_stats(net: nn.Module, mean: torch.Tensor) -> None:
    """BN running statistics of smooth, correlated images with per-channel ``mean`` (cumulative)."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(20):
            base = torch.nn.functional.interpolate(torch.randn((32, 1, 4, 4), generator=g), size=(12, 12))
            x = mean.view(1, -1, 1, 1) + 1.4 * base + 0.3 * torch.randn((32, 3, 12, 12), generator=g)
            net(x)
    net.eval()


def test_mean_of_the_training_data_is_recovered_through_a_convolution_stem():
    torch.manual_seed(0)
    net = _net([nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)])
    _fit_running_stats(net, MEAN)
    est = input_mean_from_batchnorm(net, (3, 12, 12))
    assert est is not None and est.shape == (3,)
    assert torch.allclose(est, MEAN, atol=0.05), est
    # the BN statistics of data centred elsewhere give another answer: the estimate follows the data
    _fit_running_stats(net, torch.zeros(3))
    assert torch.allclose(input_mean_from_batchnorm(net, (3, 12, 12)), torch.zeros(3), atol=0.05)


def test_no_answer_without_batchnorm_or_through_a_non_affine_stem():
    torch.manual_seed(0)
    assert input_mean_from_batchnorm(_net([nn.Conv2d(3, 8, 3, padding=1)]), (3, 12, 12)) is None
    relu_first = _net([nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8)])
    _fit_running_stats(relu_first, MEAN)
    assert input_mean_from_batchnorm(relu_first, (3, 12, 12)) is None


def test_shipped_teacher_gives_its_digits_mean(bn_teacher):
    """resnet8_digits' card standardises its own data: the recovered mean is the real digits' one, about 0."""
    card = bn_teacher.card
    x, _ = digits_split("train", tuple(card.input_shape))
    real = ((x - torch.tensor(card.mean).view(1, -1, 1, 1)) / torch.tensor(card.std).view(1, -1, 1, 1)).mean()
    est = input_mean_from_batchnorm(bn_teacher.model.eval(), card.input_shape)
    assert est is not None and abs(float(est[0]) - float(real)) < 0.1


class _Brighter(nn.Module):
    """A teacher fed images 0.8 brighter than it sees them: its data sits at 0.8 below the card's centre."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x + 0.8)


@pytest.mark.parametrize("method", ["dafl", "zskt", "dfad"])
def test_online_generator_centred_on_the_teacher_data_mean(method, bn_teacher, plain_teacher):
    model, card = _Brighter(bn_teacher.model).eval(), bn_teacher.card
    target = input_mean_from_batchnorm(model, card.input_shape)
    assert target is not None and abs(float(target[0]) + 0.8) < 0.1
    paper = create_synthesizer(method, model, card, batch_size=64, output_mean="zero", clamp=False)
    ours = create_synthesizer(method, model, card, batch_size=64, output_mean="teacher", clamp=False)
    assert paper.output_shift is None
    assert torch.allclose(ours.output_shift.flatten(), target)
    z = paper.draw_z(64)
    with torch.no_grad():
        shift = ours.generate(z).mean() - paper.generate(z).mean()  # same seed: the same generator
    assert abs(float(shift) - float(target[0])) < 1e-4  # unclamped: exactly the recovered mean
    # resnet8_digits' card standardises its data (recovered 0.04 < OUTPUT_MEAN_MIN_SHIFT): the papers' 0
    assert create_synthesizer(method, bn_teacher.model, bn_teacher.card).output_shift is None
    # a BN-less teacher has no first BN layer: the papers' centring
    plain = create_synthesizer(method, plain_teacher.model, plain_teacher.card, output_mean="teacher")
    assert plain.output_shift is None
    with pytest.raises(UserInputError, match="output_mean"):
        create_synthesizer(method, model, card, output_mean="data")


def test_generator_saved_before_the_setting_samples_as_it_was_trained(tmp_path, bn_teacher):
    """A generator.json without output_mean (written before session 45) keeps the papers' centre, 0."""
    import dataclasses
    import json

    from datafree.online_train import load_online_synthesizer, train_online
    from datafree.utils import torch_generator

    bn_teacher = dataclasses.replace(bn_teacher, model=_Brighter(bn_teacher.model).eval())

    run = train_online(bn_teacher, "dfad", "resnet8_quarter", tmp_path, {"epochs": 1, "steps_per_epoch": 2},
                       batch_size=8, output_mean="zero")  # fmt: skip
    meta_path = tmp_path / "generator.json"
    meta = json.loads(meta_path.read_text())
    assert meta["config"]["output_mean"] == "zero"
    for key in ("output_mean", "output_scale", "output_colour"):  # sessions 45 and 46
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    old = load_online_synthesizer(bn_teacher, tmp_path, "dfad")
    assert old.config.output_mean == "zero" and old.output_shift is None
    assert old.config.output_scale == "one" and old.config.output_colour == "free"
    then = run.synthesizer.sample(4, torch_generator(3)).images
    assert torch.equal(old.sample(4, torch_generator(3)).images, then)
    # today's default for a new run: centred on the teacher's data
    assert create_synthesizer("dfad", bn_teacher.model, bn_teacher.card).config.output_mean == "teacher"


def test_teacher_scale_matches_the_first_bn_variance_and_learn_scale_is_trained(bn_teacher):
    from datafree.hooks import batchnorm_input_variance, first_batchnorm

    model, card = _Brighter(bn_teacher.model).eval(), bn_teacher.card
    synth = create_synthesizer("dfad", model, card, batch_size=16, output_scale="teacher")
    layer = first_batchnorm(model, card.input_shape)
    assert synth.scale_layer is layer
    x = synth.generator(synth.draw_z(16)).detach()  # centred, spread 1

    def distance(s: float) -> float:
        v = batchnorm_input_variance(model, layer, synth.output_shift + s * x)
        spread2 = layer.running_var + layer.eps
        return float((((v - layer.running_var) / spread2) ** 2).sum())

    s = float(synth.first_bn_scale(x))
    assert 0.25 <= s <= 4 and s != 1.0
    assert distance(s) < min(distance(0.8 * s), distance(1.25 * s), distance(1.0))
    # without the teacher's centre (output_mean "zero") there is no scale to match either
    uncentred = create_synthesizer("dfad", model, card, output_mean="zero", output_scale="teacher")
    assert uncentred.scale_layer is None
    learn = create_synthesizer("dafl", model, card, batch_size=16, output_scale="learn")
    params = {id(p) for g in learn.optimizer.param_groups for p in g["params"]}
    assert id(learn.generator.out_log_scale) in params and "out_log_scale" in learn.state_dict()["generator"]
    with pytest.raises(UserInputError, match="output_scale"):
        create_synthesizer("dafl", model, card, output_scale="auto")


def test_bench_row_of_the_shipped_teacher():
    """bench/input_mean.py: resnet8_digits' card standardises its data, so every place reads alike."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "input_mean.py"
    spec = importlib.util.spec_from_file_location("bench_input_mean", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.teacher_row("resnet8_digits")
    assert row["max_error"] < 0.1 and set(row["accuracy"]) == {
        "zero_one",
        "real_mean_one",
        "real",
        "teacher_mean_one",
        "teacher",
    }
    assert row["spread_error"] < 0.05 and row["recovered_structure"]["correlation"] == 1.0
    assert min(row["accuracy"].values()) > 0.95
