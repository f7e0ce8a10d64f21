r"""Where a DeepInversion step's time goes, phase by phase, against the bare pass's forward and backward.

Usage::

    PYTHONPATH=. python bench/di_step_phases.py [--teachers resnet8_digits,resnet18_32] [--batch 128] \
        [--threads 2] [--rounds 100] [--out bench/results/di_step_phases.json]

Imports ``cli`` first (the command's OpenMP wait choice) and applies its allocator setting, as
``bench/di_step_variants.py`` does. The step is the real ``DeepInversion.step`` of a synthesizer built as the
command builds it; the phases are timed by wrapping, for the measurement only, the folded network's forward,
the BN statistics' loss (``FoldedBNStatistics.loss``: the sums, the one node's host part), the step's loss
function (``_loss``: jitter, forward, statistics, cross-entropy, priors) and the pixels' update
(``Optimizer.step``, or since session 9 the direct fused-Adam call,
``generators.deepinversion._fused_adam_step``); "backward
and the rest" is the step minus those (zeroing the gradient, the backward, the keep-best copy, the clamp).
The bare pass (``bench.common.bare_pass``'s: the unmodified teacher, cross-entropy to random labels, input
gradients on) is timed in its forward and backward. Each round runs one step and one bare pass; the table
gives medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "bench" / "results"

from bench.step_setup import add_step_options, command_setup, write_report  # noqa: E402  (no torch at import)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,resnet18_32")
    add_step_options(ap, rounds=100, warmup=10, out=str(RESULTS / "di_step_phases.json"))
    args = ap.parse_args(argv)
    tuned = command_setup(args.threads)
    import os

    import torch
    import torch.nn.functional as F

    from bench.synthesis_overhead import teacher_card
    from datafree.bnfold import FoldedBNStatistics
    from datafree.cards import load_model
    from generators import create_synthesizer, deepinversion

    clock = time.perf_counter
    phases = ["forward", "statistics", "loss rest", "optimiser", "backward and rest"]
    rows, table = [], []
    for name in [t for t in args.teachers.split(",") if t]:
        lm = load_model(teacher_card(name, Path(tempfile.mkdtemp())), "cpu")
        s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=args.batch, iterations=10**6)
        s.reset(args.batch, torch.Generator().manual_seed(0))
        if s.folded is None:
            print(f"{name}: no folded network (not a BN teacher); skipped", file=sys.stderr)
            continue
        spent = dict.fromkeys(["forward", "statistics", "loss", "optimiser"], 0.0)

        def timed(fn, key, spent=spent):  # noqa: ANN001, ANN202
            def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                t0 = clock()
                out = fn(*args, **kwargs)
                spent[key] += clock() - t0
                return out

            return wrapper

        s.folded.net.forward = timed(s.folded.net.forward, "forward")
        s._loss = timed(s._loss, "loss")
        s.optimizer.step = timed(s.optimizer.step, "optimiser")
        loss_fn, adam_fn = FoldedBNStatistics.loss, deepinversion._fused_adam_step
        FoldedBNStatistics.loss = timed(loss_fn, "statistics")  # both restored below
        deepinversion._fused_adam_step = timed(adam_fn, "optimiser")  # the direct update (session 9)
        g = torch.Generator().manual_seed(1)
        x = torch.randn((args.batch, *lm.card.input_shape), generator=g).requires_grad_(True)
        y = torch.randint(0, lm.card.num_classes, (args.batch,), generator=g)
        names = [*phases, "step", "bare forward", "bare backward", "bare"]
        times: dict[str, list[float]] = {k: [] for k in names}
        try:
            for r in range(args.warmup + args.rounds):
                for k in spent:
                    spent[k] = 0.0
                t0 = clock()
                logs = s.step()
                s.should_stop(s.iteration, logs)  # the command's plateau check (one host sync)
                step = clock() - t0
                t0 = clock()
                x.grad = None
                loss = F.cross_entropy(lm.model(x), y)
                t1 = clock()
                loss.backward()
                t2 = clock()
                if r < args.warmup:
                    continue
                times["forward"].append(spent["forward"])
                times["statistics"].append(spent["statistics"])
                times["loss rest"].append(spent["loss"] - spent["forward"] - spent["statistics"])
                times["optimiser"].append(spent["optimiser"])
                times["backward and rest"].append(step - spent["loss"] - spent["optimiser"])
                times["step"].append(step)
                times["bare forward"].append(t1 - t0)
                times["bare backward"].append(t2 - t1)
                times["bare"].append(t2 - t0)
        finally:
            FoldedBNStatistics.loss, deepinversion._fused_adam_step = loss_fn, adam_fn
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        ratio = statistics.median(a / b for a, b in zip(times["step"], times["bare"], strict=True))
        rows.append({"teacher": name, "batch_size": args.batch, "threads": args.threads,
                     "rounds": args.rounds, "malloc_tuned": tuned,
                     "openmp_wait": os.environ.get("DATAFREE_OMP_WAIT"), "median_ms": med,
                     "step_over_bare": ratio})  # fmt: skip
        table.append([name, *[f"{med[k]:.2f}" for k in phases], f"{med['step']:.2f}",
                      f"{med['bare forward']:.2f}", f"{med['bare backward']:.2f}", f"{med['bare']:.2f}",
                      f"{ratio:.3f}x"])  # fmt: skip
        print(table[-1], file=sys.stderr, flush=True)
    header = ["teacher", *[f"{k} ms" for k in phases], "step ms", "bare fwd ms", "bare bwd ms", "bare ms",
              "step / bare (median of rounds)"]  # fmt: skip
    write_report(args, header, table, rows)


if __name__ == "__main__":
    main()
