"""Simulated quantization: fake-quant arithmetic, BN folding, calibration, the model transform, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datafree.data import digits_split
from datafree.errors import UserInputError
from datafree.quant import (
    QuantConfig,
    calibrate,
    fake_quantize,
    fold_batchnorm,
    minmax_range,
    mse_range,
    percentile_range,
    quant_params,
    quantize_network,
    quantized_size_bytes,
)
from datafree.quant.calibration import RangeObserver
from datafree.quant.fakequant import WeightQuantizer, quant_range
from datafree.quant.fold import fold_conv_bn
from datafree.quant.qmodel import act_quantizers, set_quantization, weight_quantizers


def test_fake_quantize_matches_hand_computation_and_passes_gradient_straight_through():
    x = torch.tensor([-1.0, -0.26, 0.0, 0.3, 0.74, 2.0], requires_grad=True)
    # 3-bit asymmetric grid [0, 7], scale 0.25, zero point 2: representable [-0.5, 1.25].
    y = fake_quantize(x, torch.tensor(0.25), torch.tensor(2.0), 0, 7)
    torch.testing.assert_close(y, torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.75, 1.25]))
    y.sum().backward()
    # round is straight-through; the clamp stops the gradient of the two clipped values.
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]))


def test_quant_params_by_hand():
    scale, zp = quant_params(torch.tensor(-1.0), torch.tensor(0.5), 4, symmetric=True)
    assert quant_range(4, True) == (-7, 7)
    torch.testing.assert_close(scale, torch.tensor(1 / 7))
    assert zp.item() == 0
    scale, zp = quant_params(torch.tensor(-1.0), torch.tensor(3.0), 8, symmetric=False)
    torch.testing.assert_close(scale, torch.tensor(4 / 255))
    assert zp.item() == 64  # round(1 / (4/255)) = round(63.75)
    # a range that excludes 0 is widened to contain it (0 stays exact)
    scale, zp = quant_params(torch.tensor(2.0), torch.tensor(4.0), 8, symmetric=False)
    assert zp.item() == 0 and math.isclose(scale.item(), 4 / 255, rel_tol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_quantizer_per_channel_levels(bits, symmetric):
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0]).view(-1, 1, 1, 1)
    wq = WeightQuantizer(5, bits, symmetric)
    wq.set_range(*minmax_range(w.flatten(1)))
    q = wq(w)
    for c in range(5):
        levels = torch.unique(torch.round(q[c] / wq.scale[c]))
        assert len(levels) <= 2**bits  # at most 2^b distinct values in every channel
        # each channel's error is bounded by half its own step (no clipping with min/max)
        assert (q[c] - w[c]).abs().max() <= wq.scale[c] / 2 + 1e-6 * wq.scale[c]


def test_bits_out_of_range_are_user_errors():
    with pytest.raises(UserInputError, match="weight bits"):
        QuantConfig(weight_bits=1).validate()
    with pytest.raises(UserInputError, match="activation bits"):
        QuantConfig(act_bits=9).validate()
    with pytest.raises(UserInputError, match="act_calib"):
        QuantConfig(act_calib="kl").validate()


def test_fold_conv_bn_equals_unfolded():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(4, 3, 10, 10)
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_on_teacher_is_equivalent_and_removes_bn(bn_teacher):
    folded = fold_batchnorm(bn_teacher.model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(16, *bn_teacher.card.input_shape)
    torch.testing.assert_close(folded(x), bn_teacher.model(x), atol=1e-5, rtol=1e-5)
    # the original is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn_teacher.model.modules())


def test_fold_keeps_a_batchnorm_that_does_not_follow_a_conv():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
    ).eval()
    net[2].running_mean.fill_(0.3)
    net[4].running_var.fill_(2.0)
    folded = fold_batchnorm(net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 1
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


def test_calibration_methods():
    values = torch.arange(10001, dtype=torch.float32)[None] / 100  # (1, N): 0.00 .. 100.00
    lo, hi = minmax_range(values)
    assert lo.item() == 0 and hi.item() == 100
    lo, hi = percentile_range(values, percentile=99.0)
    assert abs(hi.item() - 99.0) < 0.02 and abs(lo.item() - 1.0) < 0.02
    # Gaussian with one huge outlier: MSE clips the outlier, and its error is never worse than min/max.
    torch.manual_seed(0)
    g = torch.randn(2, 5000)
    g[0, 0] = 20.0
    lo_m, hi_m = minmax_range(g)
    lo_s, hi_s = mse_range(g, bits=4, symmetric=True)
    assert hi_s[0] < 0.5 * hi_m[0]

    def err(lo, hi):
        s, z = quant_params(lo, hi, 4, True)
        return (fake_quantize(g, s[:, None], z[:, None], -7, 7) - g).pow(2).mean(1)

    assert (err(lo_s, hi_s) <= err(lo_m, hi_m) + 1e-9).all()
    assert err(lo_s, hi_s)[0] < 0.2 * err(lo_m, hi_m)[0]


def test_range_observer_copies_and_bounds_its_samples():
    obs = RangeObserver(max_samples=100, generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-1, 3, 1000)
    obs(x)
    x.zero_()  # an in-place op after the hook must not change what was recorded
    obs(torch.tensor([5.0]))
    assert obs.lo.item() == -1 and obs.hi.item() == 5
    assert sum(s.numel() for s in obs.samples) <= 100
    assert torch.cat(obs.samples).abs().sum() > 0


def test_quantize_network_places_quantizers_on_input_layers_and_residual_adds(bn_teacher):
    q = quantize_network(bn_teacher.model, QuantConfig(8, 8))
    names = {n for n, _ in q.act_quant.named_children()}
    assert "x" in names  # the network input
    assert {"layer1_0_conv2", "layer2_0_shortcut_0", "pool"} <= names  # pre-add conv outputs, pooling
    assert {"layer1_0_relu2", "layer2_0_relu2", "layer3_0_relu2"} <= names  # residual add + ReLU outputs
    assert "layer1_0_conv1" not in names  # conv read only by a ReLU: quantized after the ReLU
    assert "fc" not in names  # logits stay at accumulator precision by default
    assert len(weight_quantizers(q)) == 10  # stem + 3 blocks x 2 convs + 2 shortcut convs + fc
    q_out = quantize_network(bn_teacher.model, QuantConfig(8, 8, quantize_output=True))
    assert "fc" in {n for n, _ in q_out.act_quant.named_children()}


def test_quantized_model_is_close_at_8_bits_and_exact_when_switched_off(bn_teacher):
    pixels, _ = digits_split("test", tuple(bn_teacher.card.input_shape))
    x = bn_teacher.card.normalizer()(pixels[:64])
    q = calibrate(quantize_network(bn_teacher.model, QuantConfig(8, 8)), x)
    ref = bn_teacher.model(x)
    out = q(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    set_quantization(q, weights=False, activations=False)
    torch.testing.assert_close(q(x), ref, atol=1e-5, rtol=1e-5)


def test_lower_bits_cost_more(bn_teacher):
    torch.manual_seed(0)
    x = torch.randn(32, *bn_teacher.card.input_shape)
    ref = bn_teacher.model(x)
    errs = []
    for bits in (8, 4, 2):
        q = calibrate(quantize_network(bn_teacher.model, QuantConfig(bits, bits, act_calib="minmax")), x)
        errs.append((q(x) - ref).pow(2).mean().item())
    assert errs[0] < errs[1] < errs[2]


def test_calibration_sets_every_quantizer(bn_teacher):
    x = torch.randn(8, *bn_teacher.card.input_shape)
    q = calibrate(quantize_network(bn_teacher.model, QuantConfig(4, 6, weight_symmetric=False)), x)
    for aq in act_quantizers(q):
        assert aq.observer is None and aq.scale.item() != 1.0
    for _layer, wq in weight_quantizers(q):
        assert not wq.symmetric and (wq.zero_point > 0).any()
        assert torch.isfinite(wq.scale).all()


def test_size_in_bytes_at_bit_width(bn_teacher):
    q4 = quantize_network(bn_teacher.model, QuantConfig(4, 4))
    q8 = quantize_network(bn_teacher.model, QuantConfig(8, 8))
    n_weights = sum(layer.weight.numel() for layer, _ in weight_quantizers(q4))
    s4, s8 = quantized_size_bytes(q4), quantized_size_bytes(q8)
    assert s8["weights"] == n_weights
    assert s4["weights"] == sum(math.ceil(layer.weight.numel() / 2) for layer, _ in weight_quantizers(q4))
    assert s4["total"] < s8["total"] < s8["float32_baseline"]
    assert s8["float32_baseline"] - s8["total"] > 3 * n_weights - 10_000
