"""What the compute budget plans for each suite teacher and backend (no run, nothing timed).

For each teacher and method, ``datafree.plan.plan(teacher, method=M)`` with every default (the
student ``compress`` would build), and its ``compute_budget``: the estimate before and after, the
notches and the settings (docs/fidelity.md, "Session 7" and "Session 8"; the online backends dafl, zskt,
dfad: docs/online_generators.md, "Session 10"). ``auto``: the path ``compress`` takes by default
(``datafree.plan.auto_choice``; since session 25 Fast-10's pool above 10x where it fits the budget).

Usage::

    PYTHONPATH=. python bench/budget_plans.py --suite /work/cache/suite --methods cmi,nayer,fast,auto \
        [--out bench/results/s8_cmi/budget_plans.json] \
        [--num-images N --epochs E --batch-size B --iterations I]    # a user's settings, kept
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import add_setting_options, markdown_table, setup  # noqa: E402

TEACHERS = ["resnet8_digits", "mobilenetv2_32", "resnet18_32", "vgg8_bn_32", "wrn40_2_32"]


def plan_row(teacher: str, method: str, device: Any, given: dict[str, int] | None = None) -> dict[str, Any]:
    """The plan's budget for one cell: estimates (with the noise baseline), notches, settings.

    ``given``: a user's ``num_images``, KD ``epochs`` / ``batch_size``, ``iterations`` (kept): the
    estimate of a cell run with those settings, to hold against its measured CPU time.
    """
    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.plan import AUTO, DEFAULT_NUM_IMAGES, auto_choice, path_settings, plan
    from datafree.rules import named_method_path

    lm = load_model(resolve_teacher(teacher), device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = {k: v for k, v in (given or {}).items() if v is not None}
        kd = {k: g[k] for k in ("epochs", "batch_size") if k in g} or None
        options = {"iterations": g["iterations"]} if "iterations" in g else None
        run = method
        if method == AUTO:  # compress's default: the path of the teacher's cost (Fast-10 or Fast-5's pool...)
            choice = auto_choice(lm.model, lm.card, g.get("num_images") or DEFAULT_NUM_IMAGES)
            run = choice["method"]
        else:  # compress's own loop for a named backend on an expensive teacher (nayer's pool), unless -n
            choice = None if "num_images" in g else named_method_path(method, lm.model, lm.card)
        pool, options, kd, grow_to = path_settings(choice, options, kd)
        p = plan(lm, method=run, pool=pool, num_images=g.get("num_images"), kd=kd, method_options=options,
                 max_iterations=grow_to)  # fmt: skip
    b = p.info["compute_budget"]
    return {"teacher": teacher, "method": method, "estimate_s": b["estimate_s"],
            "capped_estimate": b["capped_estimate"], "over_budget": b["over_budget"],
            "notches": b["notches"], "settings": b["settings"], "num_images": p.num_images,
            "kd": {"epochs": p.kd.epochs, "batch_size": p.kd.batch_size,
                   "steps_per_epoch": p.kd.steps_per_epoch},
            "iterations": p.method_options.get("iterations"), "pool": pool, "rule": b["rule"],
            "path": choice["rule"] if choice else None}  # fmt: skip


def _settings(r: dict[str, Any]) -> str:
    kd = f"{r['kd']['epochs']} epochs x {r['kd']['steps_per_epoch']} of {r['kd']['batch_size']}"
    if "iterations" not in r["settings"]:  # an online backend: a generator trained inside the KD stage
        return f"online, {kd}"
    if r.get("pool"):  # compress's growing pool (auto's, nayer's): rounds inside the KD
        return f"pool, {r['settings']['iterations']} steps a round, {kd}"
    return f"{r['num_images']} images x {r['settings']['iterations']} steps, {kd}"


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default=",".join(TEACHERS))
    ap.add_argument("--methods", default="cmi,nayer,fast")
    ap.add_argument("--suite", default=None)
    ap.add_argument("--out", type=Path, default=None)
    add_setting_options(ap, iterations=True)
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    device = setup("cpu", 1)
    given = {"num_images": args.num_images, "epochs": args.epochs, "batch_size": args.batch_size,
             "iterations": args.iterations}  # fmt: skip
    rows = [plan_row(t, m, device, given) for t in args.teachers.split(",") for m in args.methods.split(",")]
    header = ["teacher", "method", "estimate (s)", "settings", "capped (s): synthesis + KD + baseline"]
    body = [[r["teacher"], r["method"], f"{r['estimate_s']:.0f}", _settings(r),
             f"{r['capped_estimate']['total_s']:.0f}: {r['capped_estimate']['synthesis_s']:.0f} + "
             f"{r['capped_estimate']['kd_s']:.0f} + {r['capped_estimate']['baseline_s']:.0f}"
             + (" (over)" if r["over_budget"] else "")]
            for r in rows]  # fmt: skip
    table = markdown_table(header, body)
    print(table)
    if args.out:
        from datafree.utils import atomic_write, atomic_write_json

        atomic_write_json(args.out, {"rows": rows})
        with atomic_write(args.out.with_suffix(".md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
