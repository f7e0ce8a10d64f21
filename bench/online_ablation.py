r"""One online-backend training run with given overrides: the tuning runs behind the defaults.

Trains a student with :func:`datafree.online_train.train_online` (the method's defaults, then the
overrides), evaluates it on the digits test split after every epoch, and prints one line: the
settings, the final test accuracy, its ratio to the teacher's, wall and CPU time, and the
per-epoch accuracies. docs/online_generators.md lists the runs behind each default that differs
from its paper.

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/online_ablation.py --teacher lenet5_digits --method dfad \
        --set balance=0 --kd epochs=30 [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import key_values  # noqa: E402


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet8_digits", help="a shipped teacher name or a model card path")
    ap.add_argument("--method", required=True)
    ap.add_argument("--student", default=None)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="backend option (repeatable)"
    )
    ap.add_argument("--kd", action="append", default=[], metavar="KEY=VALUE", help="KD option (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated seeds, one run each (overrides --seed)")
    ap.add_argument("--json", default=None, metavar="FILE", help="append one JSON line per run to FILE")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="also: accuracy on the train+val split per epoch (1,437 images the student never sees either), "
        "per-class test accuracy, the test confusions, the teacher's argmax on 2,048 generated images",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datafree.cards import load_model
    from datafree.evaluate import evaluate_model
    from datafree.online_train import train_online
    from datafree.progress import set_quiet

    set_quiet(True)
    synth = key_values(args.set, "--set", ap.error)
    kd = key_values(args.kd, "--kd", ap.error)
    lm = load_model(args.teacher)
    teacher_acc = evaluate_model(lm.model, lm.card)["accuracy"]
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    other = _other_split(lm) if args.diagnose else None
    for seed in seeds:
        history: list[float] = []
        history_other: list[float] = []

        def per_epoch(
            student: torch.nn.Module,
            history: list[float] = history,
            history_other: list[float] = history_other,
            seed: int = seed,
        ) -> float:
            acc = float(evaluate_model(student, lm.card)["accuracy"])
            history.append(round(acc, 3))
            extra = ""
            if other is not None:
                history_other.append(round(_accuracy(student, *other), 4))
                extra = f" (train+val {history_other[-1]:.4f})"
            print(f"  seed {seed} epoch {len(history)}: {acc:.4f}{extra}", file=sys.stderr, flush=True)
            return acc

        t0, c0 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as d:
            r = train_online(lm, args.method, args.student, d, kd, seed=seed, eval_fn=per_epoch, **synth)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        diagnosis = _diagnose(lm, r) if args.diagnose else None
        acc = evaluate_model(r.student, lm.card)["accuracy"]
        print(
            f"{args.teacher} {args.method} set={synth} kd={kd} seed={seed}: acc {acc:.4f} "
            f"({acc / teacher_acc:.1%} of the teacher), wall {wall:.0f} s, CPU {cpu:.0f} s; "
            f"per epoch {history}",
            flush=True,
        )
        if args.json:
            student = r.student_card.arch if r.student_card is not None else args.student
            row = {"teacher": lm.card.name or args.teacher, "method": args.method, "set": synth, "kd": kd,
                   "student": student, "student_given": args.student is not None,
                   "seed": seed, "test_acc": acc, "teacher_acc": teacher_acc, "ratio": acc / teacher_acc,
                   "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "per_epoch": history,
                   "threads": args.threads, "torch": torch.__version__}  # fmt: skip
            if diagnosis is not None:
                row.update(per_epoch_train_val=history_other, **diagnosis)
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


def _other_split(lm: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised train+val digits (the teacher's training data; the student never sees them)."""
    from datafree.data.digits import digits_split

    shape = tuple(int(v) for v in lm.card.input_shape)
    xs, ys = zip(*(digits_split(s, shape) for s in ("train", "val")), strict=True)  # type: ignore[arg-type]
    return lm.card.normalizer()(torch.cat(xs)), torch.cat(ys)


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    model.train(was)
    return pred


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_predict(model, x) == y).float().mean())


def _diagnose(lm: Any, r: Any) -> dict[str, Any]:
    """Per-class test accuracy, the test confusions, and the teacher's classes on generated images."""
    from datafree.data.digits import digits_split

    shape = tuple(int(v) for v in lm.card.input_shape)
    x, y = digits_split("test", shape)  # type: ignore[arg-type]
    pred = _predict(r.student, lm.card.normalizer()(x))
    k = int(lm.card.num_classes)
    per_class = [round(float((pred[y == c] == c).float().mean()), 3) for c in range(k)]
    confusions = {
        f"{a}->{b}": int(((y == a) & (pred == b)).sum()) for a in range(k) for b in range(k) if a != b
    }
    confusions = {key: v for key, v in sorted(confusions.items(), key=lambda kv: -kv[1]) if v}
    gen = torch.Generator().manual_seed(1234)
    images = torch.cat([r.synthesizer.sample(256, generator=gen).images for _ in range(8)])
    t_pred = _predict(lm.model, images)
    s_pred = _predict(r.student, images)
    counts = torch.bincount(t_pred, minlength=k).tolist()
    agree = float((t_pred == s_pred).float().mean())
    out = {"per_class_test": per_class, "confusions_test": confusions, "teacher_counts_generated": counts,
           "agreement_generated": round(agree, 4)}  # fmt: skip
    print(f"  per-class test accuracy {per_class}; confusions (true->pred) {confusions}", flush=True)
    print(f"  teacher's argmax on 2048 generated images {counts}; student agrees on {agree:.1%}", flush=True)
    return out


if __name__ == "__main__":
    main()
