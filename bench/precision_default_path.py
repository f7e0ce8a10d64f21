"""Precision on compress's default path: fidelity and end-to-end speed per precision configuration.

Usage:
    python bench/precision_default_path.py --teachers resnet18_32 --configs fp32,bf16_cl --seeds 0,1,2
        [--threads 1] [--out bench/results/precision_fidelity_default_path.json]

Each cell is one real ``datafree compress --teacher CARD --no-baseline --threads T --seed S`` (a fresh
process, ``nice`` as the caller) with **every other setting at its default**, so the method, budget and
student are whatever ``compress`` picks for the teacher (``fast`` through the growing pool on
``resnet18_32``, DeepInversion on ``resnet8_digits``); only the precision options differ:

* ``fp32``: ``--precision fp32`` (today's path); ``cl``: ``--precision fp32 --channels-last``;
* ``bf16``: ``--precision bf16`` (synthesis and KD); ``bf16_cl``: ``--precision bf16 --channels-last``;
* ``bf16synth_cl``: bf16 synthesis, fp32 KD; ``bf16kd_cl``: fp32 synthesis, bf16 KD (both channels_last).
  The CLI has one ``--precision`` for every loop; these two set the loops apart by overriding
  ``datafree.precision``'s per-loop options in the child process (a bench-only split).

Within a seed the configurations run back to back, in an order that alternates between seeds, so that
the machine's load hits them alike. Reported per cell: the student's accuracy on the real test split
(``report.json``), the stage times, the child's wall time and its CPU time (user + system, from
``getrusage(RUSAGE_CHILDREN)``: with one thread this is the speed figure least moved by other jobs),
the load average, and the precision ``report.json`` recorded. The summary per teacher and
configuration: mean accuracy and its difference from fp32 (per seed, mean, min, max), and the CPU-time
and wall-time ratios fp32 / configuration (per seed and over the sums).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, markdown_table  # noqa: E402
from bench.precision_fidelity import teacher_card  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# name -> (CLI options, per-loop overrides of datafree.precision.RunOptions in the child)
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "fp32": (["--precision", "fp32"], {}),
    "cl": (["--precision", "fp32", "--channels-last"], {}),
    "bf16": (["--precision", "bf16"], {}),
    "bf16_cl": (["--precision", "bf16", "--channels-last"], {}),
    "bf16synth_cl": (["--precision", "bf16", "--channels-last"], {"kd_precision": "fp32"}),
    "bf16kd_cl": (
        ["--precision", "bf16", "--channels-last"],
        {"precision": "fp32", "generator_precision": "fp32"},
    ),
}
# The child: the real CLI, with datafree.precision.configure wrapped to apply a cell's loop overrides.
CHILD = """
import json, sys
import datafree.precision as P
overrides = json.loads(sys.argv.pop(1))
_configure = P.configure
def configure(*a, **k):
    o = _configure(*a, **k)
    for key, value in overrides.items():
        setattr(o, key, value)
    return o
