r"""Time to accuracy: student test accuracy against wall time (and teacher passes) for every backend.

For every registered backend (``generators.GENERATORS``) a fresh student (the teacher's default
student, e.g. ``resnet8_half`` for ``resnet8_digits``) is distilled from the teacher with the shared
KD stage (``datafree.distill.distill``, ``KDConfig`` defaults unless the recipe says otherwise) and
evaluated on the digits test split (``datafree.evaluate.evaluate_model``) after every KD epoch
(40 steps). The clock starts before the first synthesis step and runs until the student reaches
98% of the teacher's test accuracy, the KD budget ends, or ``--time-cap`` seconds pass;
evaluation time is excluded. Recipes (how each kind of backend produces a student; chosen by a
table, not by name):

* ``offline`` (DeepInversion, ZeroQ, ...): the default pipeline of ``datafree compress``, i.e.
  synthesise ``--num-images`` (1024) images with the backend's defaults, *then* distil on them
  with ``KDConfig`` defaults. The student cannot train before the images exist, so the clock
  includes the whole synthesis and the accuracy is the untrained student's until KD starts.
* ``pool`` (Fast-Datafree, NAYER): the backend's own published loop, a growing pool
  (:class:`datafree.sources.PoolSource`): every round synthesises one batch (a few meta-learned
  generator steps), then ``kd_steps`` KD steps sample the pool so far, with the backend's
  ``pool_batch_size`` and ``pool_kd`` settings (KD batch, learning rate, steps per round; the rest
  as ``offline``). The student only ever sees images that were already synthesised, and all
  synthesis time is on the clock.
* ``online`` (DAFL, ZSKT, DFAD): the generator is trained inside the KD stage
  (:class:`datafree.sources.SynthesizerSource`), with the backend's ``kd_defaults`` and student
  objective, as ``datafree compress`` runs it.

The process's CPU time (``time.process_time``, evaluation excluded) is recorded beside the wall time:
with one thread it measures the work done whatever else runs on the machine, so runs made under
different loads compare by it. Teacher work is counted with a forward hook: images through the
teacher with gradients on (a forward and a backward: synthesis) and without (a forward: KD targets).

Usage::

    PYTHONPATH=. python bench/time_to_accuracy.py [--device cpu] [--time-cap 900] \
        [--methods fast,deepinversion]

Writes ``bench/results/time_to_accuracy.csv`` (one row per evaluation), ``time_to_accuracy.json``
(the summary) and ``time_to_accuracy.png`` (accuracy against wall time, drawn with PIL), and prints
a markdown table of the time to 95% and 98% of the teacher's accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import key_values, machine, markdown_table, setup, sync  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = (0.95, 0.98)


class _Stop(Exception):
    """Raised from the evaluation callback to end a run (target reached or time cap)."""


class Clock:
    """Wall time since start, minus the time spent evaluating; records accuracy points."""

    def __init__(self, device: torch.device, cap: float, stop_at: float, counter: TeacherCounter) -> None:
        self.device, self.cap, self.stop_at, self.counter = device, cap, stop_at, counter
        self.paused = 0.0
        self.cpu_paused = 0.0  # process CPU time spent evaluating
        self.points: list[dict[str, float]] = []
        sync(device)
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def now(self) -> float:
        """Seconds on the clock."""
        sync(self.device)
        return time.perf_counter() - self.t0 - self.paused

    def record(self, accuracy_fn: Callable[[], float], phase: str) -> float:
        """Evaluate off the clock, record a point, and stop the run when done or out of time."""
        t = self.now()
        counts = self.counter.snapshot()
        cpu = time.process_time() - self.cpu0 - self.cpu_paused
        e0, c0 = time.perf_counter(), time.process_time()
        acc = accuracy_fn()
        self.paused += time.perf_counter() - e0
        self.cpu_paused += time.process_time() - c0
        point = {"time_s": t, "cpu_s": cpu, "accuracy": acc, "phase": phase, **counts}
        self.points.append(point)  # type: ignore[arg-type]
        if acc >= self.stop_at or t >= self.cap:
            raise _Stop
        return acc

    def check_cap(self, accuracy_fn: Callable[[], float], phase: str) -> None:
        """During synthesis: record a point (and stop) only when the time cap has passed."""
        if self.now() >= self.cap:
            self.record(accuracy_fn, phase)


class TeacherCounter:
    """Counts images through the teacher, with gradients (forward+backward) and without."""

    def __init__(self, teacher: nn.Module) -> None:
        self.fwd_bwd = 0
        self.fwd = 0
        self.handles = [teacher.register_forward_hook(self._hook)]

    def watch(self, net: nn.Module) -> None:
        """Count another copy of the teacher too (DeepInversion's BN-folded network)."""
        self.handles.append(net.register_forward_hook(self._hook))

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.fwd_bwd += len(inputs[0])
        else:
            self.fwd += len(inputs[0])

    def snapshot(self) -> dict[str, int]:  # noqa: D102
        return {"teacher_fwd_bwd_images": self.fwd_bwd, "teacher_fwd_images": self.fwd}

    def close(self) -> None:  # noqa: D102
        for handle in self.handles:
            handle.remove()


def _kd_eval(clock: Clock, acc_fn: Callable[[], float]) -> Callable[[nn.Module], float]:
    return lambda student: clock.record(acc_fn, "kd")


def recipe_offline(
    lm: Any, method: str, student: nn.Module, clock: Clock, acc_fn: Callable[[], float], args: Any
) -> None:
    """Synthesise ``num_images`` with the backend's defaults, then KD with ``KDConfig`` defaults."""
    from datafree.distill import distill
    from datafree.plan import plan
    from datafree.sources import TensorSource

    p = plan(lm, method=method, method_options=args.overrides.get(method, {}), seed=args.seed)
    synth = p.synthesizer
    folded = getattr(synth, "folded", None)
    if folded is not None:  # the step runs the BN-folded copy of the teacher: count its passes too
        clock.counter.watch(folded.net)
    bs = synth.config.batch_size
    images = []
    clock.record(acc_fn, "synthesize")
    for i in range((args.num_images + bs - 1) // bs):
        n = min(bs, args.num_images - i * bs)
        synth.reset(n, torch.Generator().manual_seed(args.seed * 1_000_003 + i))
        steps = 0
        for _ in range(synth.config.iterations):  # the loop of Synthesizer.synthesize, plateau stop included
            logs = synth.step(student)
            steps += 1
            clock.check_cap(acc_fn, "synthesize")
            if synth.should_stop(steps, logs):
                break
        synth.batch_done(steps)
        images.append(synth.sample(n).images)
    source = TensorSource(torch.cat(images), seed=args.seed)
    distill(lm.model, student, source, p.kd, input_shape=lm.card.input_shape, eval_fn=_kd_eval(clock, acc_fn))


def recipe_pool(
    lm: Any, method: str, student: nn.Module, clock: Clock, acc_fn: Callable[[], float], args: Any
) -> None:
    """Fast-Datafree's loop: one synthesised batch per round, then ``kd_steps`` KD steps on the pool."""
    from datafree.distill import distill
    from datafree.plan import plan
    from datafree.sources import PoolSource

    kd_over = {**({"kd_steps": args.pool_kd_steps} if args.pool_kd_steps else {}), **args.pool_kd}
    p = plan(
        lm,
        method=method,
        pool=True,
        kd=kd_over,
        method_options=args.overrides.get(method, {}),
        seed=args.seed,
    )
    synth = p.synthesizer
    source = PoolSource(
        synth,
        batch_size=args.pool_batch_size or synth.pool_batch_size,
        max_images=args.pool_images or None,
        seed=args.seed,
    )
    kd = p.kd
    clock.record(acc_fn, "start")
    distill(lm.model, student, source, kd, input_shape=lm.card.input_shape, eval_fn=_kd_eval(clock, acc_fn))


def recipe_online(
    lm: Any, method: str, student: nn.Module, clock: Clock, acc_fn: Callable[[], float], args: Any
) -> None:
    """A generator trained inside the KD stage with the backend's KD defaults (as ``compress`` does)."""
    from datafree.distill import distill
    from datafree.plan import plan

    p = plan(lm, method=method, method_options=args.overrides.get(method, {}), seed=args.seed)
    clock.record(acc_fn, "start")
    distill(
        lm.model,
        student,
        p.open_source(),
        p.kd,
        input_shape=lm.card.input_shape,
        eval_fn=_kd_eval(clock, acc_fn),
        student_objective=p.student_objective,
    )


# backend name -> recipe; backends not listed use "online" or "offline" by their class.
RECIPES: dict[str, Callable[..., None]] = {"fast": recipe_pool, "nayer": recipe_pool}
DEFAULT_RECIPE = {True: recipe_online, False: recipe_offline}


def run_method(method: str, teacher: str, device: torch.device, args: Any) -> dict[str, Any]:
    """Distil one student with one backend; returns the accuracy points and the summary."""
    from datafree.cards import load_model
    from datafree.evaluate import evaluate_model
    from datafree.models import create_model, default_student_for
    from datafree.progress import set_quiet
    from generators import method_class

    set_quiet(True)
    lm = load_model(teacher, device)
    teacher_acc = evaluate_model(lm.model, lm.card)["accuracy"]
    torch.manual_seed(args.seed)
    arch = default_student_for(lm.card.arch)
    student = create_model(arch, lm.card.num_classes, lm.card.in_channels).to(device)
    cls = method_class(method)
    recipe = RECIPES.get(method, DEFAULT_RECIPE[bool(cls.online)])
    counter = TeacherCounter(lm.model)
    clock = Clock(device, args.time_cap, max(TARGETS) * teacher_acc, counter)

    def acc_fn() -> float:
        return float(evaluate_model(student, lm.card)["accuracy"])

    try:
        recipe(lm, method, student, clock, acc_fn, args)
        clock.record(acc_fn, "end")
    except _Stop:
        pass
    finally:
        counter.close()
    summary: dict[str, Any] = {
        "method": method,
        "teacher": teacher,
        "student": arch,
        "recipe": recipe.__name__.removeprefix("recipe_"),
        "teacher_accuracy": teacher_acc,
        "final_accuracy": clock.points[-1]["accuracy"],
        "seconds": clock.points[-1]["time_s"],
    }
    for frac in TARGETS:
        hit = next((p for p in clock.points if p["accuracy"] >= frac * teacher_acc), None)
        key = f"{round(frac * 100)}"
        summary[f"time_to_{key}"] = hit["time_s"] if hit else None
        summary[f"cpu_to_{key}"] = hit.get("cpu_s") if hit else None
        summary[f"teacher_fwd_bwd_images_to_{key}"] = hit["teacher_fwd_bwd_images"] if hit else None
        summary[f"teacher_fwd_images_to_{key}"] = hit["teacher_fwd_images"] if hit else None
    return {"summary": summary, "points": clock.points}


def plot_png(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against wall time, one polyline per run, with the 95% / 98% target lines (PIL)."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 900, 540, 70, 190, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    t_max = max((p["time_s"] for r in runs for p in r["points"]), default=1.0) or 1.0
    y_lo = 0.0

    def xy(t: float, a: float) -> tuple[float, float]:
        return left + (w - left - right) * t / t_max, top + (h - top - bottom) * (1 - (a - y_lo) / (1 - y_lo))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for a in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        _, y = xy(0, a)
        d.line([left - 4, y, left, y], fill="black")
        d.text((8, y - 6), f"{a:.1f}", fill="black")
    for i in range(6):
        t = t_max * i / 5
        x, _ = xy(t, 0)
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x - 12, h - bottom + 8), f"{t:.0f}s", fill="black")
    d.text((left, 12), title, fill="black")
    d.text(((w - right) // 2, h - 18), "wall time (s), evaluation excluded", fill="black")
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for k, run in enumerate(runs):
        s = run["summary"]
        for frac, dash in zip(TARGETS, ("95%", "98%"), strict=True):
            _, y = xy(0, frac * s["teacher_accuracy"])
            d.line([left, y, w - right, y], fill="#bbbbbb")
            if k == 0:
                d.text((w - right + 4, y - 6), f"{dash} of teacher", fill="#888888")
        color = colors[k % len(colors)]
        pts = [xy(p["time_s"], p["accuracy"]) for p in run["points"]]
        steps = []  # a step plot: the student keeps its accuracy until the next evaluation
        for i, (x, y) in enumerate(pts):
            if i:
                steps.append((x, steps[-1][1]))
            steps.append((x, y))
        if len(steps) > 1:
            d.line(steps, fill=color, width=2)
        for x, y in pts:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        d.text((w - right + 4, top + 40 + 16 * k), f"{s['method']} / {s['teacher']}", fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _merged(out: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs saved at ``out`` (.json summaries, .csv points) with those of ``runs``' methods replaced.

    They keep the saved order (new methods last); each summary records when its process measured it.
    """
    now = time.strftime("%Y-%m-%d %H:%M")
    for r in runs:
        r["summary"].setdefault("measured", now)
    if not (out.with_suffix(".json").is_file() and out.with_suffix(".csv").is_file()):
        return runs
    fresh = {r["summary"]["method"]: r for r in runs}
    points: dict[str, list[dict[str, Any]]] = {}
    with out.with_suffix(".csv").open() as f:
        for row in csv.DictReader(f):
            p = {
                "time_s": float(row["time_s"]),
                **({"cpu_s": float(row["cpu_s"])} if row.get("cpu_s") else {}),
                "accuracy": float(row["accuracy"]),
                "phase": row["phase"],
                "teacher_fwd_bwd_images": int(row["teacher_fwd_bwd_images"]),
                "teacher_fwd_images": int(row["teacher_fwd_images"]),
            }
            points.setdefault(row["method"], []).append(p)
    merged = []
    for summary in json.loads(out.with_suffix(".json").read_text())["runs"]:
        merged.append(
            fresh.pop(summary["method"], None)
            or {"summary": summary, "points": points.get(summary["method"], [])}
        )
    return merged + list(fresh.values())


def _fmt(v: float | None) -> str:
    return f"{v:.1f} s" if v is not None else "not reached"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="", help="comma-separated backends; default: all registered")
    ap.add_argument("--teacher", default="resnet8_digits", help="BN backends need a BN teacher")
    ap.add_argument("--time-cap", type=float, default=900.0, help="seconds per run")
    ap.add_argument(
        "--num-images", type=int, default=1024, help="offline recipe: images synthesised before KD"
    )
    ap.add_argument(
        "--pool-kd-steps",
        type=int,
        default=0,
        help="pool recipe: KD steps per synthesised batch (0: the backend's pool_kd)",
    )
    ap.add_argument(
        "--pool-batch-size",
        type=int,
        default=0,
        help="pool recipe: images per round (0: the backend's pool_batch_size)",
    )
    ap.add_argument(
        "--pool-kd",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pool recipe: KDConfig field over the backend's pool_kd (repeatable)",
    )
    ap.add_argument("--pool-images", type=int, default=0, help="pool recipe: pool capacity (0: unbounded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", action="append", default=[], metavar="METHOD.KEY=VALUE", help="backend option (repeatable)"
    )
    ap.add_argument("--out", default=str(RESULTS / "time_to_accuracy"), help="output path without extension")
    ap.add_argument(
        "--merge", action="store_true", help="replace only these methods' runs in the saved results at --out"
    )
    args = ap.parse_args(argv)
    args.overrides = {}
    for key, value in key_values(args.set, "--set", ap.error).items():
        method, dot, field = key.partition(".")
        if not dot:
            ap.error(f"--set expects METHOD.KEY=VALUE, got {key}={value!r}")
        args.overrides.setdefault(method, {})[field] = value
    args.pool_kd = key_values(args.pool_kd, "--pool-kd", ap.error)
    device = setup(args.device, args.threads)
    from datafree.cards import load_model
    from datafree.hooks import batchnorm_layers
    from generators import GENERATORS, method_class

    has_bn = bool(batchnorm_layers(load_model(args.teacher).model))
    methods = [m for m in args.methods.split(",") if m] or [
        n for n in GENERATORS.names() if has_bn or not method_class(n).requires_batchnorm
    ]
    runs = []
    for method in methods:
        run = run_method(method, args.teacher, device, args)
        runs.append(run)
        s = run["summary"]
        print(
            f"{method}: 95% {_fmt(s['time_to_95'])}, 98% {_fmt(s['time_to_98'])}, final "
            f"{s['final_accuracy']:.4f}",
            file=sys.stderr,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from datafree.utils import atomic_write, atomic_write_json

    if args.merge:
        runs = _merged(out, runs)

    fields = [
        "method",
        "teacher",
        "time_s",
        "cpu_s",
        "accuracy",
        "phase",
        "teacher_fwd_bwd_images",
        "teacher_fwd_images",
    ]
    with atomic_write(out.with_suffix(".csv"), "w") as f:
        wr = csv.DictWriter(f, fieldnames=fields)
        wr.writeheader()
        for r in runs:
            for p in r["points"]:
                wr.writerow({"method": r["summary"]["method"], "teacher": r["summary"]["teacher"], **p})
    info = machine(device)
    summaries = [r["summary"] for r in runs]
    atomic_write_json(out.with_suffix(".json"), {"machine": info, "args": vars(args), "runs": summaries})
    plot_png(
        runs,
        out.with_suffix(".png"),
        f"student test accuracy vs wall time, {args.teacher}, {info['cpu']} x{info['torch_threads']} "
        "thread(s)",
    )
    header = [
        "method",
        "recipe",
        "student",
        "teacher acc",
        "time to 95%",
        "time to 98%",
        "CPU time to 95%",
        "teacher fwd+bwd / fwd images to 95%",
        "final acc",
    ]
    rows = []
    for r in runs:
        s = r["summary"]
        passes = (
            f"{s['teacher_fwd_bwd_images_to_95'] / 1e3:.0f}k / {s['teacher_fwd_images_to_95'] / 1e3:.0f}k"
            if s["time_to_95"] is not None
            else "-"
        )
        rows.append(
            [
                s["method"],
                s["recipe"],
                s["student"],
                f"{s['teacher_accuracy']:.4f}",
                _fmt(s["time_to_95"]),
                _fmt(s["time_to_98"]),
                _fmt(s["cpu_to_95"]) if "cpu_to_95" in s else "-",  # runs saved before CPU time was kept
                passes,
                f"{s['final_accuracy']:.4f}",
            ]
        )
    print(
        f"Machine: {info['cpu']}, {info['torch_threads']} thread(s), torch {info['torch']}, device "
        f"{info['device']}, time cap {args.time_cap:.0f} s\n"
    )
    print(markdown_table(header, rows))
    base = next((r["summary"] for r in runs if r["summary"]["method"] == "deepinversion"), None)
    if base and base["time_to_95"]:
        for r in runs:
            s = r["summary"]
            if s["method"] != "deepinversion" and s["time_to_95"]:
                print(
                    f"\n{s['method']} reaches 95% {base['time_to_95'] / s['time_to_95']:.1f}x sooner than "
                    "deepinversion"
                )
                if base.get("cpu_to_95") and s.get("cpu_to_95"):
                    ratio = base["cpu_to_95"] / s["cpu_to_95"]
                    print(f"{s['method']} reaches 95% with {ratio:.1f}x less CPU time than deepinversion")


if __name__ == "__main__":
    main()
