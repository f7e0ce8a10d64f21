"""What glibc's mmap threshold costs a CPU loop: one elementwise op on activations of 8-48 MiB.

Usage:
    python bench/malloc_effect.py [--threads 1] [--reps 15] [--out bench/results/malloc_effect.json]

Runs the same measurement in two fresh processes, with ``DATAFREE_MALLOC_TUNING=0`` (glibc's defaults:
blocks above the dynamic mmap threshold, at most 32 MiB, get a fresh ``mmap`` on every allocation) and
with :func:`datafree.malloc.tune_malloc` applied first; each times ``x + 1`` (allocates its output)
and an inference BatchNorm pass on NCHW batches of 128 at 16x16 and 32x32 (median of ``--reps``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(128, 64, 16, 16), (128, 64, 32, 32), (128, 96, 32, 32)]


def probe(threads: int, reps: int) -> dict[str, float]:
    """Median milliseconds per op and shape in this process."""
    from datafree.malloc import tune_malloc

    tuned = tune_malloc()
    import statistics
    import time

    import torch

    torch.set_num_threads(threads)
    out: dict[str, float] = {"tuned": float(tuned)}
    for shape in SHAPES:
        x = torch.randn(shape)
        zeros, ones = x.new_zeros(shape[1]), x.new_ones(shape[1])
        ops = {
            "add": lambda x=x: x + 1.0,
            "bn_eval": lambda x=x, z=zeros, o=ones: torch.batch_norm(
                x, None, None, z, o, False, 0.0, 0.0, False
            ),
        }
        for name, fn in ops.items():
            for _ in range(3):
                fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[f"{name} {'x'.join(map(str, shape))} ({x.numel() * 4 / 2**20:.0f} MiB)"] = (
                1e3 * statistics.median(ts)
            )
    return out


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "malloc_effect.json"))
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.threads, args.reps)))
        return
    res = {}
    for label, value in (("glibc defaults", "0"), ("tune_malloc", "1")):
        env = {**os.environ, "DATAFREE_MALLOC_TUNING": value, "OMP_WAIT_POLICY": "PASSIVE"}
        cmd = [sys.executable, __file__, "--probe", "--threads", str(args.threads), "--reps", str(args.reps)]
        res[label] = json.loads(
            subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        )
    print("| op | glibc defaults ms | tune_malloc ms |\n|---|---|---|")
    for k in res["glibc defaults"]:
        if k != "tuned":
            print(f"| {k} | {res['glibc defaults'][k]:.2f} | {res['tune_malloc'][k]:.2f} |")
    from datafree.utils import atomic_write_json

    atomic_write_json(args.out, {"threads": args.threads, "load_average": os.getloadavg()[0], **res})


if __name__ == "__main__":
    main()
