"""Distil the shipped teachers with every online backend (DAFL, ZSKT, DFAD) at its defaults.

For each teacher -> default student and each method: train with :func:`datafree.online_train.train_online`
(the method's default settings), measure the student's accuracy on the digits test split, the ratio
to the teacher's, the wall time, and the Gaussian-noise baseline (:class:`datafree.sources.NoiseSource`,
same student, same KD settings and number of student steps). Each row is written to
``bench/results/online/<teacher>__<method>[__s<seed>].json`` (seed 0 keeps the old name); the script then
prints the markdown table of every row there and writes them all to ``bench/results/online_backends.json``.
A teacher is a shipped name or a model card path (its card's ``name`` names the row).

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/online_backends.py [--methods dafl,zskt,dfad]
        [--teachers resnet8_digits,lenet5_digits,/path/to/model.json] [--seeds 0,1,2] [--threads 1]
    python bench/online_backends.py --table-only     # print the table of the rows measured so far
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

from datafree.cards import load_model  # noqa: E402
from datafree.distill import distill  # noqa: E402
from datafree.evaluate import evaluate_model  # noqa: E402
from datafree.models import create_model  # noqa: E402
from datafree.online_train import train_online  # noqa: E402
from datafree.plan import kd_settings, make_student  # noqa: E402
from datafree.sources import NoiseSource  # noqa: E402


def noise_baseline(teacher, student_arch: str, method: str, seed: int = 0) -> float:
    """KD on Gaussian noise with the method's KD settings (plain KD loss), same student steps."""
    kd = kd_settings(method, teacher=teacher.model, input_shape=tuple(teacher.card.input_shape))
    kd = dataclasses.replace(kd, batch_size=kd.batch_size if kd.batch_size else 256, seed=seed)
    rounds = kd.rounds
    kd = dataclasses.replace(kd, steps_per_epoch=rounds * kd.kd_steps, kd_steps=1, g_steps=1)
    card = teacher.card
    torch.manual_seed(seed)
    student = create_model(student_arch, card.num_classes, card.in_channels)
    source = NoiseSource(10_000, card, seed=seed)
    distill(teacher.model, student, source, kd, input_shape=tuple(card.input_shape))
    return evaluate_model(student, card)["accuracy"]


def main() -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="dafl,zskt,dfad")
    ap.add_argument("--teachers", default="resnet8_digits,lenet5_digits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, each a row")
    ap.add_argument("--no-noise", action="store_true", help="skip the noise baseline")
    ap.add_argument("--noise-only", action="store_true", help="only measure the noise baselines")
    ap.add_argument("--table-only", action="store_true", help="only print the table of the saved rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(__file__).resolve().parent / "results"
    rows_dir = results / "online"
    rows_dir.mkdir(parents=True, exist_ok=True)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    for tspec in [] if args.table_only else args.teachers.split(","):
        teacher = load_model(tspec)
        tname = teacher.card.name or Path(tspec).stem
        t_acc = evaluate_model(teacher.model, teacher.card)["accuracy"]
        for method, seed in [(m, s) for m in args.methods.split(",") for s in seeds]:
            s_arch = make_student(None, teacher, 0, method)[1]  # the default (distill without --student)
            stem = f"{tname}__{method}" + (f"__s{seed}" if seed else "")
            if args.noise_only:
                noise = noise_baseline(teacher, s_arch, method, seed)
                (rows_dir / f"{stem}.noise.json").write_text(json.dumps({"noise_acc": noise}) + "\n")
                print(f"{tname} {method} seed {seed}: noise {noise:.4f}", file=sys.stderr, flush=True)
                continue
            with tempfile.TemporaryDirectory() as d:
                t0, c0 = time.perf_counter(), time.process_time()
                r = train_online(teacher, method, s_arch, d, seed=seed)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            acc = evaluate_model(r.student, teacher.card)["accuracy"]
            row = {
                "teacher": tname, "student": s_arch, "method": method, "teacher_acc": t_acc, "test_acc": acc,
                "ratio": acc / t_acc, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                "kd_config": dataclasses.asdict(r.kd_config), "generator_steps": r.synthesizer.steps,
                "config": dataclasses.asdict(r.synthesizer.config),
                "threads": args.threads, "seed": seed, "torch": torch.__version__,
            }  # fmt: skip
            (rows_dir / f"{stem}.json").write_text(json.dumps(row, indent=2) + "\n")
            print(f"{tname} {s_arch} {method} seed {seed}: acc {acc:.4f} ({acc / t_acc:.1%}) in {wall:.0f}s",
                  file=sys.stderr, flush=True)  # fmt: skip
            if not args.no_noise:
                noise = noise_baseline(teacher, s_arch, method, seed)
                (rows_dir / f"{stem}.noise.json").write_text(json.dumps({"noise_acc": noise}) + "\n")
    order = {m: i for i, m in enumerate(("dafl", "zskt", "dfad"))}
    rows = []
    for p in sorted(rows_dir.glob("*__*.json")):
        if p.name.endswith(".noise.json"):
            continue
        row = json.loads(p.read_text())
        noise_file = p.with_name(p.stem + ".noise.json")
        row["noise_acc"] = (
            json.loads(noise_file.read_text())["noise_acc"] if noise_file.is_file() else float("nan")
        )
        rows.append(row)
    rows.sort(key=lambda r: (r["teacher"] != "resnet8_digits", r["teacher"], order.get(r["method"], 99),
                             r.get("seed", 0)))  # fmt: skip
    print(
        "| teacher | student | method | seed | test acc | ratio to teacher | wall time | CPU time | "
        "noise-baseline acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['teacher']} ({r['teacher_acc']:.4f}) | {r['student']} | {r['method']} | "
            f"{r.get('seed', 0)} | {r['test_acc']:.4f} | "
            f"{r['ratio']:.1%} | {r['wall_s']:.0f} s | {r.get('cpu_s', float('nan')):.0f} s | "
            f"{r['noise_acc']:.4f} |"
        )
    (results / "online_backends.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
