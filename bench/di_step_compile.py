r"""Does ``torch.compile`` pay for the DeepInversion step on CPU? Compile time against the per-step saving.

Usage::

    PYTHONPATH=. python bench/di_step_compile.py [--teachers resnet8_digits,resnet18_32] [--batch 128] \
        [--threads 1] [--reps 15] [--cache DIR] [--out bench/results/di_step_compile.json]

Per teacher, in one process: the eager DeepInversion loss (``DeepInversion._loss``: jitter, the folded
teacher with the BN-statistics hooks, the fused BN loss, cross-entropy and the priors) forward and
backward, against the same loss with the folded network, the statistics and the BN loss compiled as one
graph (``torch.compile``, inductor): the folded :class:`torch.fx.GraphModule` is rewritten to also
return every observed activation (a folded convolution's output, or an unfolded BN layer's input), whose
statistics are ``torch.var_mean`` (inductor's one-pass Welford reduction) and whose loss is
:func:`datafree.losses.bn_statistic_loss`'s, written with plain operations; the jitter and the priors stay
eager. Also the bare folded forward+backward eager and compiled. The loss of the two paths is checked to
agree (``rel_loss_diff``). Times are CPU time of the process (``time.process_time``), interleaved;
compile time is the wall and CPU time of the first compiled call (``--cache`` keeps inductor's on-disk
cache so a second run shows the warm-cache compile).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = HERE / "bench" / "results"


def observed_graph(folded):  # noqa: ANN001, ANN201 - a bench helper
    """A copy of ``folded.net`` returning ``(logits, [observed activation per BN layer])``, or None."""
    import torch
    from torch import fx

    net = folded.net
    graph = copy.deepcopy(net.graph)
    names = {id(m): n for n, m in net.named_modules()}
    nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}
    observed = []
    for layer in folded.layers:
        node = nodes.get(names.get(id(layer.module)))
        if node is None:
            return None
        observed.append(node if layer.folded else node.args[0])
    out = next(n for n in graph.nodes if n.op == "output")
    if not isinstance(out.args[0], fx.Node):
        return None
    out.args = ((out.args[0], observed),)
    graph.lint()
    gm = fx.GraphModule(net, graph)
    return gm if isinstance(gm, torch.nn.Module) else None


def measure(name: str, args: argparse.Namespace) -> tuple[dict, list] | None:
    """One teacher's row and table cells (None when its folded network cannot be rewritten)."""
    import torch
    import torch.nn.functional as F

    from bench.synthesis_overhead import teacher_card
    from datafree.augment import random_jitter
    from datafree.cards import load_model
    from datafree.losses import l2_prior, tv_l2
    from generators import create_synthesizer

    lm = load_model(teacher_card(name, Path(tempfile.mkdtemp())), "cpu")
    s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=args.batch, iterations=10**6)
    s.reset(args.batch, torch.Generator().manual_seed(0))
    cfg, folded = s.config, s.folded
    gm = observed_graph(folded) if folded is not None else None
    if gm is None:
        print(f"{name}: no folded graph to compile", file=sys.stderr)
        return None
    spec = folded.bn_loss
    centers, rvs = spec.center.split(spec.sizes), spec.running_var.split(spec.sizes)
    scales = spec.scale.split(spec.sizes)

    def graph_loss(xa: torch.Tensor, y: torch.Tensor, first: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits, observed = gm(xa)
        bn = logits.new_zeros(())
        for i, (t, k, sc, rv) in enumerate(zip(observed, centers, scales, rvs, strict=True)):
            dims = [0, *range(2, t.dim())]
            var, mean = torch.var_mean(t, dim=dims, correction=0)
            term = torch.linalg.vector_norm((mean - k) * sc) + torch.linalg.vector_norm(var * sc * sc - rv)
            bn = bn + (first if i == 0 else 1.0) * term
        return F.cross_entropy(logits, y), bn

    compiled = torch.compile(graph_loss)
    x, y = s.inputs, s.targets

    def loss_of(fn):  # noqa: ANN001, ANN202
        def run() -> torch.Tensor:
            x.grad = None
            gen = torch.Generator().manual_seed(5)
            xa = random_jitter(x, s.jitter, gen)
            ce, bn = fn(xa, y, cfg.first_bn_weight)
            loss = ce + bn + cfg.tv_l2_weight * tv_l2(x) + cfg.l2_weight * l2_prior(x)
            loss.backward()
            return loss.detach()

        return run

    def eager_loss(xa: torch.Tensor, yy: torch.Tensor, first: float) -> tuple[torch.Tensor, torch.Tensor]:
        with folded.statistics() as stats:
            logits = folded.net(xa)
            bn = stats.loss(first)
        return F.cross_entropy(logits, yy), bn

    fns = {"eager": loss_of(eager_loss), "compiled": loss_of(compiled)}
    cnet = torch.compile(folded.net)

    def bare(net: torch.nn.Module) -> object:
        def run() -> None:
            x.grad = None
            F.cross_entropy(net(x), y).backward()

        return run

    t0, c0 = time.perf_counter(), time.process_time()
    l_c = fns["compiled"]()
    compile_wall, compile_cpu = time.perf_counter() - t0, time.process_time() - c0
    g_c = x.grad.clone()
    l_e = fns["eager"]()
    g_e = x.grad.clone()
    t0 = time.perf_counter()
    bare(cnet)()
    bare_compile_wall = time.perf_counter() - t0
    fns["bare_eager"], fns["bare_compiled"] = bare(folded.net), bare(cnet)
    for _ in range(3):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    load = os.getloadavg()[0]
    for _ in range(args.reps):
        for k, f in fns.items():
            c = time.process_time()
            f()
            times[k].append(time.process_time() - c)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["compiled"], times["eager"], strict=True))
    saving = med["eager"] - med["compiled"]
    row = {"teacher": name, "batch_size": args.batch, "threads": args.threads, "reps": args.reps,
           **{f"{k}_cpu_ms": v for k, v in med.items()}, "compiled_over_eager": ratio,
           "first_call_wall_s": compile_wall, "first_call_cpu_s": compile_cpu,
           "bare_first_call_wall_s": bare_compile_wall,
           "steps_to_pay": (compile_wall / (saving / 1e3)) if saving > 0 else None,
           "rel_loss_diff": float((l_c - l_e).abs() / l_e.abs()),
           "rel_grad_diff": float((g_c - g_e).norm() / g_e.norm()),
           "load_average": load, "inductor_cache": os.environ["TORCHINDUCTOR_CACHE_DIR"]}  # fmt: skip
    cells = [name, f"{med['eager']:.1f}", f"{med['compiled']:.1f}", f"**{ratio:.2f}x**",
                  f"{med['bare_eager']:.1f} / {med['bare_compiled']:.1f}", f"{compile_wall:.1f}",
                  "never" if row["steps_to_pay"] is None else f"{row['steps_to_pay']:.0f}",
                  f"{row['rel_loss_diff']:.1e} / {row['rel_grad_diff']:.1e}", f"{load:.1f}"]  # fmt: skip
    print(cells, file=sys.stderr, flush=True)
    return row, cells


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", default="resnet8_digits,resnet18_32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cache", default="", help="TORCHINDUCTOR_CACHE_DIR (default: a fresh temporary one)")
    ap.add_argument("--out", default=str(RESULTS / "di_step_compile.json"))
    args = ap.parse_args(argv)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache or tempfile.mkdtemp(prefix="inductor-")
    from datafree.malloc import tune_malloc

    tune_malloc()
    import torch

    from bench.common import machine, markdown_table
    from datafree.utils import atomic_write_json

    torch.set_num_threads(args.threads)
    rows, table = [], []
    for name in [t for t in args.teachers.split(",") if t]:
        got = measure(name, args)
        if got is not None:
            rows.append(got[0])
            table.append(got[1])
    header = ["teacher", "loss fwd+bwd eager ms (CPU)", "compiled ms", "compiled / eager",
              "bare folded eager / compiled ms", "first compiled call s", "steps to pay",
              "loss / grad rel. diff", "load"]  # fmt: skip
    print(f"batch {args.batch}, {args.threads} thread(s)\n")
    print(markdown_table(header, table))
    atomic_write_json(args.out, {"machine": machine(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
