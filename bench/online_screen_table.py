"""Table of ``bench/online_ablation.py --json`` runs next to the same cell's default run.

Reads the JSON lines a series of screens appended (``--json FILE``), finds for each run the default
run of the same teacher, method and seed in earlier result files (a row whose command has no
``--set``/``--kd``; the last file given wins), and writes ``OUT.json`` (the runs, their commands,
the baselines) and ``OUT.md`` (one line per run: % of the teacher, the default's %, the best epoch,
the last train+val accuracy, CPU seconds).

Usage::

    python bench/online_screen_table.py bench/results/online_seeds_s7b.jsonl \
        --baseline bench/results/online_seeds.json --baseline bench/results/online_seeds_s7.json \
        --out bench/results/online_seeds_s7b --note "machine, load, dates" [--title "heading of OUT.md"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def command(row: dict[str, Any]) -> str:
    """The ``bench/online_ablation.py`` command that produced ``row`` (with ``--diagnose`` if it ran)."""
    teacher = row["teacher"]
    if teacher != "lenet5_digits" and teacher != "resnet8_digits":
        teacher = f"/work/cache/suite/{teacher}/model.json"
    parts = [
        f"python bench/online_ablation.py --teacher {teacher}",
        f"--method {row['method']} --seed {row['seed']}",
    ]
    if row.get("student_given"):  # a screen of another student than the default
        parts.append(f"--student {row['student']}")
    parts += [f"--set {k}={v}" for k, v in row.get("set", {}).items()]
    parts += [f"--kd {k}={v}" for k, v in row.get("kd", {}).items()]
    if "per_epoch_train_val" in row:
        parts.append("--diagnose")
    return " ".join(parts)


def json_lines(path: str | Path) -> list[dict[str, Any]]:
    """The rows ``bench/online_ablation.py --json`` appended to ``path``, one JSON object a line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def baselines(paths: list[str]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Default runs (no ``--set``/``--kd``/``--student`` in the command) keyed by (teacher, method, seed).

    A file is a table's ``OUT.json`` (``{"rows": [...]}``, each row with its command) or the JSON lines
    of ``bench/online_ablation.py --json`` (each row with its ``set`` and ``kd``).
    """
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in paths:
        if path.endswith(".jsonl"):
            rows = [{**r, "command": command(r)} for r in json_lines(path)]
        else:
            rows = json.loads(Path(path).read_text())["rows"]
        for row in rows:
            cmd = row.get("command", "")
            if "--set" in cmd or "--kd" in cmd or "--student" in cmd:
                continue
            found[(row["teacher"], row["method"], int(row["seed"]))] = {**row, "source": path}
    return found


def pct(x: float) -> str:
    """A ratio as a percentage with one decimal."""
    return f"{100 * x:.1f}"


def _last(row: dict[str, Any] | None) -> str:
    """The last train+val accuracy of a run as a percentage, or "-" when it has none."""
    tv = (row or {}).get("per_epoch_train_val")
    return pct(tv[-1]) if tv else "-"


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("--baseline", action="append", default=[])
    ap.add_argument("--out", required=True, help="path without extension: writes OUT.json and OUT.md")
    ap.add_argument("--note", default="")
    ap.add_argument(
        "--title",
        default="Online backends on BN-less teachers: session-7 second-wave screens (issue 15)",
        help="the Markdown heading of OUT.md",
    )
    args = ap.parse_args()
    rows = json_lines(args.jsonl)
    base = baselines(args.baseline)
    lines = [
        f"# {args.title}",
        "",
        args.note,
        "",
        "| command | % of teacher | default run's % (its source) | best epoch (test acc %) "
        "| train+val acc % (default's) | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        row["command"] = command(row)
        b = base.get((row["teacher"], row["method"], int(row["seed"])))
        keys = ("ratio", "command", "source", "per_epoch_train_val")
        row["baseline"] = None if b is None else {k: b.get(k) for k in keys}
        pe = row["per_epoch"]
        best = max(range(len(pe)), key=lambda i: pe[i])
        tv = row.get("per_epoch_train_val") or [float("nan")]
        base_txt = "-" if b is None else f"{pct(b['ratio'])} ({Path(b['source']).name})"
        lines.append(
            f"| `{row['command']}` | {pct(row['ratio'])} | {base_txt} | {best + 1} ({pct(pe[best])}) "
            f"| {pct(tv[-1])} ({_last(b)}) | {row['cpu_s']:.0f} |"
        )
    Path(args.out + ".json").write_text(json.dumps({"note": args.note, "rows": rows}, indent=1) + "\n")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
