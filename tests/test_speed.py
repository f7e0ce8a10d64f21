"""Fused BN statistics, the Fast-Datafree backend and the growing pool source."""

from __future__ import annotations

import json

import pytest
import torch

from datafree.distill import KDConfig, distill
from datafree.hooks import BNStatistics
from datafree.models import create_model
from datafree.sources import PoolSource
from datafree.stats import channel_mean_var
from generators import create_synthesizer, method_class
from tests.conftest import COMPRESS_TINY, SYNTH_TINY


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (6, 4), (3, 2, 4, 4, 2)])
def test_channel_mean_var_matches_var_mean_and_gradcheck(shape):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_(True)
    mean, var = channel_mean_var(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, *range(2, x.dim())), unbiased=False)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)
    assert torch.autograd.gradcheck(channel_mean_var, (x,))


def test_channel_mean_var_one_output_used():
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    mean, _ = channel_mean_var(x)
    (mean * torch.arange(3.0)).sum().backward()
    expected = torch.arange(3.0).view(1, 3, 1, 1).expand_as(x) / 16
    torch.testing.assert_close(x.grad, expected)


def test_channel_mean_var_large_offset_is_accurate():
    x = torch.randn(64, 4, 8, 8) * 0.1 + 100.0  # mean large against the spread
    _, var = channel_mean_var(x)
    ref = x.double().var(dim=(0, 2, 3), unbiased=False).float()
    torch.testing.assert_close(var, ref, rtol=2e-2, atol=1e-4)


def test_bn_statistics_hook_uses_fused_statistics(bn_teacher):
    x = torch.randn(5, *bn_teacher.card.input_shape)
    layer = BNStatistics(bn_teacher.model).layers[0]
    seen = {}

    def keep_input(module, inputs, output):
        seen["x"] = inputs[0].detach().clone()

    handle = layer.register_forward_hook(keep_input)
    try:
        with BNStatistics(bn_teacher.model) as stats:
            bn_teacher.model(x)
            mean, var = stats.means[0], stats.vars[0]
    finally:
        handle.remove()
    ref_var, ref_mean = torch.var_mean(seen["x"], dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var, ref_var, rtol=1e-4, atol=1e-5)


def test_fast_meta_generator_learns_across_rounds(bn_teacher):
    """The persistent generator changes after a round, and later rounds start from a lower loss."""
    synth = create_synthesizer("fast", bn_teacher.model, bn_teacher.card, batch_size=32, iterations=3)
    before = [p.detach().clone() for p in synth.meta_generator.parameters()]
    first_losses = []
    for r in range(6):
        synth.reset(32, torch.Generator().manual_seed(r))
        first_losses.append(synth.step()["total"].item())
        for _ in range(2):
            synth.step()
    assert synth.rounds == 6 and synth.bn_ema.average is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, synth.meta_generator.parameters(), strict=True))
    assert min(first_losses[-2:]) < first_losses[0]


@pytest.mark.parametrize("meta", ["fomaml", "reptile"])
def test_fast_meta_rules_update_the_generator(bn_teacher, meta):
    synth = create_synthesizer(
        "fast", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, meta=meta
    )
    before = [p.detach().clone() for p in synth.meta_generator.parameters()]
    batch = synth.synthesize(8, torch.Generator().manual_seed(0))
    assert batch.images.shape == (8, *bn_teacher.card.input_shape)
    assert any(not torch.equal(a, b) for a, b in zip(before, synth.meta_generator.parameters(), strict=True))


def test_fast_bad_meta_rule_is_a_user_error(bn_teacher):
    from datafree.errors import UserInputError

    with pytest.raises(UserInputError, match="meta"):
        create_synthesizer("fast", bn_teacher.model, bn_teacher.card, meta="maml2")


def test_fast_adversarial_term_needs_a_student(bn_teacher):
    from datafree.errors import UserInputError

    synth = create_synthesizer(
        "fast", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=2, adv_weight=1.0
    )
    synth.reset(8, torch.Generator().manual_seed(0))
    with pytest.raises(UserInputError, match="student"):
        synth.step()
    student = create_model("resnet8_quarter", 10, 1)
    logs = synth.step(student)
    assert "adv" in logs and torch.isfinite(logs["adv"])


