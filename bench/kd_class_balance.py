r"""The KD stage of a finished `compress` run again, on its written dataset, with other class balances.

Each row distils the run's student (its arch and KD settings, from ``report.json``) on the run's
``data/`` with ``KDConfig.class_balance`` set to one of ``--balance`` (0: the plain shuffle, the default;
1: every class drawn equally often) and a KD seed of ``--seeds`` (the student's initialisation, the draw
order and the augmentation; seed S of the run itself reproduces its student when the balance is what
the run used). The synthetic images are the same in every row, so the rows compare KD draws only.

    PYTHONPATH=. python bench/kd_class_balance.py --run /tmp/job_queue/mbv2_fast_s0 \
        --balance 0,1 --seeds 0,1,2 --out bench/results/s19_balance/mbv2_fast_s0.json

One thread (``--threads``); each row prints a JSON line and the file collects them with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from datafree.cards import load_model  # noqa: E402
from datafree.distill import KDConfig  # noqa: E402
from datafree.pipeline import distill_to_dir  # noqa: E402
from datafree.sources import DatasetSource  # noqa: E402


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a compress --out directory (report.json, data/)")
    ap.add_argument("--report", help="its report.json when kept elsewhere (default RUN/report.json)")
    ap.add_argument("--balance", default="0,1", help="class_balance values, comma-separated")
    ap.add_argument("--seeds", default="0", help="KD seeds, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file of the rows")
    ap.add_argument(
        "--work", default=None, help="where the KD runs checkpoint (default: a temporary directory)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    report = json.loads(Path(args.report or run / "report.json").read_text())
    teacher = load_model(report["teacher"]["card"], torch.device("cpu"))
    fields = {f.name for f in dataclasses.fields(KDConfig)}
    base = {k: v for k, v in report["kd"].items() if k in fields}
    rows = []
    work = Path(args.work or tempfile.mkdtemp(prefix="kd_class_balance_"))
    for seed in (int(s) for s in args.seeds.split(",")):
        for balance in (float(b) for b in args.balance.split(",")):
            kd = KDConfig(**{**base, "class_balance": balance, "seed": seed})
            src = DatasetSource(run / "data", teacher.card, seed=seed)
            t0 = time.process_time()
            arch = report["student"]["arch"]
            res = distill_to_dir(
                teacher, src, work / f"b{balance:g}_s{seed}", student_arch=arch, kd=kd, seed=seed, save=False
            )
            row = {
                "run": str(run),
                "balance": balance,
                "seed": seed,
                "accuracy": res["accuracy"],
                "ratio_to_teacher": round(res["accuracy"] / report["teacher"]["accuracy"], 4),
                "class_balance": res.get("class_balance"),
                "class_counts": src.class_counts().tolist(),
                "cpu_s": round(time.process_time() - t0, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"machine": machine(torch.device("cpu")), "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
