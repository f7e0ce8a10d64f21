r"""DeepInversion's step with ``one_node_stats`` off and on, in one process, interleaved (issue 13).

Usage::

    PYTHONPATH=. python bench/di_one_node_ab.py [--teachers resnet8_digits,mobilenetv2_32] [--batch 128] \
        [--threads 2] [--rounds 15] [--steps 4] [--out bench/results/di_one_node_ab.json]

Two synthesizers of the same teacher (``create_synthesizer`` with the CLI's allocator setting), one per
setting, take ``--steps`` steps in turn for ``--rounds`` rounds, so a busy machine's load hits both alike;
also a bare forward+backward of the teacher (input gradients on) in the same rounds. Reports per setting
the median and minimum step wall time, the median thread CPU time, and the ratios to the bare pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    """Run the A/B; write ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,mobilenetv2_32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "di_one_node_ab.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from datafree.malloc import tune_malloc

    tune_malloc()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    from bench.synthesis_overhead import teacher_card
    from datafree.cards import load_model
    from generators import create_synthesizer

    rows = []
    for name in args.teachers.split(","):
        lm = load_model(teacher_card(name, Path("/tmp")), "cpu")
        g = torch.Generator().manual_seed(1)
        x = torch.randn((args.batch, *lm.card.input_shape), generator=g).requires_grad_(True)
        y = torch.randint(0, lm.card.num_classes, (args.batch,), generator=g)

        def bare(model=lm.model, x=x, y=y) -> None:
            x.grad = None
            F.cross_entropy(model(x), y).backward()

        runs = {"bare": bare}
        for on in (False, True):
            s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=args.batch,
                                   iterations=10**6, one_node_stats=on)  # fmt: skip
            s.reset(args.batch, torch.Generator().manual_seed(0))
            runs[f"one_node={on}"] = s.step
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for fn in runs.values():  # warm-up
            for _ in range(3):
                fn()
        for _ in range(args.rounds):
            for k, fn in runs.items():
                for _ in range(args.steps):
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    wall[k].append(time.perf_counter() - t)
                    cpu[k].append(time.process_time() - c)
        bare_med = statistics.median(wall["bare"])
        row = {"teacher": name, "batch": args.batch, "threads": args.threads, "load": os.getloadavg()[0]}
        for k in runs:
            row[k] = {"median_ms": 1e3 * statistics.median(wall[k]), "min_ms": 1e3 * min(wall[k]),
                      "cpu_median_ms": 1e3 * statistics.median(cpu[k]),
                      "median_over_bare": statistics.median(wall[k]) / bare_med,
                      "min_over_bare_min": min(wall[k]) / min(wall["bare"])}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "torch": torch.__version__, "rows": rows}, indent=1))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
