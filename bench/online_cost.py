"""Predicted CPU cost of a `compress --method M` cell of an online backend (dafl, zskt, dfad), from rounds.

For each teacher and online method, the plan ``compress`` would run (the backend's defaults and KD
settings, under the compute budget of ``datafree.plan.budget_settings``, the default student) runs
one untimed round, then ``--rounds`` timed rounds of the KD loop itself (:func:`datafree.distill.distill`,
one epoch of ``rounds x kd_steps`` student steps: ``g_steps`` generator steps, then ``kd_steps`` student
steps on the generator's batches). The generator steps (``source.update``) are timed apart from the
student steps, and one noise-baseline KD step (the same student step on Gaussian noise, no generator)
is timed too. The prediction is::

    run = round CPU x epochs x rounds + noise-baseline step CPU x epochs x rounds x kd_steps

in process CPU seconds (one thread). It leaves out loading, evaluation and the latency profile. Each row
also carries the plan's own estimate (``compute_budget``: priced, not timed) to compare with.

``--fit FILES`` (no timing) fits each backend's two :class:`datafree.rules.OnlinePrice` rows of
``datafree.rules.ONLINE_PRICES`` on the rows of earlier runs (session 44's form): a generator step costs
``B x (nets x (T + [S]) + generator x G_train) + step_s``, a student step ``K x (nets x (T + S) + generator x
G_forward) + step_s`` and a noise-baseline step the same without the generator's term (``T`` the teacher's
priced forward, ``S`` the student's priced training step, ``[S]`` for the adversarial backends, ``G`` the
generator's, ``B`` / ``K`` the batches), by non-negative relative least squares; it prints each row's error
and the run's estimate against the timed prediction.

Usage::

    PYTHONPATH=. python bench/online_cost.py --teachers resnet18_32,vgg8_bn_32 --methods dafl,zskt,dfad \
        --suite /work/cache/suite [--rounds 2] [--out FILE.json]
    PYTHONPATH=. python bench/online_cost.py --fit FILE.json[,FILE2.json] --suite /work/cache/suite \
        --out FIT.json
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, setup  # noqa: E402


def _timed_rounds(lm: Any, p: Any, student: Any, rounds: int) -> tuple[float, float]:
    """CPU seconds of ``rounds`` rounds of the KD loop, and the generator steps' share of them."""
    from datafree.distill import distill

    source = p.open_source()
    spent = {"update": 0.0}
    update = source.update

    def timed_update(s: Any) -> Any:
        c0 = time.process_time()
        out = update(s)
        spent["update"] += time.process_time() - c0
        return out

    source.update = timed_update  # type: ignore[method-assign]
    kd = dataclasses.replace(p.kd, epochs=1, steps_per_epoch=rounds * p.kd.kd_steps)
    c0 = time.process_time()
    distill(lm.model, student, source, kd, input_shape=tuple(lm.card.input_shape),
            student_objective=p.student_objective, desc="")  # fmt: skip
    return time.process_time() - c0, spent["update"]


def _noise_step_s(lm: Any, p: Any, student: Any, steps: int) -> float:
    """CPU seconds of one noise-baseline KD step (the run's KD settings on Gaussian noise)."""
    from datafree.distill import distill
    from datafree.sources import NoiseSource
    from datafree.utils import device_of

    noise = NoiseSource(1024, lm.card, device_of(lm.model), seed=0)
    kd = dataclasses.replace(p.kd, epochs=1, steps_per_epoch=1, kd_steps=1)
    distill(lm.model, student, noise, kd, input_shape=tuple(lm.card.input_shape), desc="")  # warm-up
    kd = dataclasses.replace(kd, steps_per_epoch=steps)
    c0 = time.process_time()
    distill(lm.model, student, noise, kd, input_shape=tuple(lm.card.input_shape), desc="")
    return (time.process_time() - c0) / steps


