"""The fidelity matrix as it stands: every suite teacher x every backend, from the runs that measured it.

Each cell of issue 11's matrix was measured by some bench run (``bench/fidelity.py``, ``bench/compress.py``,
``bench/compress_kd_variants.py``, ``bench/online_backends.py``, ``bench/online_ablation.py``), in some
session, on some version of the code. ``bench/fidelity_matrix.json`` names, for each cell and seed, the
result file and the row that is its current figure (``file``; the row is found by teacher, method and seed,
plus ``match``'s key/value pairs), and says when it ran (``session``), on which teacher weights
(``weights``: ``"s8"`` for the suite as retrained in session 8, ``"earlier"`` for a cell on the weights
before, ``"s12"`` for the suite as retrained in session 12, ``"s13"`` for ``vgg8_32``, trained in session 13,
``"s28"`` for the suite as retrained in session 28, ``"s34"`` for ``plain_32`` and ``vgg8_32`` as retrained in
session 34, ``"s36"`` for the suite as retrained in session 36 on an AMD EPYC (BN-less teachers since
session 36, BN teachers since session 37), ``"shipped"`` for the 1x16x16 teachers),
the CPU it ran on where its result file does not record one (``machine``), the default it predates where a
later default changes it (``before``: ``"s45_output_mean"`` for an online backend's cell on a BN teacher run
before session 45's ``output_mean``) and anything that sets it apart (``note``). This script
reads every figure from those files (nothing is typed in by hand), and writes the matrix (% of the teacher
per seed, 1-thread CPU seconds) with the issue's bars:

- ``auto`` (``compress`` with every default) >= 97% on every BN teacher;
- every other backend >= 95% on every teacher it applies to (BN backends on BN teachers only);
- the best backend >= 99% on each teacher;
- a cell's CPU time <= 900 s (15 minutes of one core).

The spec's optional ``user_runs`` are cells run as a user runs them: ``datafree compress`` with every default
(the CLI's thread count: 2 on this machine), noise baseline included, alone on an idle machine
(``THREADS=auto BASELINE=1 bash bench/job_queue.sh DIR compress``). Their rows (``bench/reports_table.py``)
give the share of the teacher and the wall time a user waits, listed under the matrix against the issues'
15 minutes on this machine (``verdicts``' ``user_runs`` and ``user_runs_over_15_min``); they are not cells of
the matrix, whose figures stay the 1-thread runs.

Usage::

    python bench/fidelity_matrix.py [--spec bench/fidelity_matrix.json] [--out bench/results/fidelity_matrix]

Writes ``OUT.md`` and ``OUT.json``; exit status 2 when the spec names a file or a row that is not there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.suite import SHIPPED, SUITE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = Path(__file__).resolve().parent / "fidelity_matrix.json"

# The bars (issue 11, "Done when"; a fraction of the teacher's test accuracy) and the cell's CPU cap.
AUTO_BAR = 0.97
BACKEND_BAR = 0.95
BEST_BAR = 0.99
CELL_CPU_S = 900.0
# Backends that need BatchNorm statistics (their ``requires_batchnorm``; tests/test_fidelity_matrix.py checks
# this against the registry): they do not apply to a BN-less teacher.
BN_METHODS = ("deepinversion", "fast", "cmi", "nayer")
METHODS = ("auto", "deepinversion", "fast", "cmi", "nayer", "dafl", "zskt", "dfad")


class SpecError(ValueError):
    """A spec entry whose file or row is not there."""


def _ratio(row: dict[str, Any]) -> float:
    """The student's share of the teacher from any of the benches' row formats."""
    for key in ("ratio", "share_of_teacher"):
        v = row.get(key)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str) and v.endswith("%"):  # bench/compress.py: "99.2%"
            return float(v[:-1]) / 100
    s = row.get("student_accuracy", row.get("test_acc"))
    t = row.get("teacher_accuracy", row.get("teacher_acc"))
    if isinstance(s, (int, float)) and isinstance(t, (int, float)) and t > 0:
        return float(s) / float(t)
    raise SpecError("the row has no share of the teacher")


def _seconds(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def find_row(entry: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """The row of ``entry["file"]`` that ``entry`` names (teacher, method, seed and ``match``)."""
    path = root / entry["file"]
    if not path.is_file():
        raise SpecError(f"{entry['file']}: no such file")
    data = json.loads(path.read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    top_seed = data.get("seed", 0) if isinstance(data, dict) else 0
    method = entry.get("row_method", entry["method"])
    found = []
    for r in rows:
        teacher = str(r.get("teacher", "")).split(" (")[0]  # bench/compress.py: "resnet8_digits (resnet8)"
        r_method = r.get("method", data.get("method") if isinstance(data, dict) else None)
        if teacher and teacher != entry["teacher"]:
            continue
        if r_method != method or r.get("seed", top_seed) != entry["seed"]:
            continue
        if all(r.get(k) == v for k, v in entry.get("match", {}).items()):
            found.append(r)
    if len(found) != 1:
        raise SpecError(
            f"{entry['file']}: {len(found)} rows for {entry['teacher']} x {method}, seed {entry['seed']}, "
            f"match {entry.get('match', {})} (want exactly 1)"
        )
    return found[0]


def machine_of(entry: dict[str, Any], root: Path = ROOT) -> str:
    """The CPU the entry's run recorded (``machine.cpu`` of its result file), else the entry's ``machine``.

    ``"not recorded"`` when neither says.
    """
    data = json.loads((root / entry["file"]).read_text())
    m = data.get("machine") if isinstance(data, dict) else None
    if isinstance(m, dict) and m.get("cpu"):
        return str(m["cpu"])
    return str(entry.get("machine") or "not recorded")


def collect(spec: dict[str, Any], root: Path = ROOT) -> list[dict[str, Any]]:
    """One record per spec entry: the figures read from its row, and the entry's provenance."""
    out = []
    for e in spec["cells"]:
        row = find_row(e, root)
        # the ratio to 6 digits: the table rounds it to 0.1 once (4 digits, then 0.1, made 98.05% read 98.0)
        out.append({
            "teacher": e["teacher"], "method": e["method"], "seed": e["seed"], "ratio": round(_ratio(row), 6),
            "cpu_s": _seconds(row, "cpu_s"), "ran": row.get("ran", e["method"]), "file": e["file"],
            "session": e.get("session"), "weights": e.get("weights"), "note": e.get("note", ""),
            "machine": machine_of(e, root), "before": e.get("before"),
        })  # fmt: skip
    return out


