"""DeepInversion on one batch: the old constants against the rule-based defaults, per teacher.

Usage: python bench/synthesis_quality.py [--teachers resnet18_32,mobilenetv2_32] [--batch 64] [--threads 1]
       python bench/synthesis_quality.py --loss-scales [--teachers ...]

For each teacher (suite names as in bench/fidelity.py, or card paths), one batch is synthesised twice
from the same seed, in the same process:

- ``constants``: the settings measured at 1x16x16 (200 steps, TV-L2 1e-2, L2 1e-5, lr 0.1, no
  plateau stop);
- ``rules``: :func:`datafree.rules.deepinversion_defaults` for the teacher's input shape plus the
  plateau stop and the BN/CE balance (the DeepInversion config's defaults).

A setting may also be ``KEY=VALUE[+KEY=VALUE...]``: the rules with those DeepInversion options (session 25's
jitter probe: ``--teachers mobilenetv2_32 --settings rules,jitter=0,bn_weight=0+first_bn_weight=0,...``).

``--loss-scales`` instead prints each DeepInversion loss term at the first step (random pixels, same
seed), per teacher: how the BN-statistic term compares with the cross-entropy across families.

It reports the teacher's agreement with the target labels and its mean confidence on the final
images (:mod:`datafree.quality`'s measures), the steps run and the wall time. This is a proxy for the
students' accuracy, which is much cheaper to measure. Writes bench/results/synthesis_quality.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, markdown_table, setup  # noqa: E402
from bench.suite import resolve_teacher  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONSTANTS = {
    "iterations": 200,
    "tv_l2_weight": 1e-2,
    "l2_weight": 1e-5,
    "lr": 0.1,
    "plateau_tol": 0.0,
    "bn_ce_max_ratio": 0.0,
}


def one(teacher: Any, options: dict[str, Any], batch: int, seed: int) -> dict[str, Any]:
    """Synthesise one batch with ``options`` (over the rules) and measure it."""
    import torch

    from generators import create_synthesizer

    synth = create_synthesizer("deepinversion", teacher.model, teacher.card, batch_size=batch, **options)
    t0 = time.perf_counter()
    out = synth.synthesize(batch, torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        logits = teacher.model(out.images)
    return {
        "steps": synth.steps_taken[0],
        "seconds": round(seconds, 1),
        "agreement": round(float((logits.argmax(1) == out.labels).float().mean()), 4),
        "confidence": round(float(logits.softmax(1).amax(1).mean()), 4),
        "bn_scale": round(synth.bn_scale, 4),
        "config": {
            k: getattr(synth.config, k)
            for k in ("iterations", "lr", "tv_l2_weight", "l2_weight", "plateau_tol")
        },
    }


def loss_scales(teacher: Any, batch: int, seed: int) -> dict[str, Any]:
    """The loss terms of the first DeepInversion step on random pixels, and the BN-layer count."""
    import torch

    from datafree.hooks import batchnorm_layers
    from generators import create_synthesizer

    synth = create_synthesizer(
        "deepinversion", teacher.model, teacher.card, batch_size=batch, plateau_tol=0.0
    )
    synth.reset(batch, torch.Generator().manual_seed(seed))
    logs = synth.step()
    terms = {k: round(float(v), 2) for k, v in logs.items()}
    return {
        "bn_layers": len(batchnorm_layers(teacher.model)),
        **terms,
        "bn_over_ce": round(terms["bn"] / terms["ce"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both settings on each teacher and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default="resnet18_32,mobilenetv2_32")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--settings",
        default="constants,rules",
        help="comma-separated: constants, rules, or KEY=VALUE[+KEY=VALUE...]: the rules with those options "
        "(e.g. jitter=0+bn_weight=0+first_bn_weight=0)",
    )
    ap.add_argument("--tag", default="", help="suffix of the output file")
    ap.add_argument("--loss-scales", action="store_true", help="first-step loss terms per teacher")
    args = ap.parse_args(argv)
    stem = "loss_scales" if args.loss_scales else "synthesis_quality"
    args.out = args.out or RESULTS / f"{stem}{'_' + args.tag if args.tag else ''}.json"
    from datafree.cards import load_model
    from datafree.utils import atomic_write_json

    device = setup("cpu", args.threads)
    rows = []
    for name in args.teachers.split(","):
        lm = load_model(resolve_teacher(name), device)
        if args.loss_scales:
            rows.append({"teacher": name, **loss_scales(lm, args.batch, args.seed)})
            print(rows[-1], flush=True)
            atomic_write_json(args.out, {"batch": args.batch, "machine": machine(device), "rows": rows})
            continue
        settings = {"constants": CONSTANTS, "rules": {}}
        for label in args.settings.split(","):
            opts = settings[label] if label in settings else dict(kv.split("=", 1) for kv in label.split("+"))
            r = {"teacher": name, "setting": label, **one(lm, opts, args.batch, args.seed)}
            rows.append(r)
            print(r, flush=True)
            atomic_write_json(args.out, {"batch": args.batch, "machine": machine(device), "rows": rows})
    if args.loss_scales:
        return 0
    header = ["teacher", "setting", "steps", "seconds", "agreement", "confidence", "tv_l2", "cap"]
    body = [
        [r["teacher"], r["setting"], r["steps"], r["seconds"], r["agreement"], r["confidence"],
         f"{r['config']['tv_l2_weight']:.3g}", r["config"]["iterations"]]
        for r in rows
    ]  # fmt: skip
    print(markdown_table(header, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
