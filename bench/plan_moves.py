r"""Which of compress's default plans a training-step price moves: each teacher x method, with and without it.

For every teacher and method given, builds the plan ``datafree compress --teacher T --method M`` would run
(``datafree.pipeline.compress_plan``: the default student, the method's own path, the compute budget; nothing
is run) twice: under ``datafree.rules`` as they are, and with the named ``TRAIN_PRICES`` entries removed;
prints the settings that differ (KD epochs, batch, steps, the backend's options, the images, the estimate).
Session 43 used it for the small-map price. ``--dump FILE`` writes the plans under the rules of the checkout
the script runs from, ``--against FILE`` prints the moves from such a file to this checkout's plans
(session 44: the online prices' refit, the script copied into a worktree of the commit before).

Usage::

    PYTHONPATH=. python bench/plan_moves.py --suite /work/cache/suite --drop small_map_macs \\
        --teachers resnet18_32,mobilenetv2_32,vgg8_bn_32,wrn40_2_32,resnet8_digits \\
        --methods auto,fast,cmi,nayer,deepinversion,dafl,zskt,dfad
    PYTHONPATH=. python bench/plan_moves.py --suite DIR --teachers ... --methods ... --dump before.json
    PYTHONPATH=. python bench/plan_moves.py --suite DIR --teachers ... --methods ... --against before.json
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere


def default_plan(teacher: str, method: str, seed: int = 0) -> dict[str, Any]:
    """The settings of compress's plan for ``teacher`` (a suite or shipped name) and ``method``.

    The plan is :func:`datafree.pipeline.compress_plan`'s, the one ``datafree compress`` runs.
    """
    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.pipeline import compress_plan

    lm = load_model(resolve_teacher(teacher), "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, _ = compress_plan(lm, method, seed=seed)
    budget = p.info.get("compute_budget") or {}
    return {"method": p.method, "pool": p.pool, "epochs": p.kd.epochs, "batch": p.kd.batch_size,
            "steps": p.kd.steps_per_epoch, "kd_steps": p.kd.kd_steps, "options": dict(p.method_options),
            "num_images": p.num_images, "estimate_s": budget.get("capped_estimate_s")}  # fmt: skip


def _plan_or_refusal(teacher: str, method: str) -> dict[str, Any]:
    """:func:`default_plan`, or ``{"refused": message}`` (a BN method on a BN-less teacher)."""
    from datafree.errors import UserInputError

    try:
        return default_plan(teacher, method)
    except UserInputError as e:
        return {"refused": str(e).split(":")[0]}


def plans(teachers: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """``{"teacher method": plan}`` under ``datafree.rules`` as they are (:func:`_plan_or_refusal`)."""
    return {f"{t} {m}": _plan_or_refusal(t, m) for t in teachers for m in methods}


def compare(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(teacher, method, {setting: (before, after)})`` for every pair in both."""
    out = []
    for key, b in before.items():
        if key in after:
            a = after[key]
            out.append(
                (*key.split(" ", 1), {k: (b.get(k), a.get(k)) for k in {*b, *a} if b.get(k) != a.get(k)})
            )
    return out


def moves(teachers: list[str], methods: list[str], drop: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(teacher, method, {setting: (without the prices, with them)})`` for every pair."""
    from datafree import rules

    kept = dict(rules.TRAIN_PRICES)
    plans: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    try:
        without = {k: v for k, v in kept.items() if k not in drop}
        for variant, prices in (("without", without), ("with", kept)):
            rules.TRAIN_PRICES = prices
            rules._train_s.cache_clear()  # the default student's price is cached per arch
            plans[variant] = {(t, m): _plan_or_refusal(t, m) for t in teachers for m in methods}
    finally:
        rules.TRAIN_PRICES = kept
        rules._train_s.cache_clear()
    return compare(
        *({f"{t} {m}": v for (t, m), v in plans[variant].items()} for variant in ("without", "with"))
    )


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default=None)
    ap.add_argument("--drop", default=None, help="TRAIN_PRICES entries to remove, comma-separated")
    ap.add_argument(
        "--dump", type=Path, default=None, help="write the plans under the rules as they are (JSON)"
    )
    ap.add_argument("--against", type=Path, default=None,
                    help="the moves from a --dump's plans (another checkout's rules) to these")  # fmt: skip
    ap.add_argument("--teachers", required=True)
    ap.add_argument("--methods", required=True)
    args = ap.parse_args(argv)
    if args.suite:
        os.environ["DATAFREE_SUITE"] = args.suite
    import torch

    torch.set_num_threads(1)
    teachers, methods = args.teachers.split(","), args.methods.split(",")
    if args.dump:
        from datafree.utils import atomic_write_json

        atomic_write_json(args.dump, plans(teachers, methods))
        return 0
    if args.against:
        import json

        found = compare(json.loads(args.against.read_text()), plans(teachers, methods))
    elif args.drop:
        found = moves(teachers, methods, args.drop.split(","))
    else:
        ap.error("give --drop, --dump or --against")
    for t, m, diff in found:
        moved = {k: v for k, v in diff.items() if k != "estimate_s"}
        est = diff.get("estimate_s")
        line = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in moved.items()) or "unchanged"
        shown = est and None not in est
        print(f"{t} {m}: {line}" + (f" (estimate {est[0]:.0f} -> {est[1]:.0f} s)" if shown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
