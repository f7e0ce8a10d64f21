import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import UserInputError
from datafree.hooks import (
    BNStatistics,
    FeatureRecorder,
    penultimate_module,
    require_batchnorm,
    spatial_batchnorm_layers,
)
from datafree.losses import bn_statistic_loss, js_divergence, kd_kl_loss, l2_prior, tv_l2, weighted_sum


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
    )
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_bn_hook_matches_hand_computation():
    net = _net()
    x = torch.randn(5, 2, 6, 6)
    with BNStatistics(net) as st:
        net(x)
        h = net[0](x)  # input of the first BN, by hand
        mean = h.permute(1, 0, 2, 3).reshape(3, -1).mean(1)
        var = ((h.permute(1, 0, 2, 3).reshape(3, -1) - mean[:, None]) ** 2).mean(1)
        torch.testing.assert_close(st.means[0], mean)
        torch.testing.assert_close(st.vars[0], var)
        loss = bn_statistic_loss(st.means, st.vars, st.running(), first_layer_weight=10.0)
        rm, rv = net[1].running_mean, net[1].running_var
        first = (mean - rm).norm() + (var - rv).norm()
        h2 = net[3](net[2](net[1](h)))
        m2, v2 = h2.mean((0, 2, 3)), h2.var((0, 2, 3), unbiased=False)
        second = (m2 - net[4].running_mean).norm() + (v2 - net[4].running_var).norm()
        torch.testing.assert_close(loss, 10 * first + second)
    assert not net[1]._forward_hooks  # hooks live only inside the with block


def test_bn_hook_per_sample():
    net = _net()
    x = torch.randn(5, 2, 6, 6)
    with BNStatistics(net, per_sample=True) as st:
        net(x)
        h = net[0](x)
        torch.testing.assert_close(st.means[0], h.mean((2, 3)))
        torch.testing.assert_close(st.vars[0], h.var((2, 3), unbiased=False))


def test_bn_gradients_flow_to_input():
    net = _net()
    x = torch.randn(4, 2, 6, 6, requires_grad=True)
    with BNStatistics(net) as st:
        net(x)
        bn_statistic_loss(st.means, st.vars, st.running()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_spatial_batchnorm_layers_leave_out_the_1x1_ones():
    """Torchvision's ResNet-18 at 32 px: layer4's five BN inputs are 1 x 1 (batch statistics alone)."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=10).eval()
    every = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    kept = spatial_batchnorm_layers(net, (3, 32, 32))
    assert len(every) == 20 and len(kept) == 15
    layer3 = [m for m in net.layer3.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not any(m in kept for m in net.layer4.modules()) and all(m in kept for m in layer3)
    assert spatial_batchnorm_layers(net, (3, 64, 64)) == every  # 2 x 2 at 64 px
    assert spatial_batchnorm_layers(net, (3, 32, 32), min_hw=1) == every
    assert not net.training and all(m.num_batches_tracked == 0 for m in every)  # eval mode, no update
    # a network whose every BN is 1 x 1 (an MLP's BatchNorm1d) keeps them all: the loss needs a layer
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    assert spatial_batchnorm_layers(mlp, (3, 2, 2)) == [mlp[2]]


def test_no_batchnorm_error_names_alternatives():
    with pytest.raises(UserInputError, match="dafl, zskt or dfad"):
        require_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3)), "deepinversion")


def test_feature_recorder_penultimate():
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    with FeatureRecorder([penultimate_module(net)], what="input") as rec:
        net(torch.randn(2, 8))
        assert rec.features[0].shape == (2, 5)


def test_kd_loss_matches_hand_computation():
    torch.manual_seed(0)
    s, t, T = torch.randn(6, 4), torch.randn(6, 4), 3.0
    p_t = F.softmax(t / T, 1)
    hand = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    torch.testing.assert_close(kd_kl_loss(s, t, T), hand)
    assert kd_kl_loss(t, t, T).abs() < 1e-6


def test_js_divergence_bounds():
    a = torch.tensor([[10.0, -10.0]])
    b = torch.tensor([[-10.0, 10.0]])
    assert js_divergence(a, a).abs() < 1e-6
    assert js_divergence(a, b, temperature=1.0) == pytest.approx(math.log(2), rel=1e-3)


def test_priors_and_weighted_sum():
    flat = torch.ones(2, 1, 4, 4)
    assert tv_l2(flat) == 0
    assert l2_prior(flat) == pytest.approx(4.0)
    total, logs = weighted_sum({"a": (2.0, torch.tensor(1.5)), "b": (0.0, torch.tensor(9.0))})
    assert total.item() == 3.0 and set(logs) == {"a", "total"}
