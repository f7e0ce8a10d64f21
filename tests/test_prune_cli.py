"""``datafree prune`` and the prune stage of ``datafree compress``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli

ROOT = Path(__file__).resolve().parent.parent
TINY_SYNTH = ["--set", "iterations=3", "--set", "warmup=1", "--set", "batch_size=16"]
TINY_KD = ["--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "16"]


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_prune_cli_output_passes_evaluate_in_a_new_process(tmp_path):
    out = tmp_path / "p"
    r = _invoke("prune", "--model", "resnet8_digits", "--ratio", 0.5, "--epochs", 0, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert "removed" in r.output and (out / "model.json").is_file()
    rep = json.loads((out / "report.json").read_text())
    # a new process in another directory, given nothing but the card: `datafree evaluate`
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "evaluate", "--model", str(out / "model.json"), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["accuracy"] == pytest.approx(rep["stages"]["pruned"]["accuracy"])
    assert res["params"] == rep["stages"]["pruned"]["params"] < 0.4 * 77754


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--ratio", "1.5"], "--ratio must be"),
        (["--ratio", "0.5", "--data", "{tmp}", "--method", "deepinversion"], "exactly one"),
        (["--ratio", "0.5"], "exactly one of --data DIR"),
        (["--ratio", "0.5", "--epochs", "0", "--importance", "taylor"], "exactly one of --data DIR"),
    ],
)
def test_prune_cli_user_errors(tmp_path, args, msg):
    r = _invoke(
        "prune",
        "--model",
        "resnet8_digits",
        "--out",
        tmp_path / "o",
        *[a.replace("{tmp}", str(tmp_path)) for a in args],
    )
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_prune_cli_bn_needs_batchnorm(tmp_path):
    r = _invoke(
        "prune",
        "--model",
        "lenet5_digits",
        "--ratio",
        0.5,
        "--importance",
        "bn",
        "--epochs",
        0,
        "--out",
        tmp_path,
    )
    assert r.exit_code == 2 and "BatchNorm" in r.output


def test_compress_prunes_the_teacher_when_no_student_is_given(tmp_path):
    out = tmp_path / "c"
    r = _invoke(
        "compress", "--out", out, "--num-images", 16, "--prune", 0.5, "--quiet", *TINY_KD, *TINY_SYNTH
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert "student" not in rep and set(rep["profile"]) == {"teacher", "pruned"}
    for stage in rep["profile"].values():
        assert {"accuracy", "params", "macs", "size_bytes", "latency_ms_b1", "latency_ms_b64"} <= set(stage)
    assert rep["profile"]["pruned"]["params"] < 0.4 * rep["profile"]["teacher"]["params"]
    assert rep["final_card"] == str(out / "prune" / "model.json")
    assert rep["prune"]["source"]["data"] == str(out / "data")


def test_compress_student_then_prune(tmp_path):
    out = tmp_path / "c"
    r = _invoke("compress", "--out", out, "--num-images", 16, "--student", "resnet8_half", "--prune", 0.3,
                "--no-baseline", "--quiet", *TINY_KD, *TINY_SYNTH)  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    prof = rep["profile"]
    assert set(prof) == {"teacher", "student", "pruned"}
    assert prof["teacher"]["params"] > prof["student"]["params"] > prof["pruned"]["params"]
    assert json.loads((out / "prune" / "model.json").read_text())["arch"] == "resnet8_half"


def test_compress_prune_then_quantize(tmp_path):
    out = tmp_path / "c"
    r = _invoke("compress", "--out", out, "--num-images", 16, "--prune", 0.5, "--quantize", "W8A8", "--quiet",
                *TINY_KD, *TINY_SYNTH)  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    prof = rep["profile"]
    assert list(prof) == ["teacher", "pruned", "quantized"]
    assert prof["quantized"]["size_bytes"] < prof["pruned"]["size_bytes"]
    assert prof["quantized"]["params"] == prof["pruned"]["params"]
    assert "latency_ms_b64" in prof["quantized"] and "accuracy_int8" in prof["quantized"]
    assert rep["final_card"] == str(out / "quantize" / "model.json")
    r = _invoke("evaluate", "--model", out / "quantize", "--json")  # the pruned + quantized card loads
    assert r.exit_code == 0 and json.loads(r.output)["accuracy"] == pytest.approx(
        prof["quantized"]["accuracy"], abs=1e-4
    )


@pytest.mark.parametrize("spec, msg", [("W8", "W8A8"), ("W9A8", "bits")])
def test_compress_quantize_spec_errors(tmp_path, spec, msg):
    r = _invoke("compress", "--out", tmp_path / "c", "--quantize", spec, "--num-images", 4)
    assert r.exit_code == 2 and msg in r.output, r.output
