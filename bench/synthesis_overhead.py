r"""Synthesis overhead: one backend step against the physical limit, a bare teacher forward+backward.

For every registered backend (``generators.GENERATORS``) on the shipped teachers (BN backends on
``resnet8_digits`` only; the others on ``resnet8_digits`` and ``lenet5_digits``), at the backend's
default batch size:

* ``step``: ``synth.step(student)`` (offline backends after ``reset(batch_size, generator)``;
  adversarial ones with a student),
* ``bare``: the teacher's forward and backward on a batch of the same shape, gradients to the
  input on (cross-entropy to random labels): the least any synthesis step can cost.

Both are timed alternately in one process (``--reps`` rounds after warm-up); the table gives
their medians and the median over rounds of step/bare. The KD student step
(``datafree.distill.distill`` on an in-memory source, per step) is compared the same way with a
bare student forward+backward plus a teacher forward.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before the step;
on CPU each measurement runs in a fresh subprocess that samples its resident set while a few
steps run and reports the peak growth over the resident set before them (``--no-memory`` skips it).

Usage::

    PYTHONPATH=. python bench/synthesis_overhead.py [--device cpu] [--reps 20] [--methods a,b]

Prints a markdown table and writes ``bench/results/synthesis_overhead.json``.

``--cli`` times the DeepInversion step through the real command instead: ``datafree synthesize``
writing one shard of B images with N+1 and with 1 iterations, in fresh processes, the step being
``(t(N+1) - t(1)) / N`` (start-up, loading, the first step's warm-up and writing cancel out),
against a bare teacher forward+backward of batch B in the bench process with the same threads,
precision and memory format; runs are interleaved (long, short, bare) ``--reps`` times and the
table gives medians and the median per-round ratio, by wall time and by CPU time (children's
``getrusage``; less sensitive to other jobs on a shared machine)::

    PYTHONPATH=. python bench/synthesis_overhead.py --cli --teachers resnet8_digits,resnet18_32 \
        --batches 64,128,256 --threads 2 --steps 20 --reps 3 [--precision bf16 --channels-last]

``resnet18_32`` is the suite teacher cached at ``$DATAFREE_SUITE/resnet18_32/model.json`` when it
exists, else a randomly initialised torchvision ResNet-18 at 3x32x32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

# OpenMP's wait policy as `datafree` chooses it (cli.openmp_wait_policy, from this machine's load and
# --threads), before torch loads the runtime: the bare pass here and the commands it starts wait alike.
import cli  # noqa: E402, F401

OPENMP_WAIT = os.environ.get("DATAFREE_OMP_WAIT")  # spin | passive; None: the user's OMP_WAIT_POLICY

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import interleaved, machine, markdown_table, median_ratio, setup  # noqa: E402
from bench.suite import suite_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BN_TEACHER, PLAIN_TEACHER = "resnet8_digits", "lenet5_digits"


def cases(methods: list[str] | None) -> list[tuple[str, str]]:
    """(method, teacher) pairs: BN backends on the BN teacher, the others on both teachers."""
    from generators import GENERATORS, method_class

    out = []
    for name in GENERATORS.names():
        if methods and name not in methods:
            continue
        teachers = [BN_TEACHER] if method_class(name).requires_batchnorm else [BN_TEACHER, PLAIN_TEACHER]
        out += [(name, t) for t in teachers]
    return out + [("kd", BN_TEACHER)] if not methods or "kd" in methods else out


def _student(lm: Any) -> torch.nn.Module:
    from datafree.models import create_model, default_student_for

    torch.manual_seed(0)
    s = create_model(default_student_for(lm.card.arch), lm.card.num_classes, lm.card.in_channels)
    return s.to(next(lm.model.parameters()).device)


def build(method: str, teacher: str, device: torch.device) -> tuple[dict[str, Any], int]:
    """Callables ``{"step": ..., "bare": ...}`` for one case and the batch size they use."""
    from datafree.cards import load_model

    lm = load_model(teacher, device)
    model = lm.model
    student = _student(lm)
    if method == "kd":
        return _build_kd(lm, student, device)
    from generators import create_synthesizer

    synth = create_synthesizer(method, model, lm.card, seed=0)
    bs = synth.config.batch_size
    if not synth.online:
        synth.reset(bs, torch.Generator().manual_seed(0))
    arg = student

    def step() -> None:
        synth.step(arg)

    g = torch.Generator().manual_seed(1)
    x = torch.randn((bs, *lm.card.input_shape), generator=g).to(device).requires_grad_(True)
    y = torch.randint(0, lm.card.num_classes, (bs,), generator=g).to(device)

    def bare() -> None:
        x.grad = None
        F.cross_entropy(model(x), y).backward()

    return {"step": step, "bare": bare}, bs


def _build_kd(lm: Any, student: torch.nn.Module, device: torch.device) -> tuple[dict[str, Any], int]:
    from datafree.distill import KDConfig, distill
    from datafree.progress import set_quiet
    from datafree.sources import TensorSource

    set_quiet(True)
    steps = 5
    cfg = KDConfig(epochs=1, steps_per_epoch=steps)
    bs = cfg.batch_size
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randn((1024, *lm.card.input_shape), generator=g).to(device))
    teacher = lm.model

    def step() -> None:  # one distill() call of `steps` steps, timed per step by the caller
        distill(teacher, student, source, cfg, input_shape=lm.card.input_shape)

    x = source.images[:bs]

    def bare() -> None:
        for _ in range(steps):
            with torch.no_grad():
                t = teacher(x)
            student.zero_grad(set_to_none=True)
            F.kl_div(
                F.log_softmax(student(x), 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True
            ).backward()

    return {"step": step, "bare": bare, "per_call": steps}, bs


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_memory(method: str, teacher: str, kind: str, device: torch.device, steps: int = 3) -> float:
    """Peak memory growth (MiB) during ``steps`` calls of ``kind`` over the memory held after setup.

    CUDA: ``max_memory_allocated``. CPU: the resident set, sampled every 0.5 ms by a thread (torch
    ops release the GIL) while the steps run, minus the resident set just before them.
    """
    fns, _ = build(method, teacher, device)
    fn = fns[kind]
    fn()  # first call: lazy state (optimiser moments, caches) belongs to the step's footprint
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import threading
    import time

    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    for _ in range(steps):
        fn()
    done.set()
    th.join()
    return (peak[0] - base) / 2**20


def memory_in_subprocess(method: str, teacher: str, kind: str, device: str) -> float:
    """CPU: a fresh process per measurement (freed memory the allocator keeps would blur the next one)."""
    cmd = [sys.executable, __file__, "--probe", f"{method}:{teacher}:{kind}", "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["mib"])


def run_case(method: str, teacher: str, device: torch.device, reps: int, memory: bool) -> dict[str, Any]:
    """Time one case interleaved and (optionally) measure its peak memory."""
    fns, bs = build(method, teacher, device)
    per = fns.get("per_call", 1)
    t_step, t_bare = interleaved([fns["step"], fns["bare"]], device, reps)
    row: dict[str, Any] = {
        "method": method,
        "teacher": teacher,
        "batch_size": bs,
        "step_ms": 1e3 * statistics.median(t_step) / per,
        "bare_ms": 1e3 * statistics.median(t_bare) / per,
        "ratio": median_ratio(t_step, t_bare),
        "ratio_of_medians": statistics.median(t_step) / statistics.median(t_bare),
        "reps": reps,
    }
    if memory:
        for kind in ("step", "bare"):
            if device.type == "cuda":
                row[f"{kind}_peak_mib"] = measure_memory(method, teacher, kind, device)
            else:
                row[f"{kind}_peak_mib"] = memory_in_subprocess(method, teacher, kind, str(device))
    return row


# --- through the CLI: t(N+1 steps) - t(1 step) of the real `datafree synthesize` command -------------
SUITE = suite_dir()  # $DATAFREE_SUITE or ~/.cache/datafree/suite (assets/train_suite.py)


def teacher_card(name: str, workdir: Path) -> str:
    """A card path or shipped name for ``name``.

    A shipped teacher, a suite teacher cached under ``$DATAFREE_SUITE/<name>/model.json`` (issue 11),
    or for ``resnet18_32`` / ``resnet34_32`` a randomly initialised torchvision network at 3x32x32
    (BN running statistics of random weights are fine for step timing).
    """
    from datafree.cards import shipped_teachers

    if name in shipped_teachers() or name.endswith(".json"):
        return name
    cached = SUITE / name / "model.json"
    if cached.is_file():
        return str(cached)
    arch = {"resnet18_32": "resnet18", "resnet34_32": "resnet34", "resnet50_224": "resnet50"}.get(name)
    if arch is None:
        raise SystemExit(f"unknown teacher {name!r}: a shipped name, a card path, or resnet18_32/resnet34_32")
    import torchvision

    from datafree.cards import save_model

    size = 224 if name.endswith("224") else 32
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10)
    card = save_model(model, workdir / name, arch=arch, num_classes=10, input_shape=[3, size, size],
                      mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], card_name=name)  # fmt: skip
    return str(card.path)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cli_seconds(
    card: str,
    batch: int,
    steps: int,
    threads: int,
    out: Path,
    extra: list[str],
    env_extra: dict[str, str] | None = None,
    root: str | None = None,
) -> tuple[float, float]:
    """Wall and CPU seconds of ``datafree synthesize``: one shard of ``batch`` images, ``steps`` steps.

    ``root``: run the code of another checkout (e.g. ``git archive BASE | tar -x -C DIR``), else this one.
    """
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-c",
        "import cli; cli.main()",
        "synthesize",
        "--teacher",
        card,
        "-n",
        str(batch),
        "--batch-size",
        str(batch),
        "--iterations",
        str(steps),
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--quiet",
        *extra,
    ]
    code = root or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": code, **(env_extra or {})}
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=code)
    return time.perf_counter() - t0, _children_cpu() - c0


def _in_run_step(out: Path) -> float | None:
    """Seconds per step inside the command: ``time`` between its first and last logged steps.

    ``metrics.jsonl`` logs every 10th step with the seconds since the command started, so this is the
    real loop (progress, metrics, plateau check, keep-best, Adam) without start-up and writing.
    """
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r.get("stage") == "synthesize" and "time" in r and r.get("step", 0) >= 10]
    if len(recs) < 2:
        return None
    return (recs[-1]["time"] - recs[0]["time"]) / (recs[-1]["step"] - recs[0]["step"])


def _bare_fn(
    card: str, batch: int, device: torch.device, precision: str, channels_last: bool, folded: bool = False
) -> Any:
    """The teacher's forward+backward (input gradients on); ``folded``: with BN folded (datafree.bnfold)."""
    from datafree import precision as prec
    from datafree.bnfold import fold_batchnorm
    from datafree.cards import load_model

    prec.configure(precision, channels_last, False, device)
    lm = load_model(card, device)
    model = prec.prepare_module(lm.model)
    if folded:
        f = fold_batchnorm(model)
        model = prec.prepare_module(f.net) if f is not None else model
    g = torch.Generator().manual_seed(1)
    x = prec.prepare_input(torch.randn((batch, *lm.card.input_shape), generator=g).to(device))
    x.requires_grad_(True)
    y = torch.randint(0, lm.card.num_classes, (batch,), generator=g).to(device)

    def bare() -> None:
        x.grad = None
        with prec.autocast(device):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()

    return bare