def test_pool_source_grows_then_stops_and_feeds_distill(bn_teacher):
    # the pool loop's settings (FastDatafree.pool_options: no warm-up rounds)
    synth = create_synthesizer(
        "fast", bn_teacher.model, bn_teacher.card, batch_size=16, iterations=2, warmup_rounds=0
    )
    source = PoolSource(synth, max_images=40, seed=0)
    torch.manual_seed(0)
    student = create_model("resnet8_quarter", 10, 1)
    cfg = KDConfig(epochs=1, steps_per_epoch=8, kd_steps=2, batch_size=8)
    distill(bn_teacher.model, student, source, cfg, input_shape=bn_teacher.card.input_shape)
    assert source.count == 40 and synth.rounds == 3  # 16 + 16 + 8, then full
    state = source.state_dict()
    clone = PoolSource(
        create_synthesizer("fast", bn_teacher.model, bn_teacher.card, batch_size=16, iterations=2), 16, 40
    )
    clone.load_state_dict(state)
    assert clone.count == 40
    torch.testing.assert_close(clone.next_batch(5), source.next_batch(5))


def test_synthesize_dataset_with_fast(bn_teacher, tmp_path):
    from datafree.dataset import SyntheticDataset
    from datafree.synthesis import synthesize_dataset

    ds = synthesize_dataset(bn_teacher, "fast", tmp_path / "d", 20, batch_size=8, iterations=2)
    data = SyntheticDataset.open(ds.root).load()
    assert data["images"].shape == (20, *bn_teacher.card.input_shape)
    assert data["images"].min() >= 0 and data["images"].max() <= 1


def test_cli_synthesize_and_compress_with_fast(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    runner = CliRunner()
    r = runner.invoke(
        cli,
        ["synthesize", "--method", "fast", *SYNTH_TINY, "-o", str(tmp_path / "d")],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert "12 images" in r.output
    args = ["compress", "--method", "fast", *COMPRESS_TINY, "-o", str(tmp_path / "c")]
    r = runner.invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["method"] == "fast" and report["data"]["num_images"] == 16


def test_cli_distill_pool_trains_on_a_growing_pool_and_resumes(run, tmp_path):
    from safetensors.torch import load_file

    args = [
        "distill",
        "--method",
        "fast",
        "--pool",
        "--student",
        "resnet8_quarter",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "20",
        "--kd-batch-size",
        "16",
        "--set",
        "iterations=1",
        "-q",
        "--threads",
        "1",
    ]
    r = run(*args, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    # one round per epoch (20 KD steps per round): two batches of pool_batch_size images
    assert state["source"]["images"].shape[0] == 2 * method_class("fast").pool_batch_size
    card = json.loads((tmp_path / "a" / "model.json").read_text())
    assert card["training"]["kd"]["lr"] == 0.1 and card["training"]["kd"]["kd_steps"] == 20
    # a killed run keeps its checkpoint: rerunning the same command finishes to the same student
    (tmp_path / "a" / "model.json").unlink()
    before = load_file(tmp_path / "a" / "model.safetensors")
    r = run(*args, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    after = load_file(tmp_path / "a" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_strided_conv_backward_bench_polyphase_equals_aten():
    """The bench's polyphase input gradient equals ATen's (groups, stride 3, an even kernel)."""
    from bench.strided_conv_backward import CHECKS, measure

    for case in CHECKS:
        assert measure(case, timed=False)["relative_l2_difference"] < 1e-6


def test_di_step_phases_bench_times_every_phase(tmp_path):
    """The phases bench runs the real step and accounts for it: each phase timed, the update included."""
    import json

    from bench.di_step_phases import main

    out = tmp_path / "phases.json"
    main(["--teachers", "resnet8_digits", "--batch", "8", "--threads", "1", "--rounds", "3", "--warmup", "2",
          "--out", str(out)])  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    ms = row["median_ms"]
    for phase in ("forward", "statistics", "optimiser", "backward and rest", "bare forward", "bare backward"):
        assert ms[phase] > 0, phase
    assert ms["statistics"] < ms["step"] and ms["forward"] < ms["step"]
    assert row["step_over_bare"] > 0
