r"""Per-class accuracy of finished ``compress`` runs, and the classes ``student.weak_classes`` would name.

For each run directory (``model.json`` and ``report.json`` of a ``compress`` run), the student and its
teacher (the report's ``teacher.card``) are evaluated per class on the digits test split
(:func:`datafree.evaluate.evaluate_model`), and the run's weak classes are listed by the rule of
:func:`datafree.quality.weak_classes` (under half the teacher's rate on the class). Session 32 ran it on
the job queue's runs of sessions 27-32 (``bench/results/s32/per_class_scan.md``) to see where the rule
falls: the runs at 95% or more of their teacher, against the runs that missed a class.

Usage (the session-32 table; ``--confusion 1``: where each student puts the real 1s)::

    OMP_WAIT_POLICY=PASSIVE python bench/per_class_scan.py /tmp/job_queue/* --confusion 1 --threads 2 \
        --out bench/results/s32/per_class_scan.md
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch


@functools.lru_cache(maxsize=16)
def _teacher_metrics(card: str) -> dict:
    from datafree.cards import load_model
    from datafree.evaluate import evaluate_model

    lm = load_model(card)
    return evaluate_model(lm.model, lm.card)


@torch.no_grad()
def _read_as(lm, cls: int) -> str:
    """How many of the digits test split's images of ``cls`` the model assigns to each class."""
    from datafree.data.evalsets import open_eval_data

    counts = torch.zeros(lm.card.num_classes, dtype=torch.long)
    norm = lm.card.normalizer()
    for x, y in open_eval_data("digits:test", lm.card, batch_size=256):
        pred = lm.model.eval()(norm(x)).argmax(1)[y == cls]
        counts += torch.bincount(pred, minlength=lm.card.num_classes)
    return " ".join(str(int(v)) for v in counts)


def main() -> None:
    """Scan the runs given on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="compress output directories")
    ap.add_argument("--out", type=Path, help="write the table here (Markdown) as well as to stdout")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--confusion",
        type=int,
        metavar="CLASS",
        help="also list what the student calls the real images of CLASS (counts per class)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datafree.cards import load_model
    from datafree.evaluate import evaluate_model
    from datafree.quality import weak_classes

    lines = [
        "| run | % of teacher | student per class (%) | lowest class / teacher's rate on it | weak classes |"
        + (f" real {args.confusion}s read as (classes 0-9) |" if args.confusion is not None else ""),
        "|---|---|---|---|---|" + ("---|" if args.confusion is not None else ""),
    ]
    for d in sorted(args.runs):
        if not (d / "model.json").is_file() or not (d / "report.json").is_file():
            continue
        rep = json.loads((d / "report.json").read_text())
        t = _teacher_metrics(rep["teacher"]["card"])
        lm = load_model(d / "model.json")
        s = evaluate_model(lm.model, lm.card)
        low = min(range(len(s["per_class"])), key=lambda c: s["per_class"][c])
        per = " ".join(f"{100 * a:.0f}" for a in s["per_class"])
        lines.append(
            f"| {d.name} | {100 * s['accuracy'] / t['accuracy']:.1f} | {per} | "
            f"{low}: {100 * s['per_class'][low]:.0f} / {100 * t['per_class'][low]:.0f} | "
            f"{weak_classes(s, t) or '-'} |"
            + (f" {_read_as(lm, args.confusion)} |" if args.confusion is not None else "")
        )
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
