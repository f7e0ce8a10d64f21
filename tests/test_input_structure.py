"""The training data's spread and colour correlation recovered from a BN teacher's first BN layer.

And the online generators' images given them (output_scale "data", output_colour "teacher").
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree.cards import ModelCard
from datafree.data.digits import digits_split
from datafree.errors import UserInputError
from datafree.hooks import input_mean_from_batchnorm, input_structure_from_batchnorm
from generators import create_synthesizer
from generators.online import OUTPUT_SCALE_MIN_CHANGE, colour_mix

torch.set_num_threads(1)

CARD_MEAN, CARD_STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]
SPREAD = 0.3  # pixel units


def _images(n: int, grey: bool, g: torch.Generator) -> torch.Tensor:
    """Normalised images of pixel mean 0.4 and spread SPREAD, varying on a 4 x 4 grid (16 px).

    One shared channel (grey) or three independent ones, plus a little white noise.
    """
    base = torch.randn((n, 1 if grey else 3, 4, 4), generator=g)
    base = nn.functional.interpolate(base, size=(16, 16), mode="bilinear", align_corners=False)
    pixels = base.expand(n, 3, 16, 16) + 0.2 * torch.randn((n, 3, 16, 16), generator=g)
    pixels = 0.4 + SPREAD * pixels / pixels.std()
    mean, std = torch.tensor(CARD_MEAN).view(1, 3, 1, 1), torch.tensor(CARD_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _teacher(grey: bool) -> nn.Module:
    """A conv stem + BN classifier whose BN layers saw :func:`_images` (cumulative running statistics)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(16):
            net(_images(64, grey, g))
    return net.eval()


def _card() -> ModelCard:
    return ModelCard("custom", "", 10, [3, 16, 16], CARD_MEAN, CARD_STD)


@pytest.mark.parametrize("grey", [True, False])
def test_spread_and_correlation_of_the_training_images_are_recovered(grey):
    net = _teacher(grey)
    mean = input_mean_from_batchnorm(net, (3, 16, 16))
    assert mean is not None
    st = input_structure_from_batchnorm(net, (3, 16, 16), mean, CARD_STD)
    assert st is not None
    assert abs(st.spread - SPREAD) < 0.1 * SPREAD, st
    assert st.grain == 4 and st.residual < 0.3, st
    assert (st.correlation >= 0.9) if grey else (st.correlation <= 0.25), st


def test_shipped_teacher_gives_its_digits_spread(bn_teacher):
    """resnet8_digits (one channel, 16 px): the spread of its real training digits, within 5%."""
    card, model = bn_teacher.card, bn_teacher.model.eval()
    x, _ = digits_split("train", tuple(card.input_shape))
    mean = input_mean_from_batchnorm(model, card.input_shape)
    st = input_structure_from_batchnorm(model, card.input_shape, mean, card.std)
    assert st is not None and st.correlation == 1.0
    assert abs(st.spread - float(x.std())) < 0.05 * float(x.std()), (st, float(x.std()))


def test_no_structure_without_batchnorm(plain_teacher):
    card = plain_teacher.card
    model = plain_teacher.model
    assert input_structure_from_batchnorm(model, card.input_shape, torch.zeros(3), card.std) is None


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_colour_mix_gives_independent_channels_the_correlation_in_pixel_units(rho):
    std = torch.tensor(CARD_STD)
    e = torch.randn((3, 200_000), generator=torch.Generator().manual_seed(0))  # pixel units, independent
    mix = colour_mix(rho, std)
    if rho == 0:
        assert mix is None
        return
    y = (mix @ (e / std[:, None])) * std[:, None]  # normalised in, mixed, back in pixel units
    cov = torch.cov(y)
    target = (1 - rho) * torch.eye(3) + rho * torch.ones(3, 3)
    torch.testing.assert_close(cov, target, atol=0.02, rtol=0)
    assert colour_mix(1.0, torch.tensor([0.3])) is None  # one channel


