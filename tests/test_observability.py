"""Issue 13: precision options, progress lines, metrics.jsonl, --tensorboard, plot, report resources."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datafree import metrics, precision
from datafree.distill import KDConfig, distill
from datafree.hooks import BNStatistics
from datafree.models import create_model
from datafree.progress import LineProgress, progress, set_log_every, set_quiet
from datafree.sources import TensorSource
from generators import create_synthesizer

TINY_DI = ["--iterations", 4, "--batch-size", 8]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _reset_options():
    yield
    precision.configure()  # process-wide options back to fp32 for the tests that follow
    metrics.close_run()
    set_log_every(30.0)
    set_quiet(False)


# --- progress ---------------------------------------------------------------------------------
def test_line_progress_writes_stage_step_loss_rate_eta_to_a_non_tty_stream():
    stream = io.StringIO()
    bar = LineProgress(total=4, desc="distill", stream=stream, interval=0.001)
    for _ in range(4):
        time.sleep(0.002)
        bar.set_postfix(loss=0.5)
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[-1].startswith("[datafree] distill: 4/4 (100%)")
    assert "loss 0.5" in lines[0] and "it/s" in lines[0] and "ETA" in lines[0]


def test_line_progress_waits_one_interval_before_its_first_line():
    stream = io.StringIO()
    bar = LineProgress(range(3), desc="x", stream=stream, interval=60)
    assert list(bar) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_progress_is_lines_off_terminal_and_nothing_when_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY
    assert isinstance(progress(range(2), desc="s"), LineProgress)
    set_quiet(True)
    assert not isinstance(progress(range(2), desc="s"), LineProgress)


# --- precision ----------------------------------------------------------------------------------
def test_precision_resolution_and_fp16_refused_on_cpu():
    from datafree.errors import UserInputError

    native = precision.cpu_has_native_bf16()
    assert precision.resolve_precision("auto", "cpu") == (
        "bf16" if native and precision.AUTO_CPU_BF16 else "fp32"
    )
    assert precision.resolve_precision("auto", "cpu", "kd") == "fp32"
    assert precision.resolve_precision("auto", "cpu", "generator") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserInputError, match="fp16 needs a GPU"):
        precision.resolve_precision("fp16", "cpu")
    with pytest.raises(UserInputError, match="must be one of"):
        precision.resolve_precision("fp8", "cpu")


def test_bf16_autocast_keeps_bn_statistics_and_losses_in_fp32(bn_teacher):
    precision.configure("bf16", channels_last=True)
    x = torch.randn(4, *bn_teacher.card.input_shape)
    with BNStatistics(bn_teacher.model) as stats, precision.autocast("cpu"):
        logits = bn_teacher.model(precision.prepare_input(x))
        means = list(stats.means)
    assert logits.dtype == torch.bfloat16
    assert all(m is not None and m.dtype == torch.float32 for m in means)
    synth = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, batch_size=8, iterations=3)
    logs = synth.step()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in logs.values())
    bn_teacher.model.to(memory_format=torch.contiguous_format)


def test_bf16_distill_trains_and_matches_fp32_closely(bn_teacher):
    images = torch.randn(64, *bn_teacher.card.input_shape, generator=torch.Generator().manual_seed(0))
    losses = {}
    for p in ("fp32", "bf16"):
        precision.configure(p)
        torch.manual_seed(0)
        student = create_model("resnet8_quarter", 10, 1)
        cfg = KDConfig(epochs=2, steps_per_epoch=4, batch_size=16, augment=False)
        res = distill(bn_teacher.model, student, TensorSource(images), cfg)
        losses[p] = [h["loss"] for h in res.history]
    assert all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())
    assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.1 * losses["fp32"][-1] + 0.05


def test_cli_fp16_on_cpu_is_one_line_exit_2(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    r = CliRunner().invoke(
        cli, ["synthesize", "-n", "4", "--out", str(tmp_path / "d"), "--precision", "fp16"]
    )
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: --precision fp16 needs a GPU") and r.output.count("\n") == 1


# --- metrics.jsonl, progress lines through the CLI, tensorboard, plot -----------------------------
def test_synthesize_writes_metrics_jsonl_with_every_loss_term_and_progress_lines(run, tmp_path):
    ds = tmp_path / "ds"
    r = run("synthesize", "-n", 8, "--out", ds, "--log-every", 0.0001, "--precision", "bf16", *TINY_DI)
    assert r.exit_code == 0, r.output
    assert "[datafree] batch 1/1:" in r.output and "ETA" in r.output  # stderr is not a TTY here
    recs = [json.loads(line) for line in (ds / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["stage"] == "synthesize"]
    assert [r["step"] for r in steps] == [1, 4]  # the first, every 10th and the last
    for key in ("ce", "bn", "tv_l2", "l2", "total", "lr", "total_steps", "method"):
        assert key in steps[0], key
    assert steps[-1]["images_per_s"] > 0


def test_distill_metrics_have_loss_lr_images_per_s_and_epoch_records(run, tmp_path):
    ds, out = tmp_path / "ds", tmp_path / "student"
    assert run("synthesize", "-n", 16, "--out", ds, "--quiet", *TINY_DI).exit_code == 0
    args = ["distill", "--data", ds, "--out", out, "--epochs", 2, "--steps-per-epoch", 10]
    args += ["--kd-batch-size", 8]
    r = run(*args, "--quiet", "--channels-last")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r.get("stage") == "distill" and "event" not in r]
    assert [r["step"] for r in steps] == [1, 10, 20]
    assert all({"loss", "lr", "epoch"} <= set(r) for r in steps) and steps[-1]["images_per_s"] > 0
    assert [r["epoch"] for r in recs if r.get("event") == "epoch"] == [1, 2]
    png = run("plot", out)
    assert png.exit_code == 0, png.output
    data = (out / "metrics.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    # a rerun (resume) accepts the directory with its logs and plot in it
    assert run(*args, "--quiet").exit_code == 0


def test_plot_without_metrics_is_a_user_error(run, tmp_path):
    from click.testing import CliRunner

    from cli import cli

    r = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert r.exit_code == 2 and "has no metrics.jsonl" in r.output


def test_tensorboard_writes_scalars_and_samples(run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ds = tmp_path / "ds"
    r = run("synthesize", "-n", 8, "--out", ds, "--quiet", "--tensorboard", *TINY_DI)
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(ds / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert {"synthesize/bn", "synthesize/ce", "synthesize/total"} <= set(tags["scalars"])
    assert "samples/deepinversion" in tags["images"]


def test_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli import cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails
    r = CliRunner().invoke(cli, ["synthesize", "-n", "4", "--out", str(tmp_path / "d"), "--tensorboard"])
    assert r.exit_code == 2
    assert "pip install 'datafree[tensorboard]'" in r.output and r.output.count("\n") == 1


def test_compress_report_has_peak_memory_and_images_per_s_per_stage(run, tmp_path):
    out = tmp_path / "c"
    r = run(
        "compress",
        "--out",
        out,
        "-n",
        16,
        "--iterations",
        3,
        "--epochs",
        1,
        "--steps-per-epoch",
        4,
        "--kd-batch-size",
        8,
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    res = rep["stages_resources"]
    assert set(res) == {"synthesize", "distill", "baseline"}
    for stage in res.values():
        assert (
            stage["peak_memory_mb"] > 50 and stage["images_per_s"] > 0 and stage["memory"].startswith("rss")
        )
    assert rep["precision"]["kd_precision"] == "fp32" and rep["precision"]["channels_last"] is False
    stages = {json.loads(line).get("stage") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {"synthesize", "distill", "noise baseline"} <= stages


def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "GPU_CHECK_OUT": str(out), "PYTHON": sys.executable},
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu"
    di = [r for r in res["rows"] if r["kind"] == "di_vs_bare"]
    assert {r["precision"] for r in di} == {"fp32", "bf16"} and all(r["ratio"] > 0 for r in di)
    assert any(r["kind"] == "kd" and r["images_per_s"] > 0 for r in res["rows"])


def test_channel_mean_var_channels_last_path_matches_and_has_gradients():
    from datafree.stats import channel_mean_var

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 5, 4, 3, generator=g, dtype=torch.float64) * 2 + 50).contiguous(
        memory_format=torch.channels_last
    )
    x.requires_grad_(True)
    mean, var = channel_mean_var(x)
    ref_var, ref_mean = torch.var_mean(x.detach(), dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)
    assert torch.autograd.gradcheck(channel_mean_var, (x,))
