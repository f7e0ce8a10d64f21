"""Pruning table for the shipped BN teacher: ratios 0.3 / 0.5 / 0.7, before and after KD recovery.

Recovery uses synthetic data only: a DeepInversion dataset synthesized from the teacher (cached
under bench/results/ and reused; pass --data to use another one). Accuracy is on the digits test
split. Latency: 1 thread, batch 1 and 64, every model timed round-robin in this process.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/pruning.py            # ~20 min on 1 core
    PYTHONPATH=. python bench/pruning.py --data DIR --importances l1,l2,bn,taylor

Prints markdown tables and writes bench/results/pruning.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from datafree.cards import load_model  # noqa: E402
from datafree.distill import KDConfig  # noqa: E402
from datafree.profile import measure_latency  # noqa: E402
from datafree.prune import prune_stage  # noqa: E402
from datafree.sources import DatasetSource  # noqa: E402
from datafree.synthesis import synthesize_dataset  # noqa: E402
from datafree.utils import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet8_digits")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--importance", default="l2", help="criterion of the main table")
    p.add_argument("--importances", default="", help="also compare these criteria at --compare-ratio")
    p.add_argument("--compare-ratio", type=float, default=0.5)
    p.add_argument(
        "--data", type=Path, default=None, help="synthetic dataset (default: synthesize and cache)"
    )
    p.add_argument("--num-images", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=60, help="latency samples per model and batch size")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _dataset(args: argparse.Namespace, teacher) -> Path:
    if args.data is not None:
        return args.data
    root = RESULTS / f"synthetic_{args.teacher}_deepinversion_{args.num_images}"
    synthesize_dataset(teacher, "deepinversion", root, args.num_images, seed=args.seed)
    return root


def _run(teacher, data: Path, ratio: float, importance: str, args: argparse.Namespace) -> dict:
    source = DatasetSource(data, teacher.card, seed=args.seed)
    kd = KDConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    t0 = time.perf_counter()
    # Each model is saved (card + weights + KD checkpoint) under results/pruning_models/: a rerun
    # resumes or reuses the finished recovery instead of training again.
    out_dir = RESULTS / "pruning_models" / f"{importance}_{ratio:g}"
    res = prune_stage(teacher, ratio, importance=importance, source=source, kd=kd, out_dir=out_dir,
                      source_info={"data": str(data), "num_images": len(source)}, latency=False)  # fmt: skip
    res.report["seconds"] = round(time.perf_counter() - t0, 1)
    res.report.pop("history")
    return {"model": res.model, "report": res.report}


def _fmt_row(name: str, st: dict, lat: dict, base: dict, base_lat: dict, acc_pruned: float | None) -> str:
    # min over the round-robin samples: the least disturbed by other processes on a shared CPU
    pruned = "-" if acc_pruned is None else f"{acc_pruned:.4f}"
    return (
        f"| {name} | {st['params']:,} ({st['params'] / base['params']:.0%}) | {st['macs'] / 1e6:.2f} M "
        f"({st['macs'] / base['macs']:.0%}) | {st['size_bytes'] / 1024:.0f} KiB | {pruned} | "
        f"{st['accuracy']:.4f} "
        f"({st['accuracy'] / base['accuracy']:.1%}) | {lat[1]['min_ms']:.3f} | {lat[64]['min_ms']:.2f} "
        f"| {base_lat[1]['min_ms'] / lat[1]['min_ms']:.2f}x | "
        f"{base_lat[64]['min_ms'] / lat[64]['min_ms']:.2f}x |"
    )


HEADER = (
    "| model | params (of teacher) | MACs/image | size | acc. pruned | acc. recovered (kept) | ms @ b1 | ms "
    "@ b64 "
    "| speedup b1 | speedup b64 |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    """Prune and recover the teacher at each ratio and importance, time all models, print the tables."""
    args = _args()
    torch.set_num_threads(1)
    teacher = load_model(args.teacher)
    data = _dataset(args, teacher)
    runs: dict[str, dict] = {}
    for r in (float(v) for v in args.ratios.split(",")):
        runs[f"{args.importance} {r:g}"] = _run(teacher, data, r, args.importance, args)
    for imp in filter(None, args.importances.split(",")):
        key = f"{imp} {args.compare_ratio:g}"
        if key not in runs:
            runs[key] = _run(teacher, data, args.compare_ratio, imp, args)
    models = {"teacher": teacher.model, **{k: v["model"] for k, v in runs.items()}}
    lat = measure_latency(models, teacher.card.input_shape, (1, 64), repeats=args.repeats, threads=1)
    base = next(iter(runs.values()))["report"]["stages"]["unpruned"]
    lines = [HEADER, _fmt_row(f"{args.teacher} (teacher)", base, lat["teacher"], base, lat["teacher"], None)]
    for key, run in runs.items():
        st = run["report"]["stages"]
        lines.append(
            _fmt_row(
                f"pruned {key}", st["recovered"], lat[key], base, lat["teacher"], st["pruned"]["accuracy"]
            )
        )
    table = "\n".join(lines)
    print(
        f"\nSynthetic data: {data} ({next(iter(runs.values()))['report']['source']['num_images']} "
        "DeepInversion images); "
        f"recovery: {args.epochs} KD epochs; accuracy on the digits test split; latency: min of "
        f"{args.repeats} "
        "round-robin samples, 1 thread.\n"
    )
    print(table)
    out = {
        "teacher": args.teacher,
        "data": str(data),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "latency_ms": {k: {str(b): v for b, v in per.items()} for k, per in lat.items()},
        "runs": {k: v["report"] for k, v in runs.items()},
        "table": table,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "pruning.json", out)


if __name__ == "__main__":
    main()
