"""The compute budget as a user setting: ``--budget TIME|off`` on compress and distill (``budget_s``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch


def _loaded(arch: str, shape: tuple[int, int, int]):
    from datafree.cards import LoadedModel, ModelCard
    from datafree.models import create_model

    torch.manual_seed(0)
    card = ModelCard(arch=arch, weights="", num_classes=10, input_shape=list(shape),
                     mean=[0.5] * shape[0], std=[0.5] * shape[0])  # fmt: skip
    return LoadedModel(create_model(arch, 10, shape[0]).eval(), card)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900.0), ("900s", 900.0), ("15m", 900.0), ("1.5h", 5400.0), (" 2M ", 120.0), ("off", math.inf),
     ("None", math.inf), ("inf", math.inf)],
)  # fmt: skip
def test_budget_option_reads_seconds_minutes_hours_and_off(text: str, seconds: float) -> None:
    from cli import _budget

    assert _budget(None, None, text) == seconds  # type: ignore[arg-type]
    assert _budget(None, None, None) is None  # type: ignore[arg-type]  # not given: the default


@pytest.mark.parametrize("bad", ["0", "-5m", "15x", "-inf", "nan", "m", "", "1e400"])
def test_bad_budget_is_one_line_and_exit_2(run, bad: str, tmp_path: Path) -> None:
    for command in ("compress", "distill"):
        res = run(command, "--teacher", "resnet8_digits", "--method", "nayer", "--budget", bad,
                  "--out", tmp_path / command)  # fmt: skip
        assert res.exit_code == 2, res.output
        assert "--budget" in res.output and "Traceback" not in res.output
        assert not (tmp_path / command).exists()  # nothing written


def test_plan_budget_scales_a_run_both_ways_and_off_keeps_the_backends_settings(bn_teacher) -> None:
    """A smaller budget cuts, a larger one lets an expensive run keep more, off cuts and grows nothing."""
    from datafree.plan import plan
    from datafree.rules import RUN_BUDGET_CPU_S

    default = plan(bn_teacher, method="cmi").info["compute_budget"]
    assert default["budget_s"] == RUN_BUDGET_CPU_S and default["grown"]  # 2,048 images (session 22)
    assert default["notches"] == ["num_images 1024 -> 2048"]
    small = plan(bn_teacher, method="cmi", budget_s=0.5 * default["estimate_s"])
    b = small.info["compute_budget"]
    assert b["capped"] and b["capped_estimate_s"] <= 0.5 * default["estimate_s"] == b["budget_s"]
    assert small.kd.epochs < 60 or small.num_images < 1024
    # fast's written images grow into the default's room (4,096); off: the backend's own 1,024
    assert plan(bn_teacher, method="fast").num_images == 4096
    off = plan(bn_teacher, method="fast", budget_s=math.inf)
    b = off.info["compute_budget"]
    assert off.num_images == 1024 and not b["capped"] and not b["grown"] and not b["over_budget"]
    assert b["budget_s"] is None and "--budget off" in b["rule"]
    json.dumps(b, allow_nan=False)  # the report stays standard JSON

    big = _loaded("wrn40_2", (3, 32, 32))  # an expensive pool run that the default budget cuts
    plans = {
        B: plan(big, method="nayer", pool=True, budget_s=B) for B in (None, 2 * RUN_BUDGET_CPU_S, math.inf)
    }
    cut, more, full = (plans[B].info["compute_budget"] for B in plans)
    assert cut["capped"] and cut["capped_estimate_s"] <= RUN_BUDGET_CPU_S
    assert cut["capped_estimate_s"] < more["capped_estimate_s"] <= 2 * RUN_BUDGET_CPU_S
    assert not full["capped"] and full["settings"] == {"epochs": 30, "batch_size": 64, "iterations": 20}
    assert plans[math.inf].kd.batch_size == 64 and plans[math.inf].synthesizer.config.iterations == 20


def test_auto_pool_cap_scales_with_the_budget() -> None:
    """``--method auto``'s MAC cap on the pool follows the budget: WRN-40-2 keeps more KD epochs, off 30."""
    from datafree.plan import auto_choice
    from datafree.rules import RUN_BUDGET_CPU_S, RUN_MAX_MACS, run_max_macs

    assert run_max_macs() == run_max_macs(RUN_BUDGET_CPU_S) == RUN_MAX_MACS
    assert run_max_macs(2 * RUN_BUDGET_CPU_S) == 2 * RUN_MAX_MACS and run_max_macs(math.inf) == math.inf
    wrn = _loaded("wrn40_2", (3, 32, 32))
    default = auto_choice(wrn.model, wrn.card)
    more = auto_choice(wrn.model, wrn.card, budget_s=2 * RUN_BUDGET_CPU_S)
    off = auto_choice(wrn.model, wrn.card, budget_s=math.inf)
    assert default["pool"] and default["compute"]["capped_run_macs"] <= RUN_MAX_MACS
    assert default["kd"]["epochs"] < more["kd"].get("epochs", 30)
    assert "epochs" not in off["compute"] and off["compute"]["max_run_macs"] is None
    json.dumps(off["compute"], allow_nan=False)


