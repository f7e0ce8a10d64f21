"""Predicted CPU cost of a `compress --method M` cell from a few timed steps, before running it.

For each teacher and offline method, the synthesizer is built with the settings ``compress`` would run
(its defaults plus ``--set``, under the compute budget of ``datafree.plan.budget_settings``),
one batch of its default ``batch_size`` runs ``--steps`` timed steps (after one untimed step), and
one KD step of the default student (teacher forward, student forward + backward + SGD, at the KD
batch of the plan) is timed the same way. The prediction is::

    synthesis = step CPU x iterations x ceil(num_images / batch_size)   (the step cap: no early stop)
    KD        = KD step CPU x epochs x steps_per_epoch

in process CPU seconds (one thread: nearly independent of the machine's load). It leaves out
evaluation, the noise baseline and the latency profile.

Usage::

    PYTHONPATH=. python bench/cell_cost.py --teachers resnet18_32,vgg8_bn_32 --methods cmi,nayer \
        --suite /work/cache/suite [--set cmi.iterations=100] [--threads N] [--clock cpu|wall] \
        [--out FILE.json]

``--clock wall --threads 2`` against ``--threads 1`` is what a second thread buys a step (idle machine).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import key_values, machine, setup  # noqa: E402


def _cpu(fn: Any, reps: int, clock: Any = time.process_time) -> float:
    fn()  # untimed: first-call allocations
    c0 = clock()
    for _ in range(reps):
        fn()
    return (clock() - c0) / reps


def predict(
    teacher: str, method: str, options: dict[str, Any], steps: int, device: Any, wall: bool = False
) -> dict[str, Any]:
    """Time ``steps`` synthesis steps and KD steps; return the predicted CPU seconds of the cell.

    ``wall``: time them by the wall clock instead (``--clock wall``: what more threads buy; the ``*_cpu_s``
    fields then hold wall seconds, and the row says ``"clock": "wall"``).
    """
    clock = time.perf_counter if wall else time.process_time
    import warnings

    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.losses import kd_kl_loss
    from datafree.plan import make_student, plan
    from generators import create_synthesizer

    lm = load_model(resolve_teacher(teacher), device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student, arch = make_student(None, lm, 0)
    # the settings compress would run: the backend's under the compute budget (datafree.plan.budget_settings)
    p = plan(lm, method=method, method_options=options, student=student)
    budget = p.info.get("compute_budget")
    synth = create_synthesizer(method, lm.model, lm.card, seed=0, **p.method_options)
    cfg = synth.config
    synth.reset(cfg.batch_size, torch.Generator().manual_seed(0))
    step_s = _cpu(synth.step, steps, clock)
    kd = p.kd
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=kd.lr, momentum=kd.momentum)
    x = torch.randn(kd.batch_size, *lm.card.input_shape, device=device)

    def kd_step() -> None:
        with torch.no_grad():
            t = lm.model(x)
        loss = kd_kl_loss(student(x), t, kd.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()

    kd_s = _cpu(kd_step, steps, clock)
    rounds = math.ceil(p.num_images / cfg.batch_size)
    synth_total = step_s * cfg.iterations * rounds
    kd_total = kd_s * kd.epochs * kd.steps_per_epoch
    return {
        "teacher": teacher,
        "method": method,
        "clock": "wall" if wall else "cpu",
        "threads": torch.get_num_threads(),
        "options": options,
        "student": arch,
        "batch_size": cfg.batch_size,
        "iterations": cfg.iterations,
        "rounds": rounds,
        "step_cpu_s": round(step_s, 4),
        "kd_step_cpu_s": round(kd_s, 4),
        "kd_steps": kd.epochs * kd.steps_per_epoch,
        "synthesis_cpu_s": round(synth_total, 1),
        "kd_cpu_s": round(kd_total, 1),
        "total_cpu_s": round(synth_total + kd_total, 1),
        "num_images": p.num_images,
        "kd_epochs": kd.epochs,
        "kd_batch_size": kd.batch_size,
        # the plan's own estimate (priced cost measure, no timing; noise baseline included in total_s)
        "budget_rule": budget.get("rule") if budget else None,
        "budget_estimate": budget.get("capped_estimate") if budget else None,
    }


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits")
    ap.add_argument("--methods", default="cmi,nayer")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE", help="backend option")
    ap.add_argument("--suite", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="time steps by CPU or wall clock")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    device = setup("cpu", args.threads)
    sets = key_values(args.set, "--set", ap.error)
    rows = []
    for t in args.teachers.split(","):
        for m in args.methods.split(","):
            opts = {k.split(".", 1)[1]: v for k, v in sets.items() if k.startswith(m + ".")}
            r = predict(t, m, opts, args.steps, device, wall=args.clock == "wall")
            rows.append(r)
            print(
                f"{t} x {m} {opts or ''}: step {r['step_cpu_s']} s x {r['iterations']} x {r['rounds']} = "
                f"{r['synthesis_cpu_s']} s; KD {r['kd_step_cpu_s']} s x {r['kd_steps']} = {r['kd_cpu_s']} s "
                f"({r['student']}); total {r['total_cpu_s']} s {args.clock}; {r['num_images']} images, KD "
                f"{r['kd_epochs']} epochs of {r['kd_batch_size']}; plan: {r['budget_rule']}",
                flush=True,
            )
    if args.out:
        from datafree.utils import atomic_write_json

        atomic_write_json(args.out, {"machine": machine(device), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
