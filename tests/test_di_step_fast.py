"""The DeepInversion step's fused pieces give what the plain tensor code gives (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree import stats
from datafree.augment import random_jitter
from datafree.bnfold import fold_batchnorm
from datafree.hooks import BNStatistics
from datafree.losses import BNStatisticLoss, bn_statistic_loss, image_priors, l2_prior, tv_l2
from datafree.models import create_model
from generators import create_synthesizer
from tests.bn_cases import randomise_bn


def _loop_loss(means, variances, running, first):
    total = means[0].new_zeros(())
    for i, (mu, var, (rm, rv)) in enumerate(zip(means, variances, running, strict=True)):
        term = torch.linalg.vector_norm(mu - rm) + torch.linalg.vector_norm(var - rv)
        total = total + (first if i == 0 else 1.0) * term
    return total


def test_bn_statistic_loss_matches_per_layer_loop_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    sizes = [3, 5, 1, 4]
    f64 = torch.float64
    running = [(torch.randn(c, generator=g, dtype=f64), torch.rand(c, generator=g, dtype=f64) + 0.5)
               for c in sizes]  # fmt: skip
    means = [torch.randn(c, generator=g, dtype=torch.float64).requires_grad_(True) for c in sizes]
    variances = [torch.rand(c, generator=g, dtype=torch.float64).requires_grad_(True) for c in sizes]
    with torch.no_grad():  # one layer's mean term exactly 0: its gradient is 0, as vector_norm's
        means[2].copy_(running[2][0])
    got = bn_statistic_loss(means, variances, running, 10.0)
    ref = _loop_loss(means, variances, running, 10.0)
    torch.testing.assert_close(got, ref)
    g_got = torch.autograd.grad(got, means + variances)
    g_ref = torch.autograd.grad(ref, means + variances)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    assert float(g_got[2].abs().sum()) == 0.0
    spec = BNStatisticLoss([rm for rm, _ in running], None, [rv for _, rv in running])
    means[2].data.add_(0.1)
    assert torch.autograd.gradcheck(lambda *t: spec(t[:4], t[4:], 3.0), (*means, *variances))


def test_bn_statistic_loss_keeps_the_loop_for_other_shapes():
    rm, rv = torch.zeros(3), torch.ones(3)
    means, variances = [torch.randn(2, 3)], [torch.rand(2, 3)]  # per-sample statistics broadcast
    torch.testing.assert_close(
        bn_statistic_loss(means, variances, [(rm, rv)]), _loop_loss(means, variances, [(rm, rv)], 1.0)
    )


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(create_model("resnet8", 10, 1), seed=1)


def test_folded_loss_matches_hooked_loss_and_gradient():
    model = _bn_net()
    x0 = torch.randn(16, 1, 16, 16)
    folded = fold_batchnorm(model)
    assert folded is not None
    out = {}
    for kind in ("hooks", "folded", "folded_recovered"):
        x = x0.clone().requires_grad_(True)
        net = model if kind == "hooks" else folded.net
        with BNStatistics(model) if kind == "hooks" else folded.statistics() as st:
            net(x)
            if kind == "folded_recovered":  # the recovered BN-input statistics, through the plain loss
                loss = bn_statistic_loss(st.means, st.vars, st.running(), 10.0)  # type: ignore[arg-type]
            else:
                loss = st.loss(10.0)
        loss.backward()
        out[kind] = (loss.detach(), x.grad)
    for kind in ("folded", "folded_recovered"):
        torch.testing.assert_close(out[kind][0], out["hooks"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[kind][1], out["hooks"][1], rtol=1e-3, atol=1e-6)


def test_channel_mean_var_unshifted_and_shifted_paths_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, 8, 8, generator=g) * 2 + 1  # mean small against the spread: no shift needed
    key = nn.Identity()
    mean, var = stats.channel_mean_var(x, key)
    assert key not in stats._NEEDS_SHIFT
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, ref_mean.float())
    torch.testing.assert_close(var, ref_var.float())
    far = x * 0.01 + 100.0  # large mean: the shifted sums, remembered for the key
    _, var = stats.channel_mean_var(far, key)
    assert stats._NEEDS_SHIFT.get(key) is True
    ref_far = far.double().var(dim=(0, 2, 3), unbiased=False).float()
    torch.testing.assert_close(var, ref_far, rtol=1e-3, atol=0)
    x.requires_grad_(True)
    mean, var = stats.channel_mean_var(x, key)  # shifted path now, same values
    torch.testing.assert_close(var, ref_var.float())
    xd = torch.randn(3, 2, 2, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: stats.channel_mean_var(t, nn.Identity()), (xd,))


def _tv_ref(x):
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))


@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 1, 1, 4)])
def test_tv_l2_matches_autograd_version(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(tv_l2(x), _tv_ref(x))
    torch.testing.assert_close(torch.autograd.grad(tv_l2(x), x)[0], torch.autograd.grad(_tv_ref(x), x)[0])
    assert torch.autograd.gradcheck(tv_l2, (x,))


@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 1, 1, 4)])
def test_image_priors_one_node_matches_tv_l2_and_l2_prior(shape):
    """Both priors in one node: the same values, the gradient of any weighted sum, 0 for a zero image."""
    x = torch.randn(shape, dtype=torch.float64)
    x[0] = 0.0  # a zero image: the l2 prior's gradient is 0 there (vector_norm's subgradient)
    x.requires_grad_(True)
    tv, l2 = image_priors(x)
    torch.testing.assert_close(tv, _tv_ref(x))
    torch.testing.assert_close(l2, l2_prior(x))
    for w_tv, w_l2 in ((1.0, 0.0), (0.0, 1.0), (0.3, 2.5)):
        got = torch.autograd.grad(w_tv * tv + w_l2 * l2, x, retain_graph=True)[0]
        ref = torch.autograd.grad(w_tv * _tv_ref(x) + w_l2 * l2_prior(x), x)[0]
        torch.testing.assert_close(got, ref)
    assert torch.equal(torch.autograd.grad(l2, x)[0][0], torch.zeros_like(x[0]))
    nonzero = x.detach()[1:].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sum(image_priors(t)), (nonzero,))
    assert image_priors(x, l2=False)[1] is None


def test_random_jitter_is_torch_roll_with_the_same_draws():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    for seed in range(6):
        got = random_jitter(x, 3, torch.Generator().manual_seed(seed))
        dx, dy = torch.randint(-3, 4, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
        torch.testing.assert_close(got, torch.roll(x, shifts=(dx, dy), dims=(2, 3)))
    assert torch.autograd.gradcheck(lambda t: random_jitter(t, 2, torch.Generator().manual_seed(1)), (x,))


def test_keep_best_returns_the_lowest_loss_pixels(bn_teacher):
    s = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, batch_size=4, iterations=8,
                            lr=5.0, warmup=1)  # fmt: skip  # a large step: the loss goes up and down
    s.reset(4, torch.Generator().manual_seed(0))
    before, totals = [], []
    for _ in range(4):
        before.append(s.inputs.detach().clone())
        totals.append(float(s.step()["total"]))
    best = min(range(len(totals)), key=totals.__getitem__)
    assert best < len(totals) - 1  # not simply the last pixels
    torch.testing.assert_close(s.sample().images, before[best])
    assert float(s.best_loss) == totals[best]


def test_batch_done_takes_the_bn_hooks_off(bn_teacher):
    s = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, batch_size=4, iterations=3)
    assert s.folded is not None
    modules = [layer.module for layer in s.folded.layers]
    s.synthesize(4, torch.Generator().manual_seed(0))
    assert all(len(m._forward_hooks) == 0 for m in modules)


def test_random_jitter_block_copies_equal_torch_roll(monkeypatch):
    """Above ROLL_MAX_NUMEL the jitter is the one-pass block copies: the same values and gradient."""
    from datafree import augment

    monkeypatch.setattr(augment, "ROLL_MAX_NUMEL", 0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    for seed in range(6):
        got = random_jitter(x, 3, torch.Generator().manual_seed(seed))
        dx, dy = torch.randint(-3, 4, (2,), generator=torch.Generator().manual_seed(seed)).tolist()
        assert torch.equal(got, torch.roll(x, shifts=(dx, dy), dims=(2, 3)))
        assert got.grad_fn is not None and "Roll2d" in type(got.grad_fn).__name__
    assert torch.autograd.gradcheck(lambda t: random_jitter(t, 2, torch.Generator().manual_seed(1)), (x,))


def _adam_pair(**kw):
    torch.manual_seed(0)
    a = torch.randn(3, 1, 5, 5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    return (a, torch.optim.Adam([a], lr=0.05, betas=(0.5, 0.9), fused=True, **kw),
            b, torch.optim.Adam([b], lr=0.05, betas=(0.5, 0.9), fused=True, **kw))  # fmt: skip


def test_direct_fused_adam_step_is_optimizer_step_bit_for_bit():
    from generators.deepinversion import _fused_adam_step

    a, opt_a, b, opt_b = _adam_pair()
    for i in range(6):
        g = torch.randn(a.shape, generator=torch.Generator().manual_seed(i))
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.param_groups[0]["lr"] = opt_b.param_groups[0]["lr"] = 0.05 / (i + 1)
        opt_a.step()
        direct = _fused_adam_step(opt_b)
        assert direct == (i > 0)  # the first step makes the state through Optimizer.step
        if not direct:
            opt_b.step()
        assert torch.equal(a, b)
    sa, sb = opt_a.state_dict()["state"][0], opt_b.state_dict()["state"][0]
    assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize("kw", [{"weight_decay": 0.1}, {"amsgrad": True}, {"maximize": True}])
def test_direct_fused_adam_step_leaves_other_settings_to_the_optimizer(kw):
    from generators.deepinversion import _fused_adam_step

    a, opt_a, _, _ = _adam_pair(**kw)
    a.grad = torch.ones_like(a)
    opt_a.step()
    assert not _fused_adam_step(opt_a)
    unfused = torch.optim.Adam([a], lr=0.1)  # not fused: the optimizer's own step
    unfused.step()
    assert not _fused_adam_step(unfused)