def test_compress_budget_reaches_the_report(run, bn_teacher, tmp_path: Path) -> None:
    """``compress --budget``: the plan follows it and report.json says which budget ran."""
    out = tmp_path / "off"
    common = ["--teacher", "resnet8_digits", "--method", "nayer", "--student", "resnet8_quarter",
              "--no-baseline", "--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "8",
              "--set", "iterations=1", "--set", "batch_size=32", "-n", "32", "-q"]  # fmt: skip
    res = run("compress", *common, "--budget", "off", "--out", out)
    assert res.exit_code == 0, res.output
    b = json.loads((out / "report.json").read_text())["compute_budget"]
    assert b["budget_s"] is None and "--budget off" in b["rule"]
    res = run("compress", "--config", out / "config.yaml", "--out", tmp_path / "replay")  # the run replayed
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "replay" / "report.json").read_text())["compute_budget"]["budget_s"] is None
    res = run("compress", *common, "--budget", "2m", "--out", tmp_path / "two")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "two" / "report.json").read_text())["compute_budget"]["budget_s"] == 120


def test_distill_passes_its_budget_to_the_plan(run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``distill --budget`` reaches plan() (online backends and ``--pool`` are budgeted there)."""
    from datafree import plan as plan_mod
    from datafree.errors import UserInputError

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("budget_s"))
        raise UserInputError("stop here")

    monkeypatch.setattr(plan_mod, "plan", spy)
    for given, want in (("off", math.inf), ("20m", 1200.0), (None, None)):
        extra = ["--budget", given] if given else []
        res = run("distill", "--teacher", "lenet5_digits", "-m", "dafl", *extra, "--out", tmp_path / "d")
        assert res.exit_code == 2 and "stop here" in res.output
        assert seen[-1] == want


def test_a_plan_the_budget_changed_is_one_line_on_stderr(run, bn_teacher, tmp_path: Path) -> None:
    """The user sees why the settings are not the backend's, and the option that changes it; -q hides it."""
    from datafree.plan import budget_note, plan

    assert budget_note(plan(bn_teacher, method="deepinversion").info) is None  # fits as it is: nothing to say
    grown = budget_note(plan(bn_teacher, method="cmi").info)  # room left: the images it grew to (session 22)
    assert grown is not None and "num_images 1024 -> 2048" in grown and "--budget" in grown
    line = budget_note(plan(bn_teacher, method="cmi", budget_s=60).info)
    assert line is not None and line.startswith("compute budget: estimated") and "--budget" in line
    args = ["compress", "--teacher", "resnet8_digits", "--method", "nayer", "--student", "resnet8_quarter",
            "--no-baseline", "--epochs", "1", "--steps-per-epoch", "2", "--set", "iterations=1",
            "--set", "batch_size=32", "-n", "32", "--budget", "0.05"]  # fmt: skip
    res = run(*args, "--out", tmp_path / "loud")
    assert res.exit_code == 0, res.output
    assert "compute budget: estimated" in res.output and "batch_size 128 -> " in res.output
    res = run(*args, "-q", "--out", tmp_path / "quiet")
    assert res.exit_code == 0 and "compute budget" not in res.output


def test_budget_plans_bench_shows_the_pool_compress_runs(monkeypatch: pytest.MonkeyPatch, bn_teacher) -> None:
    """bench/budget_plans.py plans what compress runs: NAYER's pool on a costly teacher, else its images."""
    import datafree.cards
    from bench.budget_plans import _settings, plan_row

    monkeypatch.setattr(datafree.cards, "load_model", lambda *a, **k: _loaded("wrn40_2", (3, 32, 32)))
    big = plan_row("wrn", "nayer", torch.device("cpu"))
    assert big["pool"] and _settings(big).startswith("pool, ")
    assert not plan_row("wrn", "nayer", torch.device("cpu"), {"num_images": 256})["pool"]  # -n: written
    auto = plan_row("wrn", "auto", torch.device("cpu"))  # compress's default path: Fast-5's capped pool
    assert auto["pool"] and "the pool" in auto["path"] and "Fast-10" not in auto["path"]
    assert auto["settings"]["iterations"] < 10 and auto["kd"]["epochs"] < 30
    monkeypatch.setattr(datafree.cards, "load_model", lambda *a, **k: bn_teacher)
    small = plan_row("resnet8_digits", "nayer", torch.device("cpu"))
    assert not small["pool"] and small["num_images"] == 8192 and _settings(small).startswith("8192 images")
    auto = plan_row("resnet8_digits", "auto", torch.device("cpu"))  # 1x the reference: DeepInversion's images
    assert not auto["pool"] and "<= 2x" in auto["path"]
