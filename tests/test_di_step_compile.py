"""--compile for the DeepInversion step: FoldedTeacher.loss_graph gives the hooked loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datafree import precision
from datafree.bnfold import fold_batchnorm
from datafree.models import create_model
from generators import create_synthesizer
from tests.test_bnfold import _randomise_bn, _Shared


def _loss_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    x = x.clone().requires_grad_(True)
    logits, bn = fn(x)
    (bn + F.cross_entropy(logits, torch.arange(len(x)) % logits.shape[1])).backward()
    return logits.detach(), bn.detach(), x.grad


def _hooked(folded, first: float):  # noqa: ANN001, ANN202
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with folded.statistics() as st:
            logits = folded.net(x)
            return logits, st.loss(first)

    return fn


@pytest.mark.parametrize(
    "arch,shape", [("resnet8", (1, 16, 16)), ("mobilenetv2_cifar", (3, 32, 32)), ("shared", None)]
)
def test_loss_graph_matches_the_hooked_statistics(arch: str, shape: tuple[int, int, int] | None) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(_Shared() if arch == "shared" else create_model(arch, 10, shape[0]))  # type: ignore[index]
    x = torch.randn(8, *(shape or (3, 8, 8))) * 1.5 + 0.3
    folded = fold_batchnorm(model)
    assert folded is not None
    if arch == "shared":  # one folded layer, two observed by hooks: both kinds in one graph
        assert [layer.folded for layer in folded.layers] == [False, True, False]
    ref = _loss_and_grad(_hooked(folded, 10.0), x)
    got = _loss_and_grad(folded.loss_graph(10.0), x)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-4, atol=1e-6 * float(ref[2].abs().max()))
    assert float(got[1]) > 0


def test_first_layer_weight_is_applied() -> None:
    torch.manual_seed(0)
    folded = fold_batchnorm(_randomise_bn(create_model("resnet8", 10, 1)))
    assert folded is not None
    x = torch.randn(4, 1, 16, 16)
    a, b = folded.loss_graph(1.0)(x)[1], folded.loss_graph(10.0)(x)[1]
    with folded.statistics() as st:
        folded.net(x)
        ref_a, ref_b = st.loss(1.0), st.loss(10.0)
    torch.testing.assert_close(a, ref_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, ref_b, rtol=1e-5, atol=1e-6)
    assert float(b) > float(a)


class _TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.bn(self.conv(x)).relu()
        return y.mean((2, 3)), y


def test_rewrite_refuses_what_it_does_not_cover() -> None:
    """A (logits, features) network: the graph's output is a tuple; the step keeps the hooks."""
    folded = fold_batchnorm(_randomise_bn(_TupleOut()))
    assert folded is not None
    with pytest.raises(ValueError, match="one tensor"):
        folded.loss_graph(1.0)


@pytest.fixture
def compile_on(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``--compile`` on, with torch.compile replaced by the identity (the graph itself, no inductor)."""
    compiled = []

    def fake_compile(fn, **kw):  # noqa: ANN001, ANN003, ANN202
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    before = precision.options()
    precision.configure("fp32", False, True, "cpu")
    yield compiled
    precision.configure(before.precision, before.channels_last, before.compile, "cpu")


def test_deepinversion_uses_the_graph_under_compile_with_the_same_steps(bn_teacher, compile_on) -> None:  # noqa: ANN001
    lm = bn_teacher
    runs = {}
    for compiled in (True, False):
        if not compiled:
            precision.configure("fp32", False, False, "cpu")
        s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=16, iterations=3)
        assert (s.graph_loss is not None) == compiled
        s.reset(16, torch.Generator().manual_seed(0))
        runs[compiled] = [s.step() for _ in range(3)], s.sample().images
    assert len(compile_on) == 1
    for a, b in zip(runs[True][0], runs[False][0], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_deepinversion_step_compiled_by_inductor(bn_teacher) -> None:  # noqa: ANN001
    """The real torch.compile (about a minute on 2 CPU cores): same loss terms as eager."""
    lm = bn_teacher
    before = precision.options()
    logs = {}
    try:
        for compiled in (True, False):
            precision.configure("fp32", False, compiled, "cpu")
            s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=16, iterations=2)
            s.reset(16, torch.Generator().manual_seed(0))
            logs[compiled] = [s.step() for _ in range(2)]
    finally:
        precision.configure(before.precision, before.channels_last, before.compile, "cpu")
    for a, b in zip(logs[True], logs[False], strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
