r"""DeepInversion step variants against a bare forward+backward, in one process, interleaved step by step.

Usage::

    PYTHONPATH=. python bench/di_step_variants.py \
        [--teachers resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32,wrn40_2_32] \
        [--variants 'session6:one_node_stats=false,pointwise=false;default:'] [--batch 128] [--threads 2] \
        [--rounds 12] [--out bench/results/di_step_variants.json]

Imports ``cli`` first, so OpenMP threads wait as ``datafree synthesize`` makes them (``DATAFREE_OMP_WAIT``:
spinning on an idle machine, passive under load), and applies the command's allocator setting. Per teacher
one synthesizer per variant (``create_synthesizer`` as the command builds it; a variant is ``name:`` then
comma-separated ``key=value`` DeepInversion settings, plus ``pointwise=false``, which turns the folded
network's strided 1x1 convolutions back into plain ``nn.Conv2d`` (``datafree.bnfold.StridedPointwiseConv2d``,
session 7), ``hooks=per_step``, which registers and removes the statistics hooks in every step (before session
7's second wave; now they stay over a batch), and ``roll=false``, which makes the jitter's roll the four block
copies at every size (``datafree.augment.ROLL_MAX_NUMEL`` = 0; before session 7's second wave), and
``taps=always``, which gives the one-node statistics their per-layer tap nodes at every size
(``datafree.bnfold.TAP_MIN_BYTES`` = 0; before session 8 they had them always), and ``adam=optimizer``, which
updates the pixels through ``Optimizer.step`` and ``zero_grad`` (``generators.deepinversion.DIRECT_ADAM`` off;
before session 9), and the teacher's bare
forward+backward (input gradients on, cross-entropy to random labels).
Each round runs one step of every variant and one bare pass, in turn, so slow phases of a shared or virtual
machine hit all alike; the table gives medians of the wall times (and of the process CPU times) and the
median over rounds of each step / bare ratio. ``session6`` is the code before session 7 up to the host-side
BN loss of the one-node path (which that setting does not use) and the per-batch pixel range (one clamp_).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "bench" / "results"

from bench.step_setup import add_step_options, command_setup, write_report  # noqa: E402  (no torch at import)


def _parse(variants: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for v in [v for v in variants.split(";") if v.strip()]:
        name, _, kvs = v.partition(":")
        out[name.strip()] = dict(kv.split("=", 1) for kv in kvs.split(",") if kv.strip())
    return out


def _value(s: str) -> object:
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        return float(s)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32,wrn40_2_32")
    ap.add_argument("--variants", default="session6:one_node_stats=false,pointwise=false;default:")
    add_step_options(ap, rounds=12, warmup=3, out=str(RESULTS / "di_step_variants.json"))
    args = ap.parse_args(argv)
    tuned = command_setup(args.threads)
    import torch

    from bench.common import bare_pass
    from bench.synthesis_overhead import teacher_card
    from datafree import augment, bnfold
    from datafree.bnfold import FoldedBNStatistics, StridedPointwiseConv2d
    from datafree.cards import load_model
    from generators import create_synthesizer, deepinversion

    variants = _parse(args.variants)
    rows, table = [], []
    for name in [t for t in args.teachers.split(",") if t]:
        lm = load_model(teacher_card(name, Path(tempfile.mkdtemp())), "cpu")
        b = args.batch
        bare = bare_pass(lm.model, lm.card.input_shape, lm.card.num_classes, b)

        fns = {"bare": bare}
        for vname, kv in variants.items():
            pseudo = ("pointwise", "hooks", "roll", "taps", "adam")
            settings = {k: _value(v) for k, v in kv.items() if k not in pseudo}
            s = create_synthesizer(
                "deepinversion", lm.model, lm.card, batch_size=b, iterations=10**6, **settings
            )
            if kv.get("pointwise", "true").lower() == "false" and s.folded is not None:
                for m in s.folded.net.modules():
                    if isinstance(m, StridedPointwiseConv2d):
                        m.__class__ = torch.nn.Conv2d
            if kv.get("hooks") == "per_step" and s.folded is not None:
                f = s.folded
                f.remove_hooks()  # those the fold's trial pass registered
                f.statistics = lambda one_node=False, f=f: FoldedBNStatistics(f.layers, f.bn_loss, one_node)
            s.reset(b, torch.Generator().manual_seed(0))
            roll_max = 0 if kv.get("roll", "true").lower() == "false" else augment.ROLL_MAX_NUMEL
            tap_min = 0 if kv.get("taps") == "always" else bnfold.TAP_MIN_BYTES
            direct = kv.get("adam") != "optimizer"

            def step(s=s, roll_max=roll_max, tap_min=tap_min, direct=direct) -> None:  # noqa: ANN001
                augment.ROLL_MAX_NUMEL, bnfold.TAP_MIN_BYTES = roll_max, tap_min
                deepinversion.DIRECT_ADAM = direct
                if not direct:  # the optimiser's own zero_grad, as before session 9
                    s.optimizer.zero_grad(set_to_none=True)
                logs = s.step()
                s.should_stop(s.iteration, logs)  # the command's plateau check (one host sync)

            fns[vname] = step
        for _ in range(args.warmup):
            for f in fns.values():
                f()
        load = os.getloadavg()[0]
        wall: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, f in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)

        def ratio(k: str, d: dict[str, list[float]]) -> float:
            return statistics.median(a / c for a, c in zip(d[k], d["bare"], strict=True))

        row = {"teacher": name, "batch_size": b, "threads": args.threads, "rounds": args.rounds,
               "malloc_tuned": tuned, "openmp_wait": os.environ.get("DATAFREE_OMP_WAIT"),
               "load_average_before": load, "load_average_after": os.getloadavg()[0],
               "variants": {k: kv for k, kv in variants.items()},
               **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in wall.items()},
               **{f"{k}_cpu_ms": 1e3 * statistics.median(v) for k, v in cpu.items()},
               **{f"{k}_over_bare": ratio(k, wall) for k in variants},
               **{f"{k}_over_bare_cpu": ratio(k, cpu) for k in variants},
               "rounds_ms": {k: [1e3 * t for t in v] for k, v in wall.items()}}  # fmt: skip
        rows.append(row)
        table.append([name, f"{row['bare_ms']:.1f}",
                      *[f"{row[f'{k}_ms']:.1f} ({row[f'{k}_over_bare']:.2f}x)" for k in variants],
                      *[f"{row[f'{k}_over_bare_cpu']:.2f}x" for k in variants], f"{load:.1f}"])  # fmt: skip
        print(table[-1], file=sys.stderr, flush=True)
    header = ["teacher", "bare ms", *[f"{k}: step ms (/ bare)" for k in variants],
              *[f"{k}: CPU / bare" for k in variants], "load"]  # fmt: skip
    write_report(args, header, table, rows)


if __name__ == "__main__":
    main()
