"""The command's process setup for in-process step benches, and their shared options (no torch at import).

``bench/di_step_variants.py`` and ``bench/di_step_phases.py`` time the DeepInversion step as ``datafree
synthesize`` runs it, so they must import ``cli`` (its OpenMP wait choice, made before torch loads libgomp)
before anything imports torch; this module imports nothing heavy until :func:`command_setup` runs.
"""

from __future__ import annotations

import argparse


def add_step_options(ap: argparse.ArgumentParser, rounds: int, warmup: int, out: str) -> None:
    """``--batch`` (128), ``--threads`` (2), ``--rounds``, ``--warmup`` and ``--out`` with these defaults."""
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--out", default=out)


def command_setup(threads: int) -> bool:
    """As the command: ``cli``'s OpenMP wait choice, its allocator setting, ``threads``; whether tuned."""
    import cli  # noqa: F401  (the command's OpenMP wait choice, made at import)
    from datafree.malloc import tune_malloc

    tuned = tune_malloc()
    import torch

    torch.set_num_threads(threads)
    return tuned


def write_report(
    args: argparse.Namespace, header: list[str], table: list[list[str]], rows: list[dict]
) -> None:
    """Print the table under a line with the batch, threads and OpenMP wait; ``rows`` to ``args.out``."""
    import os

    import torch

    from bench.common import machine, markdown_table
    from datafree.utils import atomic_write_json

    wait = os.environ.get("DATAFREE_OMP_WAIT")
    print(f"batch {args.batch}, {args.threads} thread(s), OpenMP wait {wait}\n")
    print(markdown_table(header, table))
    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "rows": rows})
