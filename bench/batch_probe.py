"""One batch of an offline backend: loss terms and teacher agreement with the target labels after N steps.

A cheap probe of a backend's per-batch optimisation (no student, no KD): the synthesizer is built
with its defaults plus ``--set`` options, one batch of ``--batch-size`` images is optimised for
``--steps`` steps from seed ``--seed``, and at each step in ``--report`` the script prints the loss
terms of that step and the share of the batch's kept images (``sample()``) on which the teacher's
argmax is the target label, the teacher's mean top-1 confidence on them, and the BN/CE balance's
scale of the batch where the backend has one (``bn_scale``). Deterministic for a given seed (CPU).

Usage::

    PYTHONPATH=. python bench/batch_probe.py --method cmi --batch-size 64 --steps 200 \
        --report 25,50,100,200 --set lr=0.001
    PYTHONPATH=. python bench/batch_probe.py --method nayer --batch-size 32 --steps 60 \
        --set bn_weight=10 --set oh_weight=0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import key_values, setup  # noqa: E402


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--teacher", default="resnet8_digits")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--report", default="", help="comma-separated steps to report (default: the last)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backend option")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    device = setup(args.device, args.threads)
    from datafree.cards import load_model
    from generators import create_synthesizer

    lm = load_model(args.teacher, device)
    opts = {"iterations": args.steps, **key_values(args.set, "--set", ap.error)}
    synth = create_synthesizer(args.method, lm.model, lm.card, seed=args.seed, **opts)
    synth.reset(args.batch_size, torch.Generator().manual_seed(args.seed))
    report = {int(s) for s in args.report.split(",") if s} or {args.steps}
    c0 = time.process_time()
    for i in range(1, args.steps + 1):
        logs = synth.step()
        if i in report:
            batch = synth.sample()
            with torch.no_grad():
                probs = lm.model(batch.images).softmax(1)
                agree = (probs.argmax(1) == batch.labels).float().mean().item()
                conf = probs.max(1).values.mean().item()
            terms = " ".join(f"{k} {float(v):.2f}" for k, v in logs.items())
            scale = f", bn_scale {synth.bn_scale:.4f}" if hasattr(synth, "bn_scale") else ""
            cpu = time.process_time() - c0
            print(f"{args.method} {' '.join(args.set)} step {i}: {terms}, teacher agrees {agree:.2f} "
                  f"confidence {conf:.3f}{scale} ({cpu:.0f} CPU s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
