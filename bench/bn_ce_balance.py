"""Why synthesis ignores the target class on some BN teachers: the BN-statistic term against the CE.

Usage:
    python bench/bn_ce_balance.py probe [--teachers resnet8_digits,resnet18_32,...]
    python bench/bn_ce_balance.py di-trace --teachers mobilenetv2_32 \
        --variants "plateau_tol=0,iterations=200;plateau_tol=0,iterations=200,bn_ce_max_ratio=2"
    python bench/bn_ce_balance.py fast-screen --teachers mobilenetv2_32 --variants ";bn_weight=1"

- ``probe``: on 64 Gaussian images (normalised space, clamped to valid pixels; seed 0) and on 64
  near-uniform grey images, the BN-statistic loss (first-layer weight 1) over the cross-entropy to
  balanced targets (``value``), and the ratio of the norms of their gradients with respect to the
  pixels (``grad``). :func:`datafree.rules.bn_ce_ratio` is the ``value`` ratio on noise.
- ``di-trace``: DeepInversion on one batch of 64 (seed 0) with each variant's ``--set`` options;
  every 25 steps the cross-entropy, the BN term and the teacher's agreement with the targets.
- ``fast-screen``: Fast-Datafree rounds of 32 images (seed = round), as the pool runs them, without
  KD; the teacher's agreement with the targets and its confidence over the last 10 rounds.

1 thread. Prints one line per teacher/variant and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, setup  # noqa: E402
from bench.suite import resolve_teacher  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
INT_KEYS = ("iterations", "jitter", "ngf", "nz", "batch_size")


def _options(spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in filter(None, spec.split(",")):
        k, v = kv.split("=")
        out[k] = int(v) if k in INT_KEYS else float(v)
    return out


def probe(lm: Any) -> dict[str, Any]:
    """Value and gradient ratios of the BN term over the CE, on noise and on grey images."""
    import torch
    import torch.nn.functional as F

    from datafree.hooks import BNStatistics
    from datafree.losses import bn_statistic_loss

    model = lm.model.eval()
    g = torch.Generator().manual_seed(0)
    shape = tuple(lm.card.input_shape)
    res: dict[str, Any] = {}
    for init in ("noise", "grey"):
        if init == "noise":
            x = torch.randn((64, *shape), generator=g)
        else:
            grey = torch.rand((64, 1, 1, 1), generator=g).expand(64, *shape)
            x = lm.card.normalizer()(grey + 0.05 * torch.randn((64, *shape), generator=g))
        lm.card.normalizer().clamp_(x)
        x.requires_grad_(True)
        with BNStatistics(model) as st:
            logits = model(x)
            bn = bn_statistic_loss(st.means, st.vars, st.running(), 1.0)
        ce = F.cross_entropy(logits, torch.arange(64) % logits.shape[1])
        (gb,) = torch.autograd.grad(bn, x, retain_graph=True)
        (gc,) = torch.autograd.grad(ce, x)
        res[init] = {
            "bn": round(float(bn.detach()), 2),
            "ce": round(float(ce.detach()), 3),
            "value": round(float(bn) / float(ce), 2),
            "grad": round(float(gb.norm() / gc.norm()), 2),
        }
    y = torch.randn((64, *shape), generator=g).requires_grad_(True)
    times = []
    for _ in range(4):  # forward+backward of 64 images, CPU time, the median of the last 3
        t0 = time.process_time()
        model(y).sum().backward()
        times.append(time.process_time() - t0)
    res["fwd_bwd_64_ms"] = round(1000 * sorted(times[1:])[1], 1)
    return res


def di_trace(lm: Any, options: dict[str, Any]) -> dict[str, Any]:
    """DeepInversion on one batch of 64: CE, BN term and agreement every 25 steps."""
    import torch

    from generators import create_synthesizer

    model = lm.model.eval()
    s = create_synthesizer("deepinversion", model, lm.card, batch_size=64, **options)
    s.reset(64, torch.Generator().manual_seed(0))
    t0 = time.process_time()
    trace = []
    i = 0
    for i in range(s.config.iterations):
        logs = s.step()
        if i % 25 == 0 or i == s.config.iterations - 1:
            with torch.no_grad():
                agree = float((model(s.best).argmax(1) == s.targets).float().mean())
            trace.append({"step": i, "ce": round(float(logs["ce"]), 3), "bn": round(float(logs["bn"]), 1),
                          "agreement_best": round(agree, 3)})  # fmt: skip
        if s.should_stop(i + 1, logs):
            break
    with torch.no_grad():
        logits = model(s.best)
    return {
        "steps": i + 1,
        "bn_scale": round(s.bn_scale, 4),
        "cpu_s": round(time.process_time() - t0, 1),
        "agreement": round(float((logits.argmax(1) == s.targets).float().mean()), 4),
        "trace": trace,
    }


def fast_screen(lm: Any, options: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Fast-Datafree rounds of 32 images without KD: agreement and confidence of the last 10."""
    import torch

    from generators import create_synthesizer

    model = lm.model.eval()
    s = create_synthesizer("fast", model, lm.card, seed=0, **options)
    t0 = time.process_time()
    last = []
    for r in range(rounds):
        b = s.synthesize(32, torch.Generator().manual_seed(r))
        if r >= rounds - 10:
            with torch.no_grad():
                logits = model(b.images)
            last.append((float((logits.argmax(1) == b.labels).float().mean()),
                         float(logits.softmax(1).amax(1).mean())))  # fmt: skip
    return {
        "rounds": rounds,
        "bn_weight": s.config.bn_weight,
        "cpu_s": round(time.process_time() - t0, 1),
        "agreement_last10": round(sum(a for a, _ in last) / len(last), 3),
        "confidence_last10": round(sum(c for _, c in last) / len(last), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run one mode over the teachers (and variants)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["probe", "di-trace", "fast-screen"])
    ap.add_argument("--teachers", default="resnet8_digits,resnet18_32,mobilenetv2_32,vgg8_bn_32")
    ap.add_argument("--variants", default="", help="';'-separated --set lists (KEY=VALUE,...); '' = defaults")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--suite", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    from datafree.cards import load_model
    from datafree.utils import atomic_write_json

    out = args.out or RESULTS / f"bn_ce_balance_{args.mode}.json"
    device = setup("cpu", args.threads)
    rows = []
    for name in args.teachers.split(","):
        lm = load_model(resolve_teacher(name), device)
        variants = [""] if args.mode == "probe" else args.variants.split(";")
        for v in variants:
            if args.mode == "probe":
                r = probe(lm)
            elif args.mode == "di-trace":
                r = di_trace(lm, _options(v))
            else:
                r = fast_screen(lm, _options(v), args.rounds)
            rows.append({"teacher": name, "variant": v or "defaults", **r})
            print(rows[-1], flush=True)
            atomic_write_json(out, {"mode": args.mode, "machine": machine(device), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
