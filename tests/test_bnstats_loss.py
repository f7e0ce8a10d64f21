"""All layers' BN statistics and the BN loss in one autograd node == per-layer channel_mean_var + the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree import bnstats_loss
from datafree.bnfold import fold_batchnorm
from datafree.losses import BNStatisticLoss
from datafree.models import create_model
from datafree.stats import channel_mean_var
from generators import create_synthesizer
from tests.bn_cases import randomise_bn


class _Mixed(nn.Module):
    """conv-BN (folded), BN after a ReLU (hooked), and a BN whose input is read twice (hooked)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.b2 = nn.BatchNorm2d(6)
        self.c3, self.b3 = nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(torch.relu(self.b1(self.c1(x))))
        z = self.c3(y)
        z = self.b3(z) + z
        return self.fc(z.mean((2, 3)))


def _reference(folded, acts, first):
    """The code before: channel_mean_var per layer (fresh shift table), then BNStatisticLoss."""
    means, variances = [], []
    for t in acts:
        m, v = channel_mean_var(t, nn.Identity())
        means.append(m)
        variances.append(v)
    return folded.bn_loss(means, variances, first)


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2_cifar", "mixed"])
@pytest.mark.parametrize("offset", [0.0, 50.0])  # 50: inputs far from the running means, shifted sums
def test_one_node_matches_per_layer_statistics(name, offset):
    torch.manual_seed(0)
    if name == "mixed":
        model, shape = _Mixed(), (24, 1, 8, 8)
    else:
        channels = 1 if name == "resnet8" else 3
        model, shape = create_model(name, 10, channels), (16, channels, 16, 16)
    model = randomise_bn(model)
    folded = fold_batchnorm(model)
    assert folded is not None
    if name == "mixed":
        assert 0 < folded.num_folded < len(folded.layers)
    shifted = []
    for step in range(3):  # first call, then with the previous means as the shift
        x0 = torch.randn(shape, generator=torch.Generator().manual_seed(step)) * 0.5 + offset
        got, ref = {}, {}
        for out, kind in ((got, "one"), (ref, "ref")):
            x = x0.clone().requires_grad_(True)
            with folded.statistics(one_node=kind == "one") as st:
                folded.net(x)
                loss = st.loss(10.0) if kind == "one" else _reference(folded, st.observed, 10.0)
            (gx,) = torch.autograd.grad(loss, x)
            out["loss"], out["grad"] = loss.detach(), gx
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
        tol = 1e-5 * float(ref["grad"].abs().max())
        torch.testing.assert_close(got["grad"], ref["grad"], rtol=1e-3, atol=tol)
        shifted.append(any(folded.bn_loss._shift_next))
    if offset and name != "mixed":
        assert all(shifted)  # the shifted sums served (by the previous step's means after the first)


def test_one_node_gradcheck_float64_fallback_and_fused_path():
    g = torch.Generator().manual_seed(0)
    acts = [torch.randn(4, 3, 2, 3, generator=g), torch.randn(4, 2, generator=g) * 0.01 + 30.0]  # 2nd shifted
    spec = BNStatisticLoss([torch.zeros(3), torch.ones(2)], [torch.rand(3) + 0.5, torch.rand(2) + 0.5],
                           [torch.ones(3), torch.ones(2) * 2])  # fmt: skip
    keys = [nn.Identity(), nn.Identity()]
    xs = [a.clone().requires_grad_(True) for a in acts]
    got = bnstats_loss.bn_loss_from_activations(spec, xs, keys, 3.0)
    ref_xs = [a.clone().requires_grad_(True) for a in acts]
    ms, vs = zip(*(channel_mean_var(a) for a in ref_xs), strict=True)
    ref = spec(list(ms), list(vs), 3.0)
    torch.testing.assert_close(got, ref)
    assert spec._shift_next == [False, True]
    got2 = bnstats_loss.bn_loss_from_activations(spec, xs, keys, 3.0)  # shifted by these means now
    torch.testing.assert_close(got2, ref)
    for a, b in zip(torch.autograd.grad(got, xs), torch.autograd.grad(ref, ref_xs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        bnstats_loss.bn_loss_from_activations(spec, xs[:1], keys[:1])


def test_inplace_change_after_the_hook_is_an_error():
    model = randomise_bn(create_model("resnet8", 10, 1))
    folded = fold_batchnorm(model)
    assert folded is not None
    x = torch.randn(4, 1, 16, 16)
    with folded.statistics(one_node=True) as st, pytest.raises(RuntimeError, match="inplace"):
        folded.net(x)
        with torch.no_grad():
            st.observed[0].add_(1.0)
        st.loss()


def test_deepinversion_steps_the_same_with_one_node_stats(bn_teacher):
    runs = []
    for one_node in (False, True):
        s = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=8,
                               one_node_stats=one_node)  # fmt: skip
        s.reset(8, torch.Generator().manual_seed(0))
        logs = [s.step() for _ in range(3)]
        runs.append((torch.stack([lg["total"] for lg in logs]), s.inputs.detach().clone()))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runs[1][1], runs[0][1], rtol=1e-3, atol=1e-4)


def test_taps_or_loss_node_by_activation_size_same_loss_and_gradient(monkeypatch):
    """Small batches: the loss node takes the sums (no taps), large ones use taps; same loss and gradient."""
    from datafree import bnfold

    torch.manual_seed(0)
    model = randomise_bn(create_model("resnet8", num_classes=10, in_channels=1)).eval()
    folded = fold_batchnorm(model, torch.zeros(2, 1, 16, 16))
    assert folded is not None and folded.observed_per_sample is not None
    n = 6
    x0 = torch.randn(n, 1, 16, 16)
    assert not folded.taps(n)  # 6 x ~21k elements x 4 bytes, far below TAP_MIN_BYTES
    results = []
    for min_bytes in (bnfold.TAP_MIN_BYTES, 0):  # loss node, then taps
        monkeypatch.setattr(bnfold, "TAP_MIN_BYTES", min_bytes)
        x = x0.clone().requires_grad_(True)
        with folded.statistics(True) as st:
            out = folded.net(x)
            tapped = [s is not None for s in st._sums]
            loss = st.loss(10.0) + out.square().mean()
        (grad,) = torch.autograd.grad(loss, x)
        results.append((tapped, loss.detach(), grad))
    assert results[0][0] == [False] * len(folded.layers) and results[1][0] == [True] * len(folded.layers)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[0][2], results[1][2], rtol=1e-5, atol=1e-7)
    folded.observed_per_sample = None  # no trial pass measured it: taps, as before the rule
    assert folded.taps(1)
