r"""DeepInversion step of two checkouts of the code (before / after), interleaved step by step.

Usage::

    git archive BASE_COMMIT | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    PYTHONPATH=. python bench/di_step_ab.py --base /tmp/base \
        [--teachers resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32] [--batch 128] [--threads 2] \
        [--rounds 10] [--steps 5] [--out bench/results/di_step_ab.json]

One worker process per checkout (``--base`` and this one) builds the teacher and a DeepInversion
synthesizer exactly as ``datafree synthesize`` does (``create_synthesizer`` with the CLI's allocator
setting, ``--threads``), and a third times the teacher's bare forward+backward (input gradients on) of the
same batch with this checkout's code. The coordinator lets them run in turn, ``--steps`` steps per turn
for ``--rounds`` rounds, so a busy machine's load hits all three alike; the table gives the medians of
the per-step wall times and the median over rounds of each ratio. Each worker also counts the ATen
operations of one step (forward, backward, optimiser: a ``TorchDispatchMode``), which does not depend
on the load. Suite teachers are read from ``$DATAFREE_SUITE/NAME/model.json`` (bench/suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
RESULTS = HERE / "bench" / "results"

WORKER = r"""
import json, os, sys, tempfile, time
from pathlib import Path
root, card, batch, threads, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, root)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from datafree.malloc import tune_malloc
tune_malloc()
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
torch.set_num_threads(threads)
from datafree.cards import load_model
lm = load_model(card, "cpu")
if kind == "bare":
    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch, *lm.card.input_shape), generator=g).requires_grad_(True)
    y = torch.randint(0, lm.card.num_classes, (batch,), generator=g)
    def step():
        x.grad = None
        F.cross_entropy(lm.model(x), y).backward()
else:
    from generators import create_synthesizer
    s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=batch, iterations=10**6)
    s.reset(batch, torch.Generator().manual_seed(0))
    def step():
        logs = s.step()
        s.should_stop(s.iteration, logs)  # the plateau check of Synthesizer.synthesize (one host sync)
class Count(TorchDispatchMode):
    n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Count.n += 1
        return func(*args, **(kwargs or {}))
for _ in range(3):
    step()
with Count():
    step()
print(json.dumps({"ready": True, "ops": Count.n}), flush=True)
for line in sys.stdin:
    n = int(line)
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
"""


def _worker(root: Path, card: str, batch: int, threads: int, kind: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(root), card, str(batch), str(threads), kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root),
    )  # fmt: skip
    assert p.stdout is not None
    ready = json.loads(p.stdout.readline())
    return p, int(ready["ops"])


def _turn(p: subprocess.Popen, steps: int) -> dict[str, list[float]]:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"{steps}\n")
    p.stdin.flush()
    return json.loads(p.stdout.readline())


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="a checkout of the code before (e.g. from git archive)")
    ap.add_argument("--teachers", default="resnet8_digits,vgg8_bn_32,mobilenetv2_32,resnet18_32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="steps per turn")
    ap.add_argument("--out", default=str(RESULTS / "di_step_ab.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import tempfile

    from bench.common import markdown_table
    from bench.synthesis_overhead import teacher_card

    rows, table = [], []
    for name in [t for t in args.teachers.split(",") if t]:
        card = teacher_card(name, Path(tempfile.mkdtemp()))
        roots = {"before": Path(args.base).resolve(), "after": HERE, "bare": HERE}
        workers = {k: _worker(r, card, args.batch, args.threads, "bare" if k == "bare" else "di")
                   for k, r in roots.items()}  # fmt: skip
        load = os.getloadavg()[0]
        wall: dict[str, list[float]] = {k: [] for k in workers}
        cpu: dict[str, list[float]] = {k: [] for k in workers}
        t0 = time.time()
        for _ in range(args.rounds):
            for k, (p, _) in workers.items():
                r = _turn(p, args.steps)
                wall[k].append(statistics.median(r["wall"]))
                cpu[k].append(statistics.median(r["cpu"]))
        for p, _ in workers.values():
            assert p.stdin is not None
            p.stdin.close()
            p.wait()

        def ratio(a: str, b: str, d: dict[str, list[float]]) -> float:
            return statistics.median(x / y for x, y in zip(d[a], d[b], strict=True))

        row = {
            "teacher": name, "batch_size": args.batch, "threads": args.threads, "rounds": args.rounds,
            "steps_per_turn": args.steps, "load_average_before": load,
            "load_average_after": os.getloadavg()[0],
            "seconds": time.time() - t0,
            **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in wall.items()},
            **{f"{k}_cpu_ms": 1e3 * statistics.median(v) for k, v in cpu.items()},
            **{f"{k}_ops": workers[k][1] for k in workers},
            "before_over_bare": ratio("before", "bare", wall),
            "after_over_bare": ratio("after", "bare", wall),
            "before_over_after": ratio("before", "after", wall),
            "before_over_bare_cpu": ratio("before", "bare", cpu),
            "after_over_bare_cpu": ratio("after", "bare", cpu),
            "rounds_ms": {k: [1e3 * t for t in v] for k, v in wall.items()},
        }  # fmt: skip
        rows.append(row)
        table.append([
            name, f"{row['before_ms']:.1f}", f"{row['after_ms']:.1f}", f"{row['bare_ms']:.1f}",
            f"{row['before_over_bare']:.2f}x", f"**{row['after_over_bare']:.2f}x**",
            f"{row['before_over_bare_cpu']:.2f}x / {row['after_over_bare_cpu']:.2f}x",
            f"{row['before_ops']} / {row['after_ops']} / {row['bare_ops']}", f"{load:.1f}",
        ])  # fmt: skip
        print(table[-1], file=sys.stderr, flush=True)
    header = ["teacher", "before ms", "after ms", "bare fwd+bwd ms", "before / bare", "after / bare",
              "CPU time before / after (/ bare)", "ATen ops per step before / after / bare",
              "load"]  # fmt: skip
    print(f"batch {args.batch}, {args.threads} thread(s), base {args.base}\n")
    print(markdown_table(header, table))
    import torch

    from bench.common import machine
    from datafree.utils import atomic_write_json

    info = machine(torch.device("cpu"))
    atomic_write_json(args.out, {"machine": info, "base": str(args.base), "rows": rows})


if __name__ == "__main__":
    main()
