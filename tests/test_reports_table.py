"""bench/reports_table.py: rows read from the reports and times a series of compress runs left."""

from __future__ import annotations

import json

from bench import reports_table as rt


def _report(d, tag, method, acc, kd_where="student"):
    kd = {"epochs": 30, "batch_size": 64, "lr": 0.005, "mixup": 1.0, "affine": 20.0, "seed": 0}
    r = {"method": method, "seed": 2, "teacher": {"name": "t", "accuracy": 0.8},
         "student": {"arch": "s", "accuracy": acc}}  # fmt: skip
    (r["student"] if kd_where == "student" else r)["kd"] = kd
    if kd_where == "top":  # an offline run: the compute budget's plan has its synthesis steps
        r["compute_budget"] = {"settings": {"epochs": 30, "batch_size": 64, "iterations": 25},
                               "capped_estimate": {"total_s": 300.0, "baseline_s": 100.0}}  # fmt: skip
    (d / f"{tag}.report.json").write_text(json.dumps(r))


def test_rows_come_from_the_reports_and_time_files(tmp_path, capsys):
    _report(tmp_path, "a", "dfad", 0.78)
    _report(tmp_path, "b", "cmi", 0.4, kd_where="top")  # offline runs keep the KD settings at the top
    (tmp_path / "a.time").write_text("12.50 s wall 10.25 s user 0.50 s sys\n")
    (tmp_path / "b.time").write_text("160.0 s wall 150.00 s user 0.00 s sys\n")
    assert rt.main([str(tmp_path), "--out", str(tmp_path / "runs")]) == 0
    data = json.loads((tmp_path / "runs.json").read_text())
    a, b = data["rows"]
    assert (a["tag"], a["method"], a["seed"], a["cpu_s"]) == ("a", "dfad", 2, 10.8)
    assert abs(a["ratio"] - 0.975) < 1e-9 and b["ratio"] == 0.5 and b["cpu_s"] == 150.0
    # the budget's estimate of what ran: without the noise baseline, which this run skipped
    assert a["estimate_s"] is None and (b["estimate_s"], b["cpu_over_estimate"]) == (200.0, 0.75)
    assert a["kd"] == b["kd"] == {"epochs": 30, "batch_size": 64, "lr": 0.005, "mixup": 1.0, "affine": 20.0}
    assert data["machine"]["cpu"]
    assert a["synthesis_steps"] is None and b["synthesis_steps"] == 25
    md = (tmp_path / "runs.md").read_text()
    assert (
        "| a | t | dfad | 2 | s | 97.5 |" in md
        and "mixup 1.0, affine 20.0 | 25 | 150.0 | 200.0 | 0.75 | 160.0 | - |" in md
    )
    # the wall time (a run alone: what a user waits) and the noise baseline where the run kept it
    assert (a["wall_s"], b["wall_s"]) == (12.5, 160.0) and a["noise_baseline"] is None is b["noise_baseline"]
    r = json.loads((tmp_path / "a.report.json").read_text())
    (tmp_path / "a.report.json").write_text(json.dumps({**r, "noise_baseline": {"accuracy": 0.0972}}))
    assert rt.main([str(tmp_path), "--out", str(tmp_path / "runs")]) == 0
    assert json.loads((tmp_path / "runs.json").read_text())["rows"][0]["noise_baseline"] == 0.0972
    assert "| 12.5 | 0.0972 |" in (tmp_path / "runs.md").read_text()
    assert rt.main([str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
