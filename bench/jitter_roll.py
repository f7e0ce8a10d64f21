r"""DeepInversion's jitter: ``torch.roll`` against the one-pass block copies, forward+backward CPU time.

Usage::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. nice -n 10 python bench/jitter_roll.py [--threads 1] [--rounds 15] \
        [--out bench/results/jitter_roll.json]

For batches of 128 at the shapes of the suite's teachers (1x16x16, 3x32x32) and one between, the median over
rounds of the process CPU time of 200 forward+backward passes of each roll (the same shift, (1, -1)); it
measures :data:`datafree.augment.ROLL_MAX_NUMEL`.
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


def main() -> None:
    """Time both rolls at each shape; write JSON and print a table."""
    import torch

    from datafree.augment import _Roll2d

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "jitter_roll.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shape in [(128, 1, 16, 16), (128, 3, 24, 24), (128, 3, 32, 32)]:
        x = torch.randn(shape, requires_grad=True)
        fns = {
            "blocks": lambda x=x: _Roll2d.apply(x, 1, -1),
            "roll": lambda x=x: torch.roll(x, (1, -1), (2, 3)),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, f in fns.items():
                t = time.process_time()
                for _ in range(200):
                    y = f()
                    y.backward(torch.ones_like(y))
                times[k].append((time.process_time() - t) / 200 * 1e6)
        row = {"shape": list(shape), "numel": x.numel()}
        row.update({f"{k}_us": statistics.median(v) for k, v in times.items()})
        rows.append(row)
        print(f"{shape}: {x.numel()} elements, blocks {row['blocks_us']:.1f} us, roll {row['roll_us']:.1f}")
    out = {"threads": args.threads, "rounds": args.rounds, "load": os.getloadavg(), "rows": rows,
           "note": "median CPU us per forward+backward (incl. ones_like and grad accumulation)"}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