P.configure = configure
import cli
cli.main()
"""


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_split(metrics: Path) -> dict[str, float]:
    """Wall seconds of synthesis, KD steps and per-epoch evaluation, from a run's ``metrics.jsonl``.

    Synthesis: from the record before each ``synthesize`` step 1 to that batch's last logged step (the
    pool alternates rounds of synthesis with KD; DeepInversion's batches may stop early). Evaluation:
    from the last step record to each epoch event. KD: the rest between the first and the last record.
    Wall time, so only a split of a cell's time.
    """
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    synth = evals = 0.0
    prev_t, start, last = 0.0, None, 0.0  # start/last: the open batch's start and its last record

    for r in recs:
        t = float(r.get("time", prev_t))
        if r.get("stage") == "synthesize" and "step" in r:
            if r["step"] == 1:  # a new batch (the previous one, if open, ended at its last record)
                synth += last - start if start is not None else 0.0
                start = prev_t
            last = t
        else:
            if start is not None:
                synth += last - start
                start = None
            if r.get("event") == "epoch":
                evals += t - prev_t
        prev_t = t
    synth += last - start if start is not None else 0.0
    total = float(recs[-1]["time"]) if recs else 0.0
    return {
        "synthesis_s": round(synth, 1),
        "eval_s": round(evals, 1),
        "kd_s": round(total - synth - evals, 1),
    }


def run_cell(
    name: str, card: str, cfg: str, seed: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """One ``datafree compress`` at the defaults; its report figures, wall and CPU time."""
    out = work / f"{name}_{cfg}_s{seed}"
    options, overrides = CONFIGS[cfg]
    cmd = [sys.executable, "-c", CHILD, json.dumps(overrides), "compress", "--teacher", card,
           "--out", str(out), "--no-baseline", "--seed", str(seed), "--threads", str(args.threads),
           "--quiet", *options]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    c0, t0 = _cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    rep = json.loads((out / "report.json").read_text())
    if args.keep:  # the run's metrics.jsonl and report.json, for a later look
        keep = Path(args.keep) / out.name
        keep.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.jsonl", "report.json"):
            shutil.copyfile(out / f, keep / f)
    return {
        "teacher": name,
        "config": cfg,
        "seed": seed,
        "student_accuracy": rep["student"]["accuracy"],
        "teacher_accuracy": rep["teacher"]["accuracy"],
        "method": (rep.get("method_choice") or {}).get("method", rep.get("method")),
        "pool": (rep.get("method_choice") or {}).get("pool"),
        "stages_seconds": rep.get("stages_seconds"),
        "wall_split": time_split(out / "metrics.jsonl"),
        "precision": rep.get("precision"),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_average_end": os.getloadavg()[0],
    }


def summarise(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Per teacher and configuration: accuracy against fp32 over the seeds both ran, time ratios."""
    summary, table = [], []
    for name in dict.fromkeys(r["teacher"] for r in rows):
        mine = [r for r in rows if r["teacher"] == name]
        base = {r["seed"]: r for r in mine if r["config"] == "fp32"}
        for cfg in dict.fromkeys(r["config"] for r in mine):
            cells = {r["seed"]: r for r in mine if r["config"] == cfg}
            seeds = sorted(s for s in cells if s in base)
            accs = [cells[s]["student_accuracy"] for s in sorted(cells)]
            entry: dict[str, Any] = {
                "teacher": name, "config": cfg, "seeds": sorted(cells),
                "accuracy": accs, "mean_accuracy": statistics.mean(accs),
                "cpu_s": [cells[s]["cpu_s"] for s in sorted(cells)],
                "wall_s": [cells[s]["wall_s"] for s in sorted(cells)],
            }  # fmt: skip
            if seeds:
                diffs = [100 * (cells[s]["student_accuracy"] - base[s]["student_accuracy"]) for s in seeds]
                cpu_ratio = [base[s]["cpu_s"] / cells[s]["cpu_s"] for s in seeds]
                wall_ratio = [base[s]["wall_s"] / cells[s]["wall_s"] for s in seeds]
                entry.update(
                    paired_seeds=seeds,
                    diff_points=[round(d, 2) for d in diffs],
                    mean_diff_points=round(statistics.mean(diffs), 2),
                    cpu_speedup=[round(v, 3) for v in cpu_ratio],
                    wall_speedup=[round(v, 3) for v in wall_ratio],
                    cpu_speedup_of_sums=round(
                        sum(base[s]["cpu_s"] for s in seeds) / sum(cells[s]["cpu_s"] for s in seeds), 3
                    ),
                    wall_speedup_of_sums=round(
                        sum(base[s]["wall_s"] for s in seeds) / sum(cells[s]["wall_s"] for s in seeds), 3
                    ),
                )
            summary.append(entry)
            table.append([
                name, cfg, ", ".join(f"{a:.4f}" for a in accs), f"{entry['mean_accuracy']:.4f}",
                ", ".join(f"{d:+.2f}" for d in entry.get("diff_points", [])) or "-",
                f"{entry['mean_diff_points']:+.2f}" if "mean_diff_points" in entry else "-",
                f"{statistics.mean(entry['cpu_s']):.0f}", f"{statistics.mean(entry['wall_s']):.0f}",
                f"{entry['cpu_speedup_of_sums']:.2f}x" if "cpu_speedup_of_sums" in entry else "-",
                f"{entry['wall_speedup_of_sums']:.2f}x" if "wall_speedup_of_sums" in entry else "-",
            ])  # fmt: skip
    return summary, table


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The markdown table on stdout and the json (settings, rows, summary), written atomically."""
    from datafree.utils import atomic_write_json

    summary, table = summarise(rows)
    header = ["teacher", "config", "student acc per seed", "mean", "- fp32 per seed (points)", "mean diff",
              "CPU s", "wall s", "CPU speed-up", "wall speed-up"]  # fmt: skip
    print(markdown_table(header, table), flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "rows_from")}
    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "settings": settings,
                                 "rows": rows, "summary": summary})  # fmt: skip


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet18_32,resnet8_digits")
    ap.add_argument("--configs", default="fp32,bf16_cl", help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "precision_fidelity_default_path.json"))
    ap.add_argument(
        "--keep", default="", help="copy each cell's metrics.jsonl and report.json under this dir"
    )
    ap.add_argument(
        "--rows-from", default="", help="merge the rows of earlier result files (comma-separated)"
    )
    args = ap.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.rows_from:  # merge earlier runs' rows into one summary
        rows = [r for f in args.rows_from.split(",") if f for r in json.loads(Path(f).read_text())["rows"]]
        for r in rows:  # the split again from the kept metrics.jsonl (--keep), where there is one
            kept = Path(args.keep or ".") / f"{r['teacher']}_{r['config']}_s{r['seed']}" / "metrics.jsonl"
            if args.keep and kept.is_file():
                r["wall_split"] = time_split(kept)
        write_results(rows, args)
        return
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="datafree-precision-") as tmp:
        for name in [t for t in args.teachers.split(",") if t]:
            card = teacher_card(name)
            for i, seed in enumerate(int(s) for s in args.seeds.split(",") if s):
                for cfg in configs if i % 2 == 0 else configs[::-1]:  # alternate the order between seeds
                    rows.append(run_cell(name, card, cfg, seed, args, Path(tmp)))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    write_results(rows, args)  # after every cell: a run stopped early keeps its rows


if __name__ == "__main__":
    main()