def predict(teacher: str, method: str, rounds: int, device: Any) -> dict[str, Any]:
    """Time the loop's rounds of ``method`` on ``teacher``; return the predicted CPU seconds of the cell."""
    import copy
    import warnings

    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.plan import make_student, plan
    from datafree.rules import conv_linear_macs

    lm = load_model(resolve_teacher(teacher), device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student, arch = make_student(None, lm, 0, method)
    p = plan(lm, method=method, student=student)  # compress's settings, under the compute budget
    budget = p.info.get("compute_budget")
    kd = p.kd
    _timed_rounds(lm, p, copy.deepcopy(student), 1)  # untimed: first-call allocations
    total_s, gen_s = _timed_rounds(lm, p, copy.deepcopy(student), rounds)
    round_s, gen_round_s = total_s / rounds, gen_s / rounds
    noise_s = _noise_step_s(lm, p, copy.deepcopy(student), max(2, kd.kd_steps))
    n_rounds = kd.epochs * kd.rounds
    run_s = round_s * n_rounds
    baseline_s = noise_s * n_rounds * kd.kd_steps
    shape = tuple(int(v) for v in lm.card.input_shape)
    synth = p.synthesizer
    return {
        "teacher": teacher,
        "method": method,
        "student": arch,
        "teacher_macs": conv_linear_macs(lm.model, shape),
        "student_macs": conv_linear_macs(student, shape),
        "generator_macs": conv_linear_macs(synth.generator, (synth.config.latent_dim,)) if synth else 0,
        "generator_batch": int(synth.config.batch_size) if synth is not None else 0,
        "kd_batch_size": kd.batch_size,
        "kd_epochs": kd.epochs,
        "rounds_per_epoch": kd.rounds,
        "g_steps": kd.g_steps,
        "kd_steps": kd.kd_steps,
        "timed_rounds": rounds,
        "round_cpu_s": round(round_s, 4),
        "generator_cpu_s": round(gen_round_s / max(1, kd.g_steps), 4),  # one generator step
        "kd_step_cpu_s": round((round_s - gen_round_s) / kd.kd_steps, 4),  # one student step
        "noise_step_cpu_s": round(noise_s, 4),
        "run_cpu_s": round(run_s, 1),
        "baseline_cpu_s": round(baseline_s, 1),
        "total_cpu_s": round(run_s + baseline_s, 1),
        # the plan's own estimate (priced cost measure, no timing; noise baseline included in total_s)
        "budget_rule": budget.get("rule") if budget else None,
        "budget_estimate": budget.get("capped_estimate") if budget else None,
    }


def _features(row: dict[str, Any], device: Any) -> dict[str, float]:
    """Priced per-image CPU seconds of the row's teacher forward, student step, generator step and forward."""
    import warnings

    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.plan import make_student
    from datafree.rules import cpu_seconds_per_image
    from generators import method_class

    lm = load_model(resolve_teacher(row["teacher"]), device)
    shape = tuple(int(v) for v in lm.card.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student, _ = make_student(row["student"], lm, 0)
    cls = method_class(row["method"])
    g_train, g_fwd = cls.generator_cpu_s(lm.model, shape, cls.Config())
    t_fwd, s_train = cpu_seconds_per_image(lm.model, shape, "forward"), cpu_seconds_per_image(student, shape)
    return {"T": t_fwd, "S": s_train, "G_train": g_train, "G_forward": g_fwd,
            "adversarial": float(cls.needs_student)}  # fmt: skip


def _relative_lsq(columns: list[list[float]], ys: list[float]) -> list[float]:
    """Non-negative ``p`` minimising sum(((sum_j p_j x_j - y) / y)^2): relative least squares.

    A column whose unconstrained price comes out negative is dropped (its price 0) and the rest refitted.
    """
    import numpy as np

    y = np.asarray(ys, dtype=float)
    a = np.stack([np.asarray(c, dtype=float) / y for c in columns], axis=1)
    active = list(range(len(columns)))
    while True:
        sol = np.linalg.lstsq(a[:, active], np.ones_like(y), rcond=None)[0] if active else np.zeros(0)
        if (sol >= 0).all():
            break
        active.pop(int(np.argmin(sol)))
    out = [0.0] * len(columns)
    for j, v in zip(active, sol, strict=True):
        out[j] = float(v)
    return out


def step_parts(row: dict[str, Any], f: dict[str, float]) -> dict[str, tuple[int, float, float]]:
    """Each step kind's ``(batch, nets_s, generator_s)``: :func:`datafree.rules.online_step_s`'s arguments.

    ``{"generator": (B, T + [S], G_train), "student": (K, T + S, G_forward), "noise": (K, T + S, 0)}``.
    """
    b, k = row["generator_batch"], row["kd_batch_size"]
    return {
        "generator": (b, f["T"] + f["adversarial"] * f["S"], f["G_train"]),
        "student": (k, f["T"] + f["S"], f["G_forward"]),
        "noise": (k, f["T"] + f["S"], 0.0),
    }


def fit_prices(rows: list[dict[str, Any]], feats: list[dict[str, float]]) -> dict[str, Any]:
    """Each backend's ``(generator step, student step)`` prices of ``datafree.rules.ONLINE_PRICES``.

    The generator step's on the timed generator steps; the student step's on the timed student steps and
    the noise-baseline steps together (the same prices, the noise step without the generator's term). A
    step is :func:`datafree.rules.online_step_s`, linear in its prices: its columns are ``batch x nets_s``,
    ``batch x generator_s`` and 1. Each row's error, and the whole priced run against the timed one, come
    with them.
    """
    from datafree.rules import OnlinePrice, online_step_s

    parts = [step_parts(r, f) for r, f in zip(rows, feats, strict=True)]

    def columns(steps: list[tuple[int, str]]) -> list[list[float]]:
        return [[parts[i][kind][0] * parts[i][kind][1] for i, kind in steps],
                [parts[i][kind][0] * parts[i][kind][2] for i, kind in steps], [1.0] * len(steps)]  # fmt: skip

    out: dict[str, Any] = {"form": list(OnlinePrice._fields), "prices": {}, "rows": []}
    for method in sorted({r["method"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["method"] == method]
        g = _relative_lsq(columns([(i, "generator") for i in idx]), [rows[i]["generator_cpu_s"] for i in idx])
        steps = [(i, "student") for i in idx] + [(i, "noise") for i in idx]
        times = [rows[i]["kd_step_cpu_s"] for i in idx] + [rows[i]["noise_step_cpu_s"] for i in idx]
        k = _relative_lsq(columns(steps), times)
        out["prices"][method] = {"generator": [round(v, 4) for v in g], "student": [round(v, 4) for v in k]}
    for r, part, f in zip(rows, parts, feats, strict=True):
        pg, pk = (OnlinePrice(*out["prices"][r["method"]][kind]) for kind in ("generator", "student"))
        gen, kd, noise = (online_step_s(price, *part[kind])
                          for price, kind in ((pg, "generator"), (pk, "student"), (pk, "noise")))  # fmt: skip
        n = r["kd_epochs"] * r["rounds_per_epoch"]
        total = n * (r["g_steps"] * gen + r["kd_steps"] * (kd + noise))
        out["rows"].append({
            "teacher": r["teacher"], "method": r["method"],
            **{name: f[name] for name in ("T", "S", "G_train", "G_forward")},
            "generator_step_error": round(gen / r["generator_cpu_s"] - 1, 3),
            "kd_step_error": round(kd / r["kd_step_cpu_s"] - 1, 3),
            "noise_step_error": round(noise / r["noise_step_cpu_s"] - 1, 3),
            "priced_total_s": round(total, 1), "timed_total_s": r["total_cpu_s"],
            "total_error": round(total / r["total_cpu_s"] - 1, 3),
            # the estimate of the prices the timed checkout planned with
            "planned_error": round(r["budget_estimate"]["total_s"] / r["total_cpu_s"] - 1, 3)
            if r.get("budget_estimate") else None,
        })  # fmt: skip
    errors = [abs(r["total_error"]) for r in out["rows"]]
    out["worst_total_error"] = max(errors)
    out["rms_total_error"] = round(math.sqrt(sum(e * e for e in errors) / len(errors)), 3)
    planned = [abs(r["planned_error"]) for r in out["rows"] if r["planned_error"] is not None]
    out["worst_planned_error"] = max(planned) if planned else None
    return out


def fit(paths: list[Path], device: Any) -> dict[str, Any]:
    """:func:`fit_prices` on the rows of timed runs (the features priced on this checkout's rules)."""
    import json

    rows = [r for p in paths for r in json.loads(p.read_text())["rows"]]
    out = fit_prices(rows, [_features(r, device) for r in rows])
    out["rows_from"] = [str(p) for p in paths]
    return out


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits")
    ap.add_argument("--methods", default="dafl,zskt,dfad")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per cell (after one untimed)")
    ap.add_argument("--suite", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--fit", default=None, metavar="FILES", help="fit the prices on these runs' rows (no timing)"
    )
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    device = setup("cpu", args.threads)
    if args.fit:
        from datafree.utils import atomic_write_json

        result = fit([Path(p) for p in args.fit.split(",")], device)
        print(f"prices ({', '.join(result['form'])}) of the generator / student step:", result["prices"])
        for r in result["rows"]:
            print(f"{r['teacher']:>15} {r['method']:>5}: generator step {r['generator_step_error']:+.0%}, "
                  f"student step {r['kd_step_error']:+.0%}, noise step {r['noise_step_error']:+.0%}; run "
                  f"{r['priced_total_s']} s priced, {r['timed_total_s']} s timed "
                  f"({r['total_error']:+.0%})")  # fmt: skip
        if args.out:
            atomic_write_json(args.out, result)
        worst, rms, planned = (
            result[k] or 0 for k in ("worst_total_error", "rms_total_error", "worst_planned_error")
        )
        print(f"whole runs: worst {worst:.0%}, rms {rms:.0%}; the timed checkout's own: worst {planned:.0%}")
        return 0
    rows = []
    for t in args.teachers.split(","):
        for m in args.methods.split(","):
            r = predict(t, m, args.rounds, device)
            rows.append(r)
            print(
                f"{t} x {m} ({r['student']}): round {r['round_cpu_s']} s (generator step "
                f"{r['generator_cpu_s']} s, student step {r['kd_step_cpu_s']} s) x {r['kd_epochs']} x "
                f"{r['rounds_per_epoch']} = "
                f"{r['run_cpu_s']} s; baseline {r['baseline_cpu_s']} s; total {r['total_cpu_s']} s CPU; "
                f"plan: {r['budget_rule']}",
                flush=True,
            )
            if args.out:  # after every cell: a killed run keeps what it measured
                from datafree.utils import atomic_write_json

                atomic_write_json(args.out, {"machine": machine(device), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
