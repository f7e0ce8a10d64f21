import json

import pytest
from click.testing import CliRunner

from cli import cli
from tests.conftest import KD_TINY

TINY = ["--iterations", "3", "--set", "warmup=1"]


def test_listing_commands(run):
    assert "resnet8_digits" in run("teachers").output
    assert "lenet5" in run("models").output
    assert "deepinversion" in run("methods").output


def test_evaluate_json(run):
    r = run("evaluate", "--model", "resnet8_digits", "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["accuracy"] > 0.97 and d["num_samples"] == 360 and d["params"] > 0


def test_synthesize_export_distill_evaluate(run, tmp_path):
    ds = tmp_path / "ds"
    r = run(
        "synthesize",
        "--teacher",
        "resnet8_digits",
        "--num-images",
        16,
        "--batch-size",
        8,
        "--out",
        ds,
        "--quiet",
        *TINY,
    )
    assert r.exit_code == 0, r.output
    assert "wrote 16 images" in r.output
    r = run("export", ds, "--format", "npz", "--out", tmp_path / "d.npz")
    assert r.exit_code == 0 and (tmp_path / "d.npz").is_file()
    out = tmp_path / "student"
    r = run(
        "distill",
        "--teacher",
        "resnet8_digits",
        "--data",
        ds,
        "--out",
        out,
        "--epochs",
        1,
        "--steps-per-epoch",
        2,
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "resnet8_half" and card["input_shape"] == [1, 16, 16]
    r = run("evaluate", "--model", out / "model.json", "--data", tmp_path / "d.npz", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["num_samples"] == 16


@pytest.mark.parametrize(
    "args, msg",
    [
        (["evaluate", "--model", "nope.json"], "model card not found"),
        (["synthesize", "--num-images", "0", "--out", "x"], "must be > 0"),
        (
            ["synthesize", "--method", "nosuch", "--num-images", "4", "--out", "{tmp}/x"],
            "unknown method 'nosuch'",
        ),
        (
            ["synthesize", "--teacher", "lenet5_digits", "--num-images", "4", "--out", "{tmp}/x"],
            "no BatchNorm",
        ),
        (["distill", "--out", "{tmp}/o"], "exactly one of --data"),
        (["distill", "--data", "{tmp}", "--out", "{tmp}/o"], "not a synthetic dataset"),
        (
            ["compress", "--student", "nosuch", "--out", "{tmp}/o", "--num-images", "4", "--iterations", "1"],
            "unknown architecture",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(run, tmp_path, args, msg):
    r = CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2, r.output
    assert msg in r.output
    assert "Traceback" not in r.output


def test_compress_writes_student_data_and_report(run, tmp_path):
    out = tmp_path / "c"
    r = run("compress", "--out", out, "--num-images", 16, *KD_TINY, "--quiet", "--set", "batch_size=8", *TINY)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert {"teacher", "student", "noise_baseline", "stages_seconds"} <= set(rep)
    assert set(rep["stages_seconds"]) == {"synthesize", "distill", "baseline"}
    assert (out / "model.json").is_file() and (out / "data" / "manifest.json").is_file()
