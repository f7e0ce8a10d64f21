"""ZeroQ backend specifics (the shared contract is in test_generators_contract.py)."""

from __future__ import annotations

import torch
from torch import nn

from datafree.cards import ModelCard
from generators import create_synthesizer
from generators.zeroq import zeroq_statistic_loss


def test_statistic_loss_by_hand():
    means = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # (B=2, C=2)
    stds = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    m, s = zeroq_statistic_loss(means, stds, torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.5]))
    # ||[0, -1], [-2, 1]||^2 / 2 = 6 / 2 ; ||[0, -0.5], [-1, 0]||^2 / 2 = 1.25 / 2
    torch.testing.assert_close(m, torch.tensor(3.0))
    torch.testing.assert_close(s, torch.tensor(0.625))


class _Unpaired(nn.Module):
    """Convs and BNs that do not alternate: pairing the first N convs with N BNs by order is wrong here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(1, 4, 3, padding=1)  # no BN after it
        self.conv_b = nn.Conv2d(4, 6, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(6)
        self.bn_c = nn.BatchNorm2d(6)  # BN on a ReLU output, no conv before it
        self.head = nn.Linear(6, 3)

    def forward(self, x):  # noqa: D102
        x = torch.relu(self.conv_a(x))
        x = torch.relu(self.bn_b(self.conv_b(x)))
        x = self.bn_c(x)
        return self.head(x.mean((2, 3)))


def _card(shape=(1, 6, 6)) -> ModelCard:
    return ModelCard("x", "", 3, list(shape), [0.5], [0.25])


def test_loss_matches_the_inputs_of_the_bn_layers_not_conv_outputs_by_order():
    torch.manual_seed(0)
    net = _Unpaired().eval()
    for bn in (net.bn_b, net.bn_c):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    net.requires_grad_(False)
    synth = create_synthesizer("zeroq", net, _card(), clamp=False)
    x = torch.randn(5, 1, 6, 6)
    _, logs = synth.loss(x)
    # by hand: the tensors entering bn_b and bn_c
    h = torch.relu(net.conv_a(x))
    in_b = net.conv_b(h)
    in_c = torch.relu(net.bn_b(in_b))
    exp_mean = exp_std = 0.0
    for t, bn in ((in_b, net.bn_b), (in_c, net.bn_c)):
        mu = t.mean((2, 3))
        sd = (t.var((2, 3), unbiased=False) + 1e-6).sqrt()
        exp_mean += ((bn.running_mean - mu) ** 2).sum() / 5
        exp_std += (((bn.running_var + 1e-6).sqrt() - sd) ** 2).sum() / 5
    torch.testing.assert_close(logs["bn_mean"], exp_mean)
    torch.testing.assert_close(logs["bn_std"], exp_std)
    mu, sd = x.mean((2, 3)), (x.var((2, 3), unbiased=False) + 1e-6).sqrt()
    torch.testing.assert_close(logs["input_mean"], (mu**2).sum() / 5)
    torch.testing.assert_close(logs["input_std"], ((1 - sd) ** 2).sum() / 5)


def test_init_has_the_intended_standard_deviation(bn_teacher):
    synth = create_synthesizer("zeroq", bn_teacher.model, bn_teacher.card, clamp=False)
    synth.reset(64, torch.Generator().manual_seed(0))
    std = synth.sample().images.std().item()
    assert 0.95 < std < 1.05  # not the reference code's variance-for-std bug (std ~0.014)


def test_defaults_are_the_reference_settings(bn_teacher):
    synth = create_synthesizer("zeroq", bn_teacher.model, bn_teacher.card)
    cfg = synth.config
    assert (cfg.batch_size, cfg.iterations, cfg.lr, cfg.plateau_patience, cfg.min_lr) == (
        64,
        500,
        0.5,
        100,
        1e-4,
    )
    synth.reset(4, torch.Generator().manual_seed(0))
    assert isinstance(synth.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert synth.sample().labels is None  # ZeroQ has no target classes


def test_plateau_decays_the_learning_rate(bn_teacher):
    synth = create_synthesizer("zeroq", bn_teacher.model, bn_teacher.card, plateau_patience=0, lr=50.0)
    synth.reset(4, torch.Generator().manual_seed(0))
    for _ in range(12):
        synth.step()
    assert synth.optimizer.param_groups[0]["lr"] < 50.0
