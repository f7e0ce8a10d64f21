"""``--config FILE`` (YAML), ``--kd KEY=VALUE`` and the named KD options, and OUT/config.yaml replay."""

from __future__ import annotations

import json

import pytest
import yaml

from datafree.config import parse_kd


def _distill_cfg(tmp_path, **extra):
    cfg = {
        "method": "deepinversion",
        "num-images": 8,
        "epochs": 1,
        "steps_per_epoch": 2,
        "kd-batch-size": 8,
        "set": {"iterations": 1, "warmup": 1, "batch_size": 8},
        "kd": {"weight_decay": 0.0, "grad_clip": 5},
        "momentum": 0.5,
        "hard-label-weight": 0.25,
        "quiet": True,
        **extra,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_round_trip_replays_the_run(run, tmp_path):
    cfg = _distill_cfg(tmp_path, out=str(tmp_path / "a"))
    r = run("distill", "--config", cfg)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["method"] == "deepinversion" and saved["num-images"] == 8 and saved["momentum"] == 0.5
    assert sorted(saved["set"]) == ["batch_size=8", "iterations=1", "warmup=1"]
    kd = json.loads((tmp_path / "a" / "model.json").read_text())["training"]["kd"]
    assert kd["weight_decay"] == 0.0 and kd["grad_clip"] == 5.0 and kd["momentum"] == 0.5
    assert kd["hard_label_weight"] == 0.25 and kd["epochs"] == 1
    # replay the saved config into another directory: same options, same student
    r2 = run("distill", "--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "b")
    assert r2.exit_code == 0, r2.output
    again = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in saved.items() if k != "out"}
    acc = [json.loads((tmp_path / d / "model.json").read_text())["test_accuracy"] for d in "ab"]
    assert acc[0] == acc[1]


def test_a_rerun_removes_the_config_file_a_kill_tore(run, tmp_path):
    """A run killed while writing OUT/config.yaml leaves .config.yaml.*.tmp; the rerun removes it."""
    out = tmp_path / "a"
    out.mkdir()
    torn = out / ".config.yaml.x1y2z3.tmp"
    torn.write_text("# datafree distill: half a con")
    cfg = _distill_cfg(tmp_path, out=str(out))
    r = run("distill", "--config", cfg)
    assert r.exit_code == 0, r.output
    assert not torn.exists() and not list(out.glob(".*.tmp"))
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "deepinversion"


def test_command_line_wins_over_the_config(run, tmp_path):
    cfg = _distill_cfg(tmp_path, out=str(tmp_path / "a"))
    r = run("distill", "--config", cfg, "--momentum", "0.8", "--kd", "weight_decay=0.001")
    assert r.exit_code == 0, r.output
    kd = json.loads((tmp_path / "a" / "model.json").read_text())["training"]["kd"]
    assert kd["momentum"] == 0.8 and kd["weight_decay"] == 0.001
    assert kd["grad_clip"] == 0.0  # the command line's --kd list replaces the file's, as with any option


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("methd: deepinversion\nbogus: 1\n", "unknown key(s) methd, bogus for 'distill'"),
        ("[1, 2]\n", "must be a mapping"),
        ("method: [unclosed\n", "not valid YAML"),
        ("kd: 3\n", "kd must be a mapping or a list"),
        ("epochs: [1, 2]\n", "epochs takes one value"),
        ("epochs: -1\n", "must be > 0"),
        ("kd: {nosuch: 1}\n", "unknown KD option 'nosuch'"),
        ("kd: {epochs: many}\n", "must be a int"),
    ],
)
def test_bad_configs_are_one_line_exit_2(run, tmp_path, text, expected):
    (tmp_path / "c.yaml").write_text(text)
    r = run(
        "distill", "--config", tmp_path / "c.yaml", "--method", "deepinversion", "--out", tmp_path / "o", "-q"
    )
    assert r.exit_code == 2, r.output
    assert expected in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists()


def test_missing_config_file(run, tmp_path):
    r = run("evaluate", "--config", tmp_path / "nope.yaml", "--model", "resnet8_digits")
    assert r.exit_code == 2 and "cannot read config" in r.output


def test_evaluate_and_compress_take_a_config(run, tmp_path):
    (tmp_path / "e.yaml").write_text("model: resnet8_digits\njson: true\nbatch-size: 100\n")
    r = run("evaluate", "--config", tmp_path / "e.yaml")
    assert r.exit_code == 0 and json.loads(r.output)["num_samples"] == 360
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "out": str(tmp_path / "c"),
                "num-images": 8,
                "epochs": 1,
                "steps-per-epoch": 1,
                "kd-batch-size": 8,
                "no-baseline": True,
                "iterations": 1,
                "set": ["warmup=1", "batch_size=8"],
                "optimizer": "adam",
                "lr": 0.001,
                "quiet": True,
            }
        )
    )
    r = run("compress", "--config", tmp_path / "c.yaml")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c" / "report.json").read_text())
    assert rep["kd"]["optimizer"] == "adam" and rep["kd"]["lr"] == 0.001 and "noise_baseline" not in rep
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["no-baseline"] is True


def test_parse_kd_types_every_field():
    kd = parse_kd(["optimizer=adam", "lr=0.1", "epochs=3", "augment=false", "flip=yes", "loss=l1"])
    assert kd == {"optimizer": "adam", "lr": 0.1, "epochs": 3, "augment": False, "flip": True, "loss": "l1"}
    with pytest.raises(ValueError, match="expects KEY=VALUE"):
        parse_kd(["lr"])
    with pytest.raises(ValueError, match="must be a bool"):
        parse_kd(["augment=maybe"])


def test_prune_takes_kd_options(run, tmp_path):
    r = run(
        "prune",
        "--model",
        "resnet8_digits",
        "--ratio",
        "0.5",
        "--method",
        "deepinversion",
        "-n",
        8,
        "--epochs",
        1,
        "--steps-per-epoch",
        1,
        "--kd-batch-size",
        8,
        "--weight-decay",
        0,
        "--kd",
        "temperature=2",
        "--set",
        "iterations=1",
        "--set",
        "warmup=1",
        "--set",
        "batch_size=8",
        "--out",
        tmp_path / "p",
        "-q",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["kd"]["weight_decay"] == 0 and rep["kd"]["temperature"] == 2.0
    assert yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())["kd"] == ["temperature=2"]
