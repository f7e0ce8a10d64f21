"""bf16 fidelity: the same `datafree compress` run in fp32 and in `--precision bf16 --channels-last`.

Usage:
    python bench/precision_fidelity.py [--teachers resnet8_digits,resnet18_32] [--images 256]
                                       [--iterations 100] [--epochs 10] [--steps-per-epoch 20]
                                       [--seeds 0] [--threads 1] [--out bench/results/precision_fidelity.json]

Each cell is one `datafree compress` (a fresh process) with every setting explicit, so that a change of
the rule-based defaults does not move the comparison: the same teacher, seed, number of images,
DeepInversion batch and step cap, student architecture and KD budget; only ``--precision`` and
``--channels-last`` differ. Reported per cell: the student's accuracy on the real digits test split
(``report.json``), the teacher's agreement with the targets on its own synthetic images (recomputed
here by an fp32 teacher forward on the stored pixels, so both precisions are judged alike), the stage
times and the load average. The difference bf16 - fp32 of the student accuracy per teacher and seed
is the figure that answers "fidelity within 0.5 points".
"""

from __future__ import annotations

import argparse
import json
import os
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
from bench.suite import suite_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SUITE = suite_dir()  # $DATAFREE_SUITE or ~/.cache/datafree/suite (assets/train_suite.py)
CONFIGS = {"fp32": ["--precision", "fp32"], "bf16_cl": ["--precision", "bf16", "--channels-last"]}


def teacher_card(name: str) -> str:
    """A shipped teacher name, a card path, or a suite teacher cached in the suite cache (bench/suite.py)."""
    from datafree.cards import shipped_teachers

    if name in shipped_teachers() or name.endswith(".json"):
        return name
    cached = SUITE / name / "model.json"
    if cached.is_file():
        return str(cached)
    raise SystemExit(f"unknown teacher {name!r}: a shipped name, a card path, or a cached suite teacher")


def agreement(card: str, data_dir: Path) -> dict[str, float]:
    """Teacher (fp32) argmax vs target label on the dataset's stored pixels, and mean confidence."""
    from datafree.cards import load_model
    from datafree.dataset import SyntheticDataset

    lm = load_model(card, "cpu")
    d = SyntheticDataset.open(data_dir).load()
    x = lm.card.normalizer()(d["images"].float())
    with torch.no_grad():
        p = torch.cat([lm.model(x[i : i + 256]) for i in range(0, len(x), 256)]).softmax(1)
    return {
        "agreement": float((p.argmax(1) == d["labels"]).float().mean()),
        "confidence": float(p.amax(1).mean()),
        "images": len(x),
    }


def run_cell(card: str, cfg: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One `datafree compress` run; its report figures, the fp32 agreement and the wall time."""
    out = work / f"{Path(card).parent.name if card.endswith('.json') else card}_{cfg}_s{seed}"
    cmd = [sys.executable, "-c", "import cli; cli.main()", "compress", "--teacher", card, "--out", str(out),
           "--student", args.student, "-n", str(args.images), "--iterations", str(args.iterations),
           "--set", f"batch_size={args.batch_size}", "--epochs", str(args.epochs),
           "--steps-per-epoch", str(args.steps_per_epoch), "--kd-batch-size", str(args.kd_batch_size),
           "--lr", str(args.lr), "--no-baseline", "--seed", str(seed), "--threads", str(args.threads),
           "--quiet", *CONFIGS[cfg]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rep = json.loads((out / "report.json").read_text())
    return {
        "config": cfg,
        "seed": seed,
        "student_accuracy": rep["student"]["accuracy"],
        "teacher_accuracy": rep["teacher"]["accuracy"],
        "stages_seconds": rep.get("stages_seconds"),
        "precision": rep.get("precision"),
        "wall_s": round(wall, 1),
        "load_average_end": os.getloadavg()[0],
        **agreement(card, out / "data"),
    }


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,resnet18_32")
    ap.add_argument("--student", default="resnet8_half")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256, help="DeepInversion batch")
    ap.add_argument("--iterations", type=int, default=100, help="DeepInversion step cap per batch")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps-per-epoch", type=int, default=20)
    ap.add_argument("--kd-batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "precision_fidelity.json"))
    ap.add_argument("--rows-from", default="", help="rebuild the results from a run's printed rows (stderr)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rows_from:  # rebuild the table and json from the rows a run printed (one JSON object a line)
        lines = Path(args.rows_from).read_text().splitlines()
        write_results([json.loads(line) for line in lines if line.startswith("{")], args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="datafree-fidelity-") as tmp:
        for name in [t for t in args.teachers.split(",") if t]:
            card = teacher_card(name)
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                for cfg in CONFIGS:  # fp32 then bf16 for each seed: adjacent in time
                    row = {"teacher": name, **run_cell(card, cfg, seed, args, Path(tmp))}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    write_results(rows, args)  # after every cell: a long run stopped early keeps its rows


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The markdown table on stdout and the json (rows, per-teacher bf16 - fp32 differences)."""
    table, summary = [], []
    for name in dict.fromkeys(r["teacher"] for r in rows):
        diffs = []
        for seed in dict.fromkeys(r["seed"] for r in rows if r["teacher"] == name):
            cell = {r["config"]: r for r in rows if r["teacher"] == name and r["seed"] == seed}
            if len(cell) < 2:
                continue  # the pair is not complete yet
            a, b = cell["fp32"], cell["bf16_cl"]
            diffs.append(100 * (b["student_accuracy"] - a["student_accuracy"]))
            sa, sb = (
                (a["stages_seconds"] or {}).get("synthesize"),
                (b["stages_seconds"] or {}).get("synthesize"),
            )
            table.append([name, seed, f"{a['student_accuracy']:.4f}", f"{b['student_accuracy']:.4f}",
                          f"{diffs[-1]:+.2f}", f"{a['agreement']:.4f}", f"{b['agreement']:.4f}",
                          f"{sa} / {sb}", f"{a['wall_s']} / {b['wall_s']}"])  # fmt: skip
        if not diffs:
            continue
        summary.append(
            {"teacher": name, "diff_points": diffs, "median_diff_points": statistics.median(diffs)}
        )
    header = ["teacher", "seed", "student acc fp32", "bf16+cl", "diff (points)", "agreement fp32", "bf16+cl",
              "synthesis s fp32 / bf16", "wall s fp32 / bf16"]  # fmt: skip
    print(markdown_table(header, table))
    from datafree.utils import atomic_write_json

    settings = {k: v for k, v in vars(args).items() if k != "out"}
    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "settings": settings,
                                 "rows": rows, "summary": summary})  # fmt: skip


if __name__ == "__main__":
    main()