def collect_user_runs(spec: dict[str, Any], root: Path = ROOT) -> list[dict[str, Any]]:
    """One record per ``user_runs`` entry: its share of the teacher, its wall seconds (None: not recorded)."""
    out = []
    for e in spec.get("user_runs", []):
        row = find_row(e, root)
        out.append({
            "teacher": e["teacher"], "method": e["method"], "seed": e["seed"], "ratio": round(_ratio(row), 6),
            "wall_s": _seconds(row, "wall_s"), "threads": e.get("threads"), "file": e["file"],
            "session": e.get("session"), "note": e.get("note", ""),
        })  # fmt: skip
    return out


def user_run_verdicts(user_runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each user run as a line, and those over 15 minutes of wall time (or with none recorded).

    The bar is :data:`CELL_CPU_S`'s 900 s, here of wall time: the issues' 15 minutes on this machine.
    """
    lines = [
        f"{r['teacher']} x {r['method']} seed {r['seed']}: {100 * r['ratio']:.1f}% in "
        + (f"{r['wall_s']:.0f} s" if r["wall_s"] is not None else "an unrecorded time")
        + (f" ({r['threads']} threads)" if r.get("threads") else "")
        for r in user_runs
    ]
    over = [line for r, line in zip(user_runs, lines, strict=True)
            if r["wall_s"] is None or r["wall_s"] > CELL_CPU_S]  # fmt: skip
    return {"user_runs": lines, "user_runs_over_15_min": over}


def applies(method: str, teacher: str, bn_teachers: set[str]) -> bool:
    """Whether a backend applies to a teacher: a BN backend only to a teacher with BatchNorm."""
    return method not in BN_METHODS or teacher in bn_teachers


def verdicts(records: list[dict[str, Any]], teachers: list[str], bn_teachers: set[str]) -> dict[str, Any]:
    """The issue's bars, cell by cell: which cells pass, fail, or were never measured."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_cell.setdefault((r["teacher"], r["method"]), []).append(r)
    fail, missing, over_time, best = [], [], [], {}
    for t in teachers:
        for m in METHODS:
            if not applies(m, t, bn_teachers) or (m == "auto" and t not in bn_teachers):
                continue
            cell = by_cell.get((t, m))
            if not cell:
                missing.append(f"{t} x {m}")
                continue
            bar = AUTO_BAR if m == "auto" else BACKEND_BAR
            low = [r for r in cell if r["ratio"] < bar]
            if low:
                seeds = ", ".join(f"seed {r['seed']} {100 * r['ratio']:.1f}%" for r in low)
                fail.append(f"{t} x {m} < {100 * bar:.0f}%: {seeds}")
            over_time += [f"{t} x {m} seed {r['seed']}: {r['cpu_s']:.0f} s" for r in cell
                          if r["cpu_s"] is not None and r["cpu_s"] > CELL_CPU_S]  # fmt: skip
        cells = [r for r in records if r["teacher"] == t]
        if cells:
            top = max(cells, key=lambda r: r["ratio"])
            best[t] = {"method": top["method"], "ratio": top["ratio"], "passes": top["ratio"] >= BEST_BAR}
    return {"below_bar": fail, "not_measured": missing, "over_15_min": over_time, "best": best}


# A cell's mark by the suite weights it was measured on (spec "weights"), and what the legend says of it;
# the s12/s13 suite and the shipped teachers are unmarked.
MARKS = {
    "earlier": ("†", "the suite's weights before session 8"),
    "s8": ("§", "the suite as retrained in session 8 (Intel Xeon; sessions 8-11)"),
    "s28": ("‡", "the suite as retrained in session 28 (Intel Xeon)"),
    "s34": ("¶", "plain_32 and vgg8_32 as retrained in session 34 (Intel Xeon)"),
    "s36": ("°", "the suite as retrained in session 36 (AMD EPYC)"),
}


# A cell measured before a default that changes it (spec "before"): its mark and what the legend says.
BEFORE_MARKS = {
    "s45_output_mean": ("ᶻ", "measured before session 45 centred the online generators' images on the "
                             "teacher's data mean (`output_mean` zero, the papers')"),
    "s46_output_structure": ("ˢ", "measured before session 46 gave the online generators' images the "
                                  "teacher's data spread and colour (`output_scale` one, `output_colour` "
                                  "free)"),
}  # fmt: skip


def _cell_text(cell: list[dict[str, Any]]) -> str:
    parts = []
    for r in sorted(cell, key=lambda r: r["seed"]):
        mark = MARKS[r["weights"]][0] if r["weights"] in MARKS else ""  # session 12's suite: unmarked
        mark += BEFORE_MARKS[r["before"]][0] if r.get("before") in BEFORE_MARKS else ""
        parts.append(f"{100 * r['ratio']:.1f}{mark}" + (f" (s{r['seed']})" if len(cell) > 1 else ""))
    return " / ".join(parts)


def markdown(
    records: list[dict[str, Any]], teachers: list[str], bn_teachers: set[str],
    user_runs: list[dict[str, Any]] | None = None,
) -> str:  # fmt: skip
    """The matrix (% of the teacher; seeds side by side) and the bars; the user runs, when given, below."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_cell.setdefault((r["teacher"], r["method"]), []).append(r)
    lines = ["| teacher | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for t in teachers:
        cols = []
        for m in METHODS:
            if m == "auto" and t not in bn_teachers:
                cols.append("= dafl")  # compress's default path on a BN-less teacher (rules.default_method)
            elif not applies(m, t, bn_teachers):
                cols.append("n/a")
            elif (t, m) in by_cell:
                cols.append(_cell_text(by_cell[(t, m)]))
            else:
                cols.append("-")
        lines.append(f"| {t} | " + " | ".join(cols) + " |")
    v = verdicts(records, teachers, bn_teachers)
    sessions: dict[str, set[str]] = {}  # the CPU each run recorded -> the sessions that ran on it
    for r in records:
        sessions.setdefault(r["machine"], set()).add(str(r["session"]))
    weights = {r["weights"] for r in records}  # the legend explains only the marks in use
    marks = [f"{mark} on {what}, " for key, (mark, what) in MARKS.items() if key in weights]
    befores = {r.get("before") for r in records}
    marks += [f"{mark} {what}, " for key, (mark, what) in BEFORE_MARKS.items() if key in befores]
    lines += [
        "",
        "% of the teacher's test accuracy, seed 0 unless (sN) says; " + "".join(marks) + "unmarked: the "
        "suite as retrained in session 12 (vgg8_32 added in 13) or a shipped teacher; "
        "`n/a`: a BN backend on a BN-less teacher; `-`: not measured. Bars: `auto` >= 97% on "
        "the BN teachers, every other backend >= 95%, the best >= 99%, each cell <= 15 minutes of one core.",
        "",
        f"- below the bar ({len(v['below_bar'])}): " + ("; ".join(v["below_bar"]) or "none"),
        f"- not measured ({len(v['not_measured'])}): " + (", ".join(v["not_measured"]) or "none"),
        "- over 15 minutes of CPU: " + ("; ".join(v["over_15_min"]) or "none"),
        "- machines (the CPU each result file recorded; 2 vCPUs, torch 2.14.1, no GPU): "
        + "; ".join(
            f"{cpu}: sessions {', '.join(sorted(s, key=lambda x: (len(x), x)))}"
            for cpu, s in sorted(sessions.items())
        ),
        "- best per teacher: "
        + "; ".join(
            f"{t} {b['method']} {100 * b['ratio']:.1f}%{'' if b['passes'] else ' (< 99%)'}"
            for t, b in v["best"].items()
        ),
    ]
    if user_runs:
        u = user_run_verdicts(user_runs)
        lines.append(
            "- as a user runs it (`datafree compress` with every default and the CLI's threads, noise "
            "baseline included, alone; wall time): "
            + "; ".join(u["user_runs"])
            + "; over 15 minutes: "
            + ("; ".join(u["user_runs_over_15_min"]) or "none")
        )
    return "\n".join(lines)


README_START = "<!-- fidelity_matrix: start (python bench/fidelity_matrix.py --readme README.md) -->"
README_END = "<!-- fidelity_matrix: end -->"


def main(argv: list[str] | None = None) -> int:
    """Write the matrix; exit status 2 when the spec names a file or row that is not there."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=SPEC)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fidelity_matrix")
    ap.add_argument("--readme", type=Path, default=None, help="also rewrite the matrix block in this file")
    args = ap.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text())
        records = collect(spec, ROOT)
        user_runs = collect_user_runs(spec, ROOT)
    except (OSError, json.JSONDecodeError, KeyError, SpecError) as e:
        print(f"error: {args.spec}: {e}", file=sys.stderr)
        return 2
    teachers = spec["teachers"]
    bn_teachers = {s.name for s in SUITE if s.batchnorm} | {n for n, (_, bn) in SHIPPED.items() if bn}
    text = markdown(records, teachers, bn_teachers, user_runs)
    from datafree.utils import atomic_write, atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"),
                      {"cells": records, "user_runs": user_runs,
                       "verdicts": {**verdicts(records, teachers, bn_teachers),
                                    **user_run_verdicts(user_runs)}})  # fmt: skip
    with atomic_write(args.out.with_suffix(".md"), "w") as f:
        f.write(text + "\n")
    if args.readme is not None:
        readme = args.readme.read_text()
        if README_START not in readme or README_END not in readme:
            print(f"error: {args.readme}: no {README_START} ... {README_END} block", file=sys.stderr)
            return 2
        head, rest = readme.split(README_START, 1)
        with atomic_write(args.readme, "w") as f:
            f.write(head + README_START + "\n" + text + "\n" + README_END + rest.split(README_END, 1)[1])
    print(text)
    return 0


def readme_block(readme: str) -> str:
    """The matrix as the README shows it (between the markers), without the markers."""
    return readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n")


if __name__ == "__main__":
    sys.exit(main())
