"""Fast-Datafree leaves BN layers on 1 x 1 and 2 x 2 maps out of its BN loss (``bn_min_hw``, session 28)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from datafree.cards import ModelCard
from generators import create_synthesizer


def _resnet18_32() -> tuple[torch.nn.Module, ModelCard]:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    shape = {"input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    card = ModelCard(arch="resnet18", weights="", num_classes=10, **shape)
    return net, card


@pytest.mark.parametrize(("min_hw", "layers"), [(None, 10), (1, 20), (2, 15), (4, 15), (5, 10)])
def test_fast_bn_loss_covers_the_layers_of_the_rule(min_hw, layers):
    net, card = _resnet18_32()
    options = {} if min_hw is None else {"bn_min_hw": min_hw}
    s = create_synthesizer("fast", net, card, seed=0, batch_size=4, **options)
    assert len(s.stat_layers) == layers
    s.reset(4, torch.Generator().manual_seed(0))
    logs = s.step()
    assert torch.isfinite(logs["bn"]) and float(logs["bn"]) > 0


def test_deepinversion_option_gives_the_folded_and_the_hooked_teacher_one_loss():
    """``bn_min_hw`` on DeepInversion: the BN-folded network observes the same layers as the hooks."""
    net, card = _resnet18_32()
    losses = []
    for fold in (True, False):
        s = create_synthesizer("deepinversion", net, card, seed=0, batch_size=4, iterations=2, fold_bn=fold,
                               bn_min_hw=2)  # fmt: skip
        assert len(s.stat_layers) == 15 and (s.folded is not None) == fold
        s.reset(4, torch.Generator().manual_seed(0))
        losses.append(float(s.step()["bn"]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
