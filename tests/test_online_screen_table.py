"""bench/online_screen_table.py: screens next to the default run of their cell, JSON and Markdown out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.online_screen_table import baselines, command, main


def _row(seed: int, ratio: float, **extra: object) -> dict[str, object]:
    return {"teacher": "lenet5_digits", "method": "zskt", "seed": seed, "ratio": ratio, "cpu_s": 150.0,
            "per_epoch": [0.9, ratio, ratio - 0.01], **extra}  # fmt: skip


def test_command_rebuilds_the_bench_call() -> None:
    """The command has the teacher's path for a suite teacher, every override, and --diagnose if it ran."""
    row = {**_row(1, 0.97, set={"at_beta": 0}, kd={"epochs": 90}), "per_epoch_train_val": [0.9]}
    assert command(row) == (
        "python bench/online_ablation.py --teacher lenet5_digits --method zskt --seed 1 "
        "--set at_beta=0 --kd epochs=90 --diagnose"
    )
    assert "--teacher /work/cache/suite/plain_32/model.json" in command({**row, "teacher": "plain_32"})


def test_a_student_screen_names_its_student_and_is_no_default(tmp_path: Path) -> None:
    """A run with ``--student`` rebuilds with it and is never taken as the cell's default run."""
    row = _row(1, 0.98, set={}, kd={}, student="lenet5_half_bn", student_given=True)
    assert command(row).endswith("--seed 1 --student lenet5_half_bn")
    default = _row(1, 0.97, set={}, kd={}, student="lenet5_half", student_given=False)
    assert "--student" not in command(default)
    lines = tmp_path / "runs.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in (default, row)))
    assert baselines([str(lines)])[("lenet5_digits", "zskt", 1)]["ratio"] == 0.97


def test_baselines_skip_overridden_runs_and_the_last_file_wins(tmp_path: Path) -> None:
    """Only rows without --set/--kd are defaults; a later file replaces an earlier one's cell."""
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old_rows = [
        {**_row(1, 0.95), "command": "python b.py --seed 1"},
        {**_row(2, 0.99), "command": "python b.py --seed 2 --set x=1"},
    ]
    old.write_text(json.dumps({"rows": old_rows}))
    new.write_text(json.dumps({"rows": [{**_row(1, 0.97), "command": "python b.py --seed 1"}]}))
    found = baselines([str(old), str(new)])
    assert found[("lenet5_digits", "zskt", 1)]["ratio"] == 0.97
    assert ("lenet5_digits", "zskt", 2) not in found


def test_baselines_read_the_ablation_bench_json_lines(tmp_path: Path) -> None:
    """A ``.jsonl`` of bench/online_ablation.py rows: the rows without set/kd overrides are the defaults."""
    lines = tmp_path / "runs.jsonl"
    rows = [
        _row(0, 0.91, set={}, kd={}),
        _row(0, 0.95, set={"replay": 0.5}, kd={}),
        _row(1, 0.9, set={}, kd={"epochs": 9}),
    ]
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = baselines([str(lines)])
    assert (
        list(found) == [("lenet5_digits", "zskt", 0)] and found[("lenet5_digits", "zskt", 0)]["ratio"] == 0.91
    )


def test_main_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Markdown line per screen with its default's %, best epoch and CPU; the JSON keeps the rows."""
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps(_row(1, 0.983, set={"at_beta": 0}, kd={})) + "\n")
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"rows": [{**_row(1, 0.978), "command": "python b.py --seed 1"}]}))
    out = tmp_path / "table"
    monkeypatch.setattr(sys, "argv", ["x", str(runs), "--baseline", str(base), "--out", str(out)])
    main()
    md = (out.with_suffix(".md")).read_text()
    assert "| 98.3 | 97.8 (base.json) | 2 (98.3) | nan (-) | 150 |" in md
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert rows[0]["baseline"]["ratio"] == 0.978 and "--set at_beta=0" in rows[0]["command"]
