"""BN folding for the DeepInversion step (datafree.bnfold): same statistics, loss and gradients as hooks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datafree.bnfold import fold_batchnorm
from datafree.hooks import BNStatistics
from datafree.losses import bn_statistic_loss
from datafree.models import create_model


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval().requires_grad_(False)


def _hooked(model: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    with BNStatistics(model) as st:
        logits = model(x)
        loss = bn_statistic_loss(st.means, st.vars, st.running(), 10.0) + F.cross_entropy(logits, torch.zeros(
            len(x), dtype=torch.long))  # fmt: skip
        means, variances = [m.detach() for m in st.means], [v.detach() for v in st.vars]
    loss.backward()
    return logits.detach(), means, variances, loss.detach(), x.grad


def _folded(model: nn.Module, x: torch.Tensor):
    folded = fold_batchnorm(model)
    assert folded is not None
    x = x.clone().requires_grad_(True)
    with folded.statistics() as st:
        logits = folded.net(x)
        loss = bn_statistic_loss(st.means, st.vars, st.running(), 10.0) + F.cross_entropy(logits, torch.zeros(
            len(x), dtype=torch.long))  # fmt: skip
        means, variances = [m.detach() for m in st.means], [v.detach() for v in st.vars]
    loss.backward()
    return folded, (logits.detach(), means, variances, loss.detach(), x.grad)


def _assert_same(a, b) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-4)
    for u, v in zip(a[1] + a[2], b[1] + b[2], strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a[3], b[3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[4], b[4], rtol=1e-3, atol=1e-6 * float(a[4].abs().max()))


@pytest.mark.parametrize("arch,shape", [("resnet8", (1, 16, 16)), ("mobilenetv2_cifar", (3, 32, 32))])
def test_folded_statistics_loss_and_gradient_match_hooks(arch: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model(arch, 10, shape[0]))
    x = torch.randn(8, *shape)
    ref = _hooked(model, x)
    folded, got = _folded(model, x)
    assert folded.num_folded == len(folded.layers)  # every BN follows a conv in these networks
    _assert_same(ref, got)
    # the teacher itself is untouched: its in-place ReLUs are still in place and it still has its BNs
    assert any(getattr(m, "inplace", False) for m in model.modules())
    torch.testing.assert_close(model(x), ref[0])


class _Shared(nn.Module):
    """conv1's output is read by bn1 and by the shortcut: bn1 cannot be folded; bn2 can."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.bn3 = nn.BatchNorm2d(4)  # pre-activation style: after an addition, not a conv
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        out = self.relu(self.bn1(a))
        out = self.bn2(self.conv2(out))
        out += a
        out = self.relu(self.bn3(out))
        return self.fc(out.mean((2, 3)))


def test_only_foldable_layers_are_folded_and_the_rest_fall_back_to_hooks() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(_Shared())
    x = torch.randn(6, 3, 8, 8)
    ref = _hooked(model, x)
    folded, got = _folded(model, x)
    assert [layer.folded for layer in folded.layers] == [False, True, False]
    _assert_same(ref, got)


def test_tiny_bn_scale_is_not_folded() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(_Shared())
    model.bn2.weight.data[1] = 0.0  # a dead channel: the input statistics cannot be recovered
    assert fold_batchnorm(model) is None  # bn1 and bn3 are not foldable either: nothing folded
    model.bn2.weight.data[1] = 1e-6  # recovery would amplify rounding ~1e6x: also refused
    assert fold_batchnorm(model) is None


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if out.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            out = out * 2
        return self.fc(out.mean((2, 3)))


def test_untraceable_teacher_falls_back_to_hooks_and_deepinversion_still_runs() -> None:
    from datafree.cards import ModelCard
    from generators import create_synthesizer

    model = _randomise_bn(_Untraceable())
    assert fold_batchnorm(model) is None
    card = ModelCard("custom", "", 10, [3, 8, 8], [0.5] * 3, [0.25] * 3)
    synth = create_synthesizer("deepinversion", model, card, batch_size=4, iterations=2)
    assert synth.folded is None
    logs = synth.step()
    assert torch.isfinite(logs["total"])