@pytest.mark.parametrize("method", ["dafl", "zskt", "dfad"])
def test_online_images_take_the_teacher_data_structure(method):
    net, card = _teacher(grey=True), _card()
    ours = create_synthesizer(method, net, card, batch_size=64, clamp=False)
    assert ours.config.output_scale == "data" and ours.config.output_colour == "teacher"  # the defaults
    x = ours.sample(256, torch.Generator().manual_seed(0)).images
    std = torch.tensor(CARD_STD).view(1, 3, 1, 1)
    pixels = (x * std).transpose(0, 1).reshape(3, -1)
    corr = torch.corrcoef(pixels)
    assert corr.min() > 0.999  # grey
    spread = ours.structure.spread
    assert abs(spread - SPREAD) < 0.1 * SPREAD
    torch.testing.assert_close(pixels.std(dim=1), torch.full((3,), spread), atol=1e-3, rtol=0)  # unclamped
    paper = create_synthesizer(method, net, card, batch_size=64, clamp=False, output_mean="zero",
                               output_scale="one", output_colour="free")  # fmt: skip
    assert paper.colour_mix is None and paper.data_spread is None
    xp = paper.sample(256, torch.Generator().manual_seed(0)).images
    assert torch.corrcoef(xp.transpose(0, 1).reshape(3, -1)).min() < 0.9
    # each option alone
    colour_only = create_synthesizer(method, net, card, clamp=False, output_scale="one")
    assert colour_only.colour_mix is not None and colour_only.data_spread is None
    scale_only = create_synthesizer(method, net, card, clamp=False, output_colour="free")
    assert scale_only.colour_mix is None and scale_only.data_spread is not None
    with pytest.raises(UserInputError, match="output_colour"):
        create_synthesizer(method, net, card, output_colour="grey")


def test_a_card_that_standardises_its_data_keeps_the_papers_spread(bn_teacher, plain_teacher):
    """resnet8_digits: its card's std is its data's own (recovered within OUTPUT_SCALE_MIN_CHANGE of 1)."""
    synth = create_synthesizer("dfad", bn_teacher.model.eval(), bn_teacher.card)
    assert synth.structure is not None
    assert abs(synth.structure.spread / bn_teacher.card.std[0] - 1) < OUTPUT_SCALE_MIN_CHANGE
    assert synth.data_spread is None and synth.colour_mix is None  # one channel: no colour to mix
    plain = create_synthesizer("dafl", plain_teacher.model, plain_teacher.card)  # no BN: the papers'
    assert plain.structure is None and plain.data_spread is None and plain.colour_mix is None


def test_deepinversion_starts_from_images_of_the_teacher_data_structure():
    net, card = _teacher(grey=True), _card()
    di = create_synthesizer("deepinversion", net, card, batch_size=128, init="teacher")
    mean, structure = di.init_structure
    di.reset(128, torch.Generator().manual_seed(0))
    x = di.inputs.detach()
    std = torch.tensor(CARD_STD).view(1, 3, 1, 1)
    pixels = (x * std).transpose(0, 1).reshape(3, -1)
    assert torch.corrcoef(pixels).min() > 0.95  # grey (clamped to valid pixels)
    assert abs(float(pixels.std(dim=1).mean()) - structure.spread) < 0.2 * structure.spread
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), mean, atol=0.1, rtol=0)
    paper = create_synthesizer("deepinversion", net, card, batch_size=128)  # "normal", the paper's
    assert paper.init_structure is None
    paper.reset(128, torch.Generator().manual_seed(0))
    paper_corr = torch.corrcoef((paper.inputs.detach() * std).transpose(0, 1).reshape(3, -1))
    assert (paper_corr - torch.eye(3)).abs().max() < 0.1  # independent channels
    assert abs(float(paper.inputs.detach().std()) - 1.0) < 0.1
    with pytest.raises(UserInputError, match="init"):
        create_synthesizer("deepinversion", net, card, init="grey")
