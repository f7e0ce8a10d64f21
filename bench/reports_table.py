r"""Rows and a table from the ``report.json`` files a series of ``datafree compress`` runs left.

``bench/job_queue.sh DIR compress`` keeps, per job ``TAG``, ``DIR/TAG.report.json`` (the run's report) and
``DIR/TAG.time`` (``/usr/bin/time``: wall, user and system seconds). This script reads every such pair and
writes ``OUT.json`` (one row per run: teacher, method, seed, the student's accuracy and share of the
teacher, its main KD settings, CPU seconds, the compute budget's estimate of what ran and the CPU's ratio to
it, the wall seconds and the noise baseline's accuracy where the run kept it; the machine it was read on) and
``OUT.md``. Nothing is typed in: a row is what its report says.

Usage::

    python bench/reports_table.py bench/results/s13_cli --out bench/results/s13_cli/runs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere


def cpu_seconds(time_file: Path) -> float | None:
    """User + system seconds of a ``/usr/bin/time -f "%e s wall %U s user %S s sys"`` file."""
    if not time_file.is_file():
        return None
    m = re.search(r"([\d.]+) s user ([\d.]+) s sys", time_file.read_text())
    return round(float(m.group(1)) + float(m.group(2)), 1) if m else None


def wall_seconds(time_file: Path) -> float | None:
    """Wall seconds of the same ``.time`` file (a run alone with its threads: what a user waits)."""
    if not time_file.is_file():
        return None
    m = re.search(r"([\d.]+) s wall", time_file.read_text())
    return float(m.group(1)) if m else None


def row(report_path: Path) -> dict[str, Any]:
    """One run's row from its report (and the ``.time`` file beside it)."""
    r = json.loads(report_path.read_text())
    tag = report_path.name[: -len(".report.json")]
    student, teacher = r["student"], r["teacher"]
    kd = student.get("kd") or r.get("kd") or {}  # online runs keep it with the student, offline at the top
    budget = r.get("compute_budget") or {}
    plan = budget.get("settings") or {}  # an offline run's synthesis steps per batch
    cpu = cpu_seconds(report_path.with_name(f"{tag}.time"))
    est = estimate_s(budget, baseline="noise_baseline" in r)
    return {
        "tag": tag,
        "teacher": teacher.get("name") or teacher.get("card"),
        "method": r["method"],
        "seed": r["seed"],
        "student": student["arch"],
        "student_accuracy": student["accuracy"],
        "teacher_accuracy": teacher["accuracy"],
        "ratio": student["accuracy"] / teacher["accuracy"],
        "kd": {k: kd[k] for k in ("epochs", "batch_size", "lr", "mixup", "affine") if k in kd},
        "synthesis_steps": plan.get("iterations"),
        "cpu_s": cpu,
        "wall_s": wall_seconds(report_path.with_name(f"{tag}.time")),
        "noise_baseline": (r.get("noise_baseline") or {}).get("accuracy"),  # None: run with --no-baseline
        "estimate_s": est,
        "cpu_over_estimate": round(cpu / est, 2) if cpu is not None and est else None,
    }


def estimate_s(budget: dict[str, Any], baseline: bool) -> float | None:
    """The budget's estimate of the plan that ran (one core's CPU s), less a baseline that did not run."""
    e = budget.get("capped_estimate")
    if not e:
        return None
    return round(e["total_s"] - (0.0 if baseline else e["baseline_s"]), 1)


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the directory of TAG.report.json and TAG.time files")
    ap.add_argument("--out", required=True, help="path without extension: writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    reports = sorted(Path(args.dir).glob("*.report.json"))
    if not reports:
        print(f"error: no *.report.json in {args.dir}", file=sys.stderr)
        return 2
    rows = [row(p) for p in reports]
    import torch

    from bench.common import machine

    data = {"machine": {"cpu": machine(torch.device("cpu"))["cpu"]}, "rows": rows}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "| run | teacher | method | seed | student | % of teacher | KD | synthesis steps | CPU s "
        "| estimate s | CPU / estimate | wall s | noise baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        kd = ", ".join(f"{k} {v}" for k, v in x["kd"].items())
        lines.append(
            f"| {x['tag']} | {x['teacher']} | {x['method']} | {x['seed']} | {x['student']} | "
            f"{100 * x['ratio']:.1f} | {kd} | {x['synthesis_steps'] or '-'} | "
            f"{x['cpu_s'] if x['cpu_s'] is not None else '-'} | {x['estimate_s'] or '-'} | "
            f"{x['cpu_over_estimate'] or '-'} | {x['wall_s'] if x['wall_s'] is not None else '-'} | "
            f"{'-' if x['noise_baseline'] is None else format(x['noise_baseline'], '.4f')} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
