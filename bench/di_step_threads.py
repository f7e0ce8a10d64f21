r"""DeepInversion step and bare teacher pass per OpenMP wait setting, in workers and through the CLI.

Usage::

    PYTHONPATH=. python bench/di_step_threads.py \
        [--teachers resnet8_digits,mobilenetv2_32,resnet18_32] [--batch 128] [--threads 2] \
        [--rounds 2] [--steps 4] [--cli-steps 31] \
        [--envs 'passive:OMP_WAIT_POLICY=PASSIVE;spin:GOMP_SPINCOUNT=300000'] \
        [--out bench/results/di_step_threads.json]

Each ``--envs`` entry is ``NAME:VAR=VALUE,VAR=VALUE`` (``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` are
removed from the environment first, so an entry says everything about the OpenMP wait). libgomp reads
them when it is loaded, so each setting needs processes of its own: per setting, one worker times the
teacher's bare forward+backward (input gradients on), one times the DeepInversion step built as
``datafree synthesize`` builds it (``create_synthesizer``, the allocator setting, the plateau check), and
the real command (``datafree synthesize``, ``--cli-steps`` steps) times its step inside the run from
``metrics.jsonl`` (``bench/synthesis_overhead.py --in-run-only``'s measure). Every round runs each
worker ``--steps`` steps and each command once, so load hits all alike. ``libgomp``'s ``GOMP_SPINCOUNT``
(spins before a waiting thread sleeps; about 1e5 per millisecond) wins over ``OMP_WAIT_POLICY``; unset,
libgomp spins 3e5 times, ``PASSIVE`` means 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
RESULTS = HERE / "bench" / "results"
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "DATAFREE_OMP_WAIT")


def _parse_envs(text: str) -> dict[str, dict[str, str]]:
    out = {}
    for item in [t for t in text.split(";") if t]:
        name, _, kvs = item.partition(":")
        out[name] = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
    return out


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    return {**env, "PYTHONPATH": str(HERE), **extra}


def _worker(card: str, batch: int, threads: int, kind: str, env: dict[str, str]) -> subprocess.Popen:
    from bench.di_step_ab import WORKER

    p = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(HERE), card, str(batch), str(threads), kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(HERE),
    )  # fmt: skip
    assert p.stdout is not None
    json.loads(p.stdout.readline())
    return p


def _turn(p: subprocess.Popen, steps: int) -> float:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"{steps}\n")
    p.stdin.flush()
    return statistics.median(json.loads(p.stdout.readline())["wall"])


def _cli_step(card: str, batch: int, steps: int, threads: int, out: Path, env: dict[str, str]) -> float:
    import shutil

    from bench.synthesis_overhead import _in_run_step

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "import cli; cli.main()", "synthesize", "--teacher", card, "-n", str(batch),
           "--batch-size", str(batch), "--iterations", str(steps), "--out", str(out),
           "--threads", str(threads), "--quiet", "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=str(HERE))
    t = _in_run_step(out)
    return float("nan") if t is None else t


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,mobilenetv2_32,resnet18_32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="worker steps per round")
    ap.add_argument("--cli-steps", type=int, default=31, help="steps of each datafree synthesize run")
    ap.add_argument("--no-cli", action="store_true", help="workers only")
    ap.add_argument("--envs", default="passive:OMP_WAIT_POLICY=PASSIVE;spin:GOMP_SPINCOUNT=300000")
    ap.add_argument("--out", default=str(RESULTS / "di_step_threads.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench.common import markdown_table
    from bench.synthesis_overhead import teacher_card

    envs = _parse_envs(args.envs)
    rows, table = [], []
    work = Path(tempfile.mkdtemp(prefix="di-step-threads-"))
    for name in [t for t in args.teachers.split(",") if t]:
        card = teacher_card(name, work)
        workers = {(e, k): _worker(card, args.batch, args.threads, k, _env(v))
                   for e, v in envs.items() for k in ("bare", "di")}  # fmt: skip
        times: dict[str, list[float]] = {f"{e}_{k}": [] for e, k in workers}
        if not args.no_cli:
            times.update({f"{e}_cli": [] for e in envs})
        load = os.getloadavg()[0]
        t0 = time.time()
        for _ in range(args.rounds):
            for (e, k), p in workers.items():
                times[f"{e}_{k}"].append(_turn(p, args.steps))
            if not args.no_cli:
                for e, v in envs.items():
                    times[f"{e}_cli"].append(
                        _cli_step(card, args.batch, args.cli_steps, args.threads, work / "ds", _env(v))
                    )
        for p in workers.values():
            assert p.stdin is not None
            p.stdin.close()
            p.wait()
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        best_bare = min(med[f"{e}_bare"] for e in envs)
        row = {"teacher": name, "batch_size": args.batch, "threads": args.threads, "rounds": args.rounds,
               "envs": envs, "load_average_before": load, "load_average_after": os.getloadavg()[0],
               "seconds": time.time() - t0, **{f"{k}_ms": v for k, v in med.items()},
               "best_bare_ms": best_bare,
               "rounds_ms": {k: [1e3 * t for t in v] for k, v in times.items()}}  # fmt: skip
        rows.append(row)
        for e in envs:
            cells = [name, e, f"{med[f'{e}_bare']:.1f}", f"{med[f'{e}_di']:.1f}",
                     f"{med[f'{e}_di'] / med[f'{e}_bare']:.2f}x"]  # fmt: skip
            if not args.no_cli:
                c = med[f"{e}_cli"]
                cells += [f"{c:.1f}", f"{c / med[f'{e}_bare']:.2f}x", f"**{c / best_bare:.2f}x**"]
            table.append([*cells, f"{load:.1f}"])
            print(table[-1], file=sys.stderr, flush=True)
    header = ["teacher", "OpenMP wait", "bare ms", "DI step ms (worker)", "worker / bare"]
    if not args.no_cli:
        header += ["CLI step ms (in-run)", "CLI / bare (same wait)", "CLI / fastest bare"]
    print(f"batch {args.batch}, {args.threads} thread(s); envs {envs}\n")
    print(markdown_table([*header, "load"], table))
    import torch

    from bench.common import machine
    from datafree.utils import atomic_write_json

    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