class _InplaceShared(nn.Module):
    """The BN output is modified in place while another user reads it: folding would change results."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        keep = out.mean((2, 3))
        out.clamp_(min=0)
        return self.fc(torch.cat([keep, out.mean((2, 3))], 1))


def test_in_place_use_seen_by_another_user_is_not_folded() -> None:
    model = _randomise_bn(_InplaceShared())
    assert fold_batchnorm(model) is None
    ref = _hooked(model, torch.randn(4, 3, 8, 8))
    assert torch.isfinite(ref[3])


def test_deepinversion_step_folded_matches_hooks() -> None:
    from datafree.cards import load_model
    from generators import create_synthesizer

    lm = load_model("resnet8_digits")
    runs = {}
    for fold in (False, True):
        synth = create_synthesizer(
            "deepinversion", lm.model, lm.card, batch_size=16, iterations=10, fold_bn=fold
        )
        assert (synth.folded is not None) == fold
        synth.reset(16, torch.Generator().manual_seed(0))
        logs = [synth.step() for _ in range(3)]
        runs[fold] = (logs, synth.inputs.detach().clone())
    for a, b in zip(runs[False][0], runs[True][0], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[False][1], runs[True][1], rtol=0, atol=1e-4)


class _AliasThenInplace(nn.Module):
    """conv -> bn -> Identity -> in-place ReLU, then an in-place add (timm's ResNet block layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.drop(self.bn(self.conv(x))))
        return self.fc(y.mean(dim=(2, 3)))


def test_fold_is_refused_when_an_alias_reaches_an_inplace_op():
    # the folded conv output is saved for the statistics' backward; an in-place ReLU behind an
    # Identity would modify it: the trial pass must refuse the fold (the hooks then serve)
    model = _randomise_bn(_AliasThenInplace()).eval()
    x = torch.randn(4, 1, 8, 8)
    assert fold_batchnorm(model) is not None  # without a trial the fold is made ...
    with pytest.raises(RuntimeError, match="inplace"):
        _folded(model, x)  # ... and its backward fails
    assert fold_batchnorm(model, x[:2]) is None  # the trial catches it


@pytest.mark.parametrize(("stride", "groups", "size"), [((2, 2), 1, 8), ((2, 3), 1, 9), ((2, 2), 2, 7)])
def test_strided_pointwise_conv_input_gradient_matches_aten(stride, groups, size):
    from datafree.bnfold import StridedPointwiseConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 1, stride=stride, groups=groups, bias=True).requires_grad_(False)
    assert StridedPointwiseConv2d.applies(conv)
    fast = StridedPointwiseConv2d.from_conv(conv)
    assert fast.weight is conv.weight  # same parameters
    x = torch.randn(3, 4, size, size + 1, requires_grad=True)
    g = torch.randn_like(conv(x))
    ref_out = conv(x)
    (ref,) = torch.autograd.grad(ref_out, x, g)
    out = fast(x)
    (got,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    fast64 = StridedPointwiseConv2d.from_conv(copy.deepcopy(conv).double())
    assert torch.autograd.gradcheck(fast64, (x.detach()[:1, :, :5, :5].double().requires_grad_(True),))


def test_strided_pointwise_conv_only_replaces_frozen_unpadded_1x1():
    from datafree.bnfold import StridedPointwiseConv2d

    assert not StridedPointwiseConv2d.applies(nn.Conv2d(4, 6, 1, stride=1).requires_grad_(False))
    assert not StridedPointwiseConv2d.applies(nn.Conv2d(4, 6, 3, stride=2).requires_grad_(False))
    assert not StridedPointwiseConv2d.applies(nn.Conv2d(4, 6, 1, stride=2, padding=1).requires_grad_(False))
    assert not StridedPointwiseConv2d.applies(nn.Conv2d(4, 6, 1, stride=2))  # trainable weights
    # resnet8's two projection shortcuts (1x1, stride 2) are folded into the fast layer
    folded = fold_batchnorm(_randomise_bn(create_model("resnet8", num_classes=10, in_channels=1)),
                            torch.zeros(2, 1, 16, 16))  # fmt: skip
    assert folded is not None
    assert sum(isinstance(m, StridedPointwiseConv2d) for m in folded.net.modules()) == 2


def test_statistics_hooks_stay_registered_and_record_only_inside_a_context():
    """The hooks are registered once, record into the open context only, and keep no activations after it."""
    torch.manual_seed(0)
    model = _randomise_bn(create_model("resnet8", num_classes=10, in_channels=1))
    folded = fold_batchnorm(model)
    assert folded is not None
    modules = [layer.module for layer in folded.layers]
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    losses = []
    for one_node in (True, False, True):
        with folded.statistics(one_node) as st:
            folded.net(x)
            losses.append(st.loss(10.0))
        assert all(t is None for t in st.observed) and all(s is None for s in st._sums)  # references dropped
        assert [len(m._forward_hooks) for m in modules] == [1] * len(modules)  # the same hook, kept
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    assert torch.equal(losses[0], losses[2])
    folded.net(x)  # outside a context: nothing recorded
    assert all(t is None for t in st.observed)
    with folded.statistics(True) as outer:  # nested: the inner context records, the outer one again after
        with folded.statistics(True) as inner:
            folded.net(x)
            assert all(t is not None for t in inner.observed) and all(t is None for t in outer.observed)
        folded.net(x)
        assert all(t is not None for t in outer.observed)
    folded.remove_hooks()
    assert all(len(m._forward_hooks) == 0 for m in modules)
