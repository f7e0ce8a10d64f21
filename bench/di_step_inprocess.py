"""DeepInversion step in-process, BN folding off and on, against a bare teacher forward+backward.

Usage:
    python bench/di_step_inprocess.py [--teachers resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32]
                                      [--batch 128] [--threads 2] [--reps 8] [--no-tune-malloc]
                                      [--out bench/results/di_step_inprocess.json]

In one process, interleaved per round: ``synth.step()`` with ``fold_bn=False`` (BN statistics by hooks
on every BN layer), with ``fold_bn=True`` (datafree.bnfold), and the teacher's bare forward+backward
(input gradients on, cross-entropy to random labels). The table gives medians and the median over
rounds of step / bare. The allocator setting of the CLI (datafree.malloc) is applied first unless
``--no-tune-malloc``; run the script both ways to see its effect (it is process-wide, so it cannot be
interleaved). Suite teachers are read from $DATAFREE_SUITE/NAME/model.json (bench/suite.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--no-tune-malloc", action="store_true")
    ap.add_argument(
        "--profile", type=int, default=0, help="also print torch.profiler tables of N folded steps"
    )
    ap.add_argument("--out", default=str(RESULTS / "di_step_inprocess.json"))
    args = ap.parse_args(argv)
    from datafree.malloc import tune_malloc

    tuned = False if args.no_tune_malloc else tune_malloc()
    import torch

    from bench.common import bare_pass, machine, markdown_table
    from bench.synthesis_overhead import teacher_card
    from datafree.cards import load_model
    from datafree.utils import atomic_write_json
    from generators import create_synthesizer

    torch.set_num_threads(args.threads)
    rows, table = [], []
    for name in [t for t in args.teachers.split(",") if t]:
        lm = load_model(teacher_card(name, Path(tempfile.mkdtemp())), "cpu")
        b = args.batch
        fns = {}
        for fold in (False, True):
            s = create_synthesizer(
                "deepinversion", lm.model, lm.card, batch_size=b, iterations=200, fold_bn=fold
            )
            s.reset(b, torch.Generator().manual_seed(0))
            fns[f"fold_{str(fold).lower()}"] = s.step
        bare = bare_pass(lm.model, lm.card.input_shape, lm.card.num_classes, b)

        fns["bare"] = bare
        for _ in range(2):
            for f in fns.values():
                f()
        if args.profile:
            from torch.profiler import profile

            for k in ("fold_true", "bare"):
                with profile() as prof:
                    for _ in range(args.profile):
                        fns[k]()
                print(
                    f"{name} {k}:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
                )
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.reps):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        ratio = {
            k: statistics.median(a / c for a, c in zip(times[k], times["bare"], strict=True)) for k in fns
        }
        row = {"teacher": name, "batch_size": b, "threads": args.threads, "malloc_tuned": tuned,
               "load_average_before": load, "load_average_after": os.getloadavg()[0],
               **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()},
               "ratio_fold_false": ratio["fold_false"], "ratio_fold_true": ratio["fold_true"]}  # fmt: skip
        rows.append(row)
        ms = [f"{row[k]:.1f}" for k in ("fold_false_ms", "fold_true_ms", "bare_ms")]
        table.append(
            [name, b, *ms, f"{ratio['fold_false']:.2f}x", f"**{ratio['fold_true']:.2f}x**", f"{load:.1f}"]
        )
        print(table[-1], file=sys.stderr, flush=True)
    header = ["teacher", "batch", "step ms (hooks)", "step ms (folded)", "bare fwd+bwd ms", "hooks / bare",
              "folded / bare", "load"]  # fmt: skip
    print(f"{args.threads} thread(s), malloc tuned: {tuned}\n")
    print(markdown_table(header, table))
    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
