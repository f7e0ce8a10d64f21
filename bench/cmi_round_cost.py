"""Where a CMI run's synthesis CPU goes besides its priced steps: the round loop timed by phase.

``datafree.rules.SYNTH_PRICES`` prices CMI on steps timed right after a round's reset (bench/cell_cost.py:
one untimed step, then a few timed), i.e. with an empty memory bank. This runs the real dataset writer
(:func:`datafree.synthesis.synthesize_dataset`, as ``compress`` does) for ``--rounds`` rounds of
``--iterations`` steps and times, in process CPU seconds (one thread):

- the cell_cost measurement first, in the same process (a fresh synthesizer, 1 + ``--probe-steps``);
- every step inside the loop (with its round and the bank's fill), every ``reset``;
- what the writer does around them (the teacher's logits, the shard, the manifest, the quality check
  and the sample grid: the stage's total minus steps and resets);
- the contrastive head alone (forward + backward + Adam over ``2 x (batch + k)`` rows of the teacher's
  feature width) for ``k`` = 0 and the negatives a bank holds after each round.

Usage::

    PYTHONPATH=. python bench/cmi_round_cost.py --teacher resnet8_digits --rounds 3 --iterations 40 \
        --threads 1 --out bench/results/s9_cells/cmi_round_cost_resnet8_digits.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, setup  # noqa: E402


def _head_cost(synth: Any, rows: int, reps: int) -> float:
    """CPU s of one head step (forward, backward, Adam) over ``rows`` feature rows: InfoNCE as in CMI."""
    import torch.nn.functional as F

    dim = synth.head.head[0].in_features
    feats = torch.randn(rows, dim)
    head = type(synth.head)(dim, synth.config.head_dim)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)

    def once() -> None:
        x = feats.clone().requires_grad_(True)  # the features carry a gradient back to the teacher
        p_local, p_global = head(x).chunk(2)
        logits = p_local @ p_global.detach().T / 0.1
        loss = F.cross_entropy(logits, torch.arange(len(logits)))
        opt.zero_grad()
        loss.backward()
        opt.step()

    once()
    c0 = time.process_time()
    for _ in range(reps):
        once()
    return (time.process_time() - c0) / reps


def fit_bank_price(paths: list[Path]) -> dict[str, Any]:
    """``datafree.rules.CMI_BANK_PRICES``: the head's extra CPU s over ``k = 0``, on two multiply-add counts.

    Each timed ``k > 0`` of each file is a point: ``y`` its extra seconds, ``a = 2 k (d^2 + d h)`` the
    head's forward multiply-adds for the bank rows, ``b = ((n + k)^2 - n^2) h`` the logits'. ``y = p_a a +
    p_b b`` by relative least squares (every point counts by its relative error).
    """
    import json

    import numpy as np

    points = []
    for p in paths:
        r = json.loads(p.read_text())
        d, h, n = r["feature_dim"], 128, r["batch_size"]
        base = r["head_step_s_by_negatives"]["0"]
        for k, s in r["head_step_s_by_negatives"].items():
            k = int(k)
            if k:
                points.append({"teacher": r["teacher"], "d": d, "k": k, "head_macs": 2 * k * (d * d + d * h),
                               "logit_macs": ((n + k) ** 2 - n * n) * h, "extra_s": s - base})  # fmt: skip
    x = np.array([[q["head_macs"] / q["extra_s"], q["logit_macs"] / q["extra_s"]] for q in points])
    (p_head, p_logit), *_ = np.linalg.lstsq(x, np.ones(len(points)), rcond=None)
    for q in points:
        q["error"] = round((p_head * q["head_macs"] + p_logit * q["logit_macs"]) / q["extra_s"] - 1, 3)
    return {"head_s_per_mac": float(p_head), "logits_s_per_mac": float(p_logit), "points": points,
            "max_abs_error": max(abs(q["error"]) for q in points)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="resnet8_digits")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=None, help="default: CMI's (256)")
    ap.add_argument("--probe-steps", type=int, default=4)
    ap.add_argument("--head-reps", type=int, default=5)
    ap.add_argument("--suite", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) (an A/B)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--fit", default=None, help="FILE,FILE: the bank price from earlier outputs (no timing)")
    args = ap.parse_args(argv)
    if args.fit:
        fit = fit_bank_price([Path(p) for p in args.fit.split(",")])
        for q in fit["points"]:
            print(f"{q['teacher']} (d {q['d']}) k={q['k']}: {q['extra_s']:.4f} s for"
                  f" {q['head_macs'] / 1e6:.0f} M head + {q['logit_macs'] / 1e6:.0f} M logit MACs,"
                  f" fit error {q['error']:+.1%}")  # fmt: skip
        print(f"CMI_BANK_PRICES = ({fit['head_s_per_mac']:.3e}, {fit['logits_s_per_mac']:.3e})"
              f" (max |error| {fit['max_abs_error']:.1%})")  # fmt: skip
        if args.out:
            from datafree.utils import atomic_write_json

            atomic_write_json(args.out, fit)
        return 0
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    device = setup("cpu", args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    import datafree.quality
    import datafree.synthesis as synthesis
    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.dataset import SyntheticDataset
    from generators import create_synthesizer

    lm = load_model(resolve_teacher(args.teacher), device)
    opts: dict[str, Any] = {"iterations": args.iterations}
    if args.batch_size:
        opts["batch_size"] = args.batch_size

    # 1. bench/cell_cost.py's measurement: fresh synthesizer, one untimed step, then probe steps
    probe = create_synthesizer("cmi", lm.model, lm.card, seed=0, **opts)
    batch = probe.config.batch_size
    probe.reset(batch, torch.Generator().manual_seed(0))
    probe.step()
    c0 = time.process_time()
    for _ in range(args.probe_steps):
        probe.step()
    probe_step_s = (time.process_time() - c0) / args.probe_steps
    del probe

    # 2. the real writer, timed by phase
    synth = create_synthesizer("cmi", lm.model, lm.card, seed=0, **opts)
    steps: list[dict[str, Any]] = []
    resets: list[float] = []
    phases: dict[str, float] = {"write_shard": 0.0, "teacher_quality": 0.0, "save_image_grid": 0.0}
    step0, reset0 = synth.step, synth.reset

    def timed_step(student: Any = None) -> Any:
        bank, r = synth.bank.count, synth.rounds  # before the step: its last one closes the round
        c = time.process_time()
        out = step0(student)
        steps.append({"round": r, "bank": bank, "cpu_s": time.process_time() - c})
        return out

    def timed_reset(n: int, generator: Any = None) -> None:
        c = time.process_time()
        reset0(n, generator)
        resets.append(time.process_time() - c)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.process_time() - c

        return wrapper

    synth.step, synth.reset = timed_step, timed_reset  # type: ignore[method-assign]
    orig = (SyntheticDataset.write_shard, datafree.quality.teacher_quality, synthesis.save_image_grid)
    SyntheticDataset.write_shard = timed("write_shard", orig[0])  # type: ignore[method-assign]
    datafree.quality.teacher_quality = timed("teacher_quality", orig[1])
    synthesis.save_image_grid = timed("save_image_grid", orig[2])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            c0 = time.process_time()
            synthesis.synthesize_dataset(lm, "cmi", Path(tmp) / "ds", args.rounds * batch, seed=0,
                                         synthesizer=synth)  # fmt: skip
            stage_s = time.process_time() - c0
    finally:
        SyntheticDataset.write_shard, datafree.quality.teacher_quality, synthesis.save_image_grid = orig

    step_total = sum(s["cpu_s"] for s in steps)
    per_round = []
    for r in range(args.rounds):
        rs = [s["cpu_s"] for s in steps if s["round"] == r]
        per_round.append({
            "round": r, "bank": next(s["bank"] for s in steps if s["round"] == r), "steps": len(rs),
            "mean_step_s": round(statistics.mean(rs), 4), "median_step_s": round(statistics.median(rs), 4),
            "first_step_s": round(rs[0], 4), "steps_2_5_s": round(statistics.mean(rs[1:5]), 4),
            "last_quarter_s": round(statistics.mean(rs[-max(1, len(rs) // 4):]), 4),
            "reset_s": round(resets[r], 4),
            # the round in eighths: a step's cost drifting with the optimisation shows here
            "eighths_s": [round(statistics.mean(rs[i * len(rs) // 8 : (i + 1) * len(rs) // 8] or rs), 4)
                          for i in range(8)],
        })  # fmt: skip
    negatives = synth.config.negatives
    ks = sorted({min(negatives, synth.config.bank_size, r * batch) for r in range(args.rounds + 1)})
    head = {str(k): round(_head_cost(synth, 2 * (batch + k), args.head_reps), 4) for k in ks}
    other = stage_s - step_total - sum(resets)
    result = {
        "teacher": args.teacher, "flush_denormal": args.flush_denormal, "batch_size": batch,
        "iterations": args.iterations, "rounds": args.rounds,
        "feature_dim": synth.head.head[0].in_features, "feature_stride": synth.feature_stride,
        "negatives": negatives, "probe_step_s": round(probe_step_s, 4),
        "stage_cpu_s": round(stage_s, 2), "steps_cpu_s": round(step_total, 2),
        "resets_cpu_s": round(sum(resets), 3), "other_cpu_s": round(other, 2),
        "phases_cpu_s": {k: round(v, 3) for k, v in phases.items()},
        "stage_over_probe": round(stage_s / (probe_step_s * len(steps)), 3),
        "per_round": per_round, "head_step_s_by_negatives": head,
    }  # fmt: skip
    for r in per_round:
        print(f"round {r['round']} (bank {r['bank']}): mean step {r['mean_step_s']} s,"
              f" first {r['first_step_s']}, 2-5 {r['steps_2_5_s']}, last quarter {r['last_quarter_s']},"
              f" reset {r['reset_s']} s; by eighths {r['eighths_s']}")  # fmt: skip
    print(f"{args.teacher}: probe step {probe_step_s:.4f} s; stage {stage_s:.2f} s = steps {step_total:.2f}"
          f" + resets {sum(resets):.3f} + other {other:.2f} ({result['phases_cpu_s']});"
          f" stage / (probe x steps) = {result['stage_over_probe']};"
          f" head step by negatives {head} (d = {result['feature_dim']})")  # fmt: skip
    if args.out:
        from datafree.utils import atomic_write_json

        atomic_write_json(args.out, {"machine": machine(device), **result, "steps": steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