def cli_mode(args: argparse.Namespace) -> None:
    """DeepInversion step through the CLI, ``(t(N+1) - t(1)) / N``, against a bare forward+backward."""
    import tempfile

    device = setup(args.device, args.threads)
    from datafree.malloc import tune_malloc

    # the bare pass gets the allocator setting the CLI uses (datafree/malloc.py), unless turned off
    malloc_tuned = tune_malloc()
    extra = ["--device", args.device, "--precision", args.precision]
    extra += ["--channels-last"] if args.channels_last else []
    variants = args.variants.split(";")
    rows = []
    with tempfile.TemporaryDirectory(prefix="datafree-cli-bench-") as tmp:
        work = Path(tmp)
        for name in [t for t in args.teachers.split(",") if t]:
            card = teacher_card(name, work)
            for batch in [int(b) for b in args.batches.split(",") if b]:
                bare = _bare_fn(card, batch, device, args.precision, args.channels_last)
                bare_folded = _bare_fn(card, batch, device, args.precision, args.channels_last, folded=True)
                for _ in range(3):
                    bare()
                    bare_folded()
                load_before = os.getloadavg()[0]
                long_t: dict[str, list] = {v: [] for v in variants}
                short_t: dict[str, list] = {v: [] for v in variants}
                in_run: dict[str, list] = {v: [] for v in variants}
                bare_t, bare_cpu, bare_f = [], [], []
                for _ in range(args.reps):  # interleaved: per variant long run, short run; bare passes
                    for v in variants:
                        kvs = [kv for kv in v.split(",") if kv]
                        vx = extra + [a for kv in kvs if ":" not in kv.split("=")[0] for a in ("--set", kv)]
                        vx += [kv[4:] for kv in kvs if kv.startswith("arg:")]  # e.g. arg:--compile
                        ve = dict(kv[4:].split("=", 1) for kv in kvs if kv.startswith("env:"))
                        vr = next((kv[5:] for kv in kvs if kv.startswith("repo:")), None)
                        ds = work / "ds"
                        long_t[v].append(
                            _cli_seconds(card, batch, args.steps + 1, args.threads, ds, vx, ve, vr)
                        )
                        in_run[v].append(_in_run_step(ds))
                        if not args.in_run_only:
                            short_t[v].append(_cli_seconds(card, batch, 1, args.threads, ds, vx, ve, vr))
                    c0 = time.process_time()
                    b = interleaved([bare], device, args.steps, warmup=0)[0]
                    bare_cpu.append((time.process_time() - c0) / args.steps)
                    bare_t.append(statistics.median(b))
                    bf = interleaved([bare_folded], device, args.steps, warmup=0)[0]
                    bare_f.append(statistics.median(bf))
                for v in variants:
                    pairs = list(zip(long_t[v], short_t[v], strict=True)) if not args.in_run_only else []
                    step = [(a[0] - b[0]) / args.steps for a, b in pairs] or [float("nan")] * args.reps
                    step_cpu = [(a[1] - b[1]) / args.steps for a, b in pairs] or [float("nan")] * args.reps
                    ir = [t if t is not None else float("nan") for t in in_run[v]]
                    row = {
                        "teacher": name,
                        "card": card if not card.startswith(tmp) else f"random {name}",
                        "variant": v or "default",
                        "batch_size": batch,
                        "steps": args.steps,
                        "threads": args.threads,
                        "precision": args.precision,
                        "channels_last": args.channels_last,
                        "cli_step_ms": 1e3 * statistics.median(step),
                        "bare_ms": 1e3 * statistics.median(bare_t),
                        "ratio": median_ratio(step, bare_t),
                        "reps": args.reps,
                        "cli_step_cpu_ms": 1e3 * statistics.median(step_cpu),
                        "bare_cpu_ms": 1e3 * statistics.median(bare_cpu),
                        "cpu_ratio": median_ratio(step_cpu, bare_cpu),
                        "in_run_step_ms": 1e3 * statistics.median(ir),
                        "in_run_ratio": median_ratio(ir, bare_t),
                        "in_run_step_ms_rounds": [1e3 * t for t in ir],
                        "bare_folded_ms": 1e3 * statistics.median(bare_f),
                        "ratio_to_bare_folded": median_ratio(step, bare_f),
                        "step_ms_rounds": [1e3 * t for t in step],
                        "bare_ms_rounds": [1e3 * t for t in bare_t],
                        "load_average_before": load_before,
                        "bench_malloc_tuned": malloc_tuned,
                        "openmp_wait": os.environ.get("DATAFREE_OMP_WAIT")
                        or f"user: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
                        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}",
                        "load_average": os.getloadavg()[0],
                    }
                    rows.append(row)
                    print(
                        f"{name} b{batch} [{row['variant']}]: step {row['cli_step_ms']:.1f} ms, bare "
                        f"{row['bare_ms']:.1f} ms, {row['ratio']:.2f}x wall, {row['cpu_ratio']:.2f}x CPU, "
                        f"{row['ratio_to_bare_folded']:.2f}x a folded bare pass; in-run step "
                        f"{row['in_run_step_ms']:.1f} ms, {row['in_run_ratio']:.2f}x; load {load_before:.1f}",
                        file=sys.stderr,
                    )
    info = machine(device)
    header = ["teacher", "variant", "batch", "CLI step ms (in-run)", "bare fwd+bwd ms",
              "CLI step / bare (in-run)", "t(N+1)-t(1) step / bare (wall)", "(CPU time)", "load"]  # fmt: skip
    table = [
        [
            r["teacher"],
            r["variant"],
            r["batch_size"],
            f"{r['in_run_step_ms']:.1f}",
            f"{r['bare_ms']:.1f}",
            f"**{r['in_run_ratio']:.2f}x**",
            f"{r['ratio']:.2f}x",
            f"{r['cpu_ratio']:.2f}x",
            f"{r['load_average_before']:.1f}",
        ]
        for r in rows
    ]
    print(
        f"Machine: {info['cpu']}, {args.threads} thread(s), torch {info['torch']}, device {info['device']}, "
        f"precision {args.precision}{', channels_last' if args.channels_last else ''}, OpenMP wait "
        f"{rows[0]['openmp_wait'] if rows else '-'}\n"
    )
    print(markdown_table(header, table))
    from datafree.utils import atomic_write_json

    atomic_write_json(args.out, {"machine": info, "mode": "cli", "rows": rows})


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=20, help="timed rounds per case (after 3 warm-up rounds)")
    ap.add_argument("--methods", default="", help="comma-separated backends (and 'kd'); default: all")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--out", default=str(RESULTS / "synthesis_overhead.json"))
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: memory subprocess
    ap.add_argument(
        "--cli",
        action="store_true",
        help="time the DeepInversion step through the real command: (t(N+1 steps) - t(1 step)) / N",
    )
    ap.add_argument(
        "--teachers", default="resnet8_digits,resnet18_32", help="--cli: shipped, suite or resnet18_32"
    )
    ap.add_argument("--batches", default="64,128,256", help="--cli: batch sizes")
    ap.add_argument("--steps", type=int, default=10, help="--cli: N")
    ap.add_argument("--threads", type=int, default=2, help="--cli: torch threads (CLI and bare pass)")
    ap.add_argument("--precision", default="fp32", help="--cli: --precision of both")
    ap.add_argument("--channels-last", action="store_true", help="--cli: --channels-last for both")
    ap.add_argument(
        "--in-run-only",
        action="store_true",
        help="--cli: only the in-run step time (metrics.jsonl), no t(1) runs (start-up noise under load)",
    )
    ap.add_argument(
        "--variants",
        default="",
        help="--cli: ';'-separated variants of backend options measured in the same rounds, each a "
        "','-separated list of KEY=VALUE passed as --set, or env:NAME=VALUE for the command's environment "
        "(e.g. 'fold_bn=false,env:DATAFREE_MALLOC_TUNING=0;' = before;after), or repo:DIR to run the code of "
        "another checkout (e.g. 'repo:/tmp/base;' with /tmp/base from git archive of the commit before), or "
        "arg:OPTION for one more command-line option (e.g. 'arg:--compile')",
    )
    args = ap.parse_args(argv)
    if args.cli:
        if args.out == str(RESULTS / "synthesis_overhead.json"):
            args.out = str(RESULTS / "synthesis_overhead_cli.json")
        return cli_mode(args)
    device = setup(args.device)
    if args.probe:
        method, teacher, kind = args.probe.split(":")
        print(json.dumps({"mib": measure_memory(method, teacher, kind, device)}))
        return
    methods = [m for m in args.methods.split(",") if m] or None
    rows = []
    for method, teacher in cases(methods):
        row = run_case(method, teacher, device, args.reps, not args.no_memory)
        rows.append(row)
        print(f"{method} on {teacher}: {row['ratio']:.2f}x", file=sys.stderr)
    header = [
        "method",
        "teacher",
        "batch",
        "step ms",
        "bare fwd+bwd ms",
        "step / bare",
        "peak MiB step / bare",
    ]
    table = [
        [
            r["method"],
            r["teacher"],
            r["batch_size"],
            f"{r['step_ms']:.1f}",
            f"{r['bare_ms']:.1f}",
            f"**{r['ratio']:.2f}x**",
            f"{r['step_peak_mib']:.1f} / {r['bare_peak_mib']:.1f}" if "step_peak_mib" in r else "-",
        ]
        for r in rows
    ]
    info = machine(device)
    print(
        f"Machine: {info['cpu']}, {info['torch_threads']} thread(s), torch {info['torch']}, device "
        f"{info['device']}\n"
    )
    print(markdown_table(header, table))
    from datafree.utils import atomic_write_json

    atomic_write_json(args.out, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
