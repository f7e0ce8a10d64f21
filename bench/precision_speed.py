r"""Speed of the precision options on one teacher: DeepInversion step and KD step per configuration.

Configurations (``--configs``): ``fp32``, ``bf16``, ``fp32+cl`` (channels_last), ``bf16+cl``, and
``fp32+compile`` (``torch.compile`` of the KD forward passes, as ``--compile`` does; its compile
time is reported separately). For each, in one process, timed alternately (A B C A B C ...) so that
background load hits all alike:

* ``di``: ``synth.step()`` of DeepInversion at ``--batch`` (hooks, priors, Adam, keep-best);
* ``kd``: one step of the shared KD stage (teacher forward, student forward+backward, SGD) at
  ``--batch``, timed as a ``distill()`` call of ``--kd-steps`` steps divided by the steps.

Reports medians and each configuration's median per-round speed-up over ``fp32``.

Usage::

    PYTHONPATH=. python bench/precision_speed.py --teacher /work/cache/suite/resnet18_32/model.json \\
        --threads 2 --reps 5 --out bench/results/precision_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, markdown_table, setup  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _configure(cfg: str, device: torch.device) -> None:
    from datafree import precision

    parts = cfg.split("+")
    precision.configure(parts[0], "cl" in parts, "compile" in parts, device)


def build(cfg: str, teacher: str, batch: int, kd_steps: int, device: torch.device) -> dict[str, Any]:
    """The DI and KD callables of one configuration (own teacher and student copies)."""
    from datafree.cards import load_model
    from datafree.distill import KDConfig, distill
    from datafree.models import create_model, default_student_for
    from datafree.progress import set_quiet
    from datafree.sources import TensorSource
    from generators import create_synthesizer

    set_quiet(True)
    _configure(cfg, device)
    lm = load_model(teacher, device)
    synth = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=batch, iterations=1000)
    synth.reset(batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    student = create_model(default_student_for(lm.card.arch), lm.card.num_classes, lm.card.in_channels).to(
        device
    )
    source = TensorSource(torch.randn((4 * batch, *lm.card.input_shape)).to(device))
    kd = KDConfig(epochs=1, steps_per_epoch=kd_steps, batch_size=batch)

    def di() -> None:
        _configure(cfg, device)
        synth.step()

    def kd_step() -> None:
        _configure(cfg, device)
        distill(lm.model, student, source, kd, input_shape=lm.card.input_shape)

    return {"di": di, "kd": kd_step}


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="resnet8_digits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--kd-steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--configs", default="fp32,bf16,fp32+cl,bf16+cl")
    ap.add_argument("--out", default=str(RESULTS / "precision_speed.json"))
    args = ap.parse_args(argv)
    device = setup(args.device, args.threads)
    configs = [c for c in args.configs.split(",") if c]
    fns, compile_s = {}, {}
    for c in configs:
        fns[c] = build(c, args.teacher, args.batch, args.kd_steps, device)
        t0 = time.perf_counter()
        for f in fns[c].values():  # warm-up (and compilation, for +compile)
            f()
        compile_s[c] = round(time.perf_counter() - t0, 1)
    times: dict[tuple[str, str], list[float]] = {(c, k): [] for c in configs for k in ("di", "kd")}
    cpu: dict[tuple[str, str], list[float]] = {(c, k): [] for c in configs for k in ("di", "kd")}
    for _ in range(args.reps):
        for k in ("di", "kd"):
            for c in configs:
                per = args.kd_steps if k == "kd" else 1
                c0, t0 = time.process_time(), time.perf_counter()
                fns[c][k]()
                times[(c, k)].append((time.perf_counter() - t0) / per)
                cpu[(c, k)].append((time.process_time() - c0) / per)
    rows = []
    for c in configs:
        row: dict[str, Any] = {"config": c, "warmup_s": compile_s[c]}
        for k in ("di", "kd"):
            t, base = times[(c, k)], times[(configs[0], k)]
            row[f"{k}_ms"] = round(1e3 * statistics.median(t), 1)
            row[f"{k}_speedup"] = round(statistics.median(b / x for b, x in zip(base, t, strict=True)), 3)
            tc, bc = cpu[(c, k)], cpu[(configs[0], k)]
            row[f"{k}_cpu_ms"] = round(1e3 * statistics.median(tc), 1)
            row[f"{k}_cpu_speedup"] = round(statistics.median(b / x for b, x in zip(bc, tc, strict=True)), 3)
        rows.append(row)
    from datafree import precision

    precision.configure()
    info = machine(device)
    where = f"{args.threads} thread(s), {info['cpu']}, torch {info['torch']}"
    print(f"{args.teacher}, batch {args.batch}, {where}\n")
    header = [
        "config",
        "DI ms",
        f"DI speed-up vs {configs[0]} (wall / CPU)",
        "KD ms",
        "KD speed-up",
        "warm-up s",
    ]
    table = [
        [
            r["config"],
            r["di_ms"],
            f"{r['di_speedup']:.2f}x / {r['di_cpu_speedup']:.2f}x",
            r["kd_ms"],
            f"{r['kd_speedup']:.2f}x / {r['kd_cpu_speedup']:.2f}x",
            r["warmup_s"],
        ]
        for r in rows
    ]
    print(markdown_table(header, table))
    from datafree.utils import atomic_write_json

    atomic_write_json(
        args.out,
        {
            "machine": info,
            "teacher": args.teacher,
            "batch": args.batch,
            "threads": args.threads,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
