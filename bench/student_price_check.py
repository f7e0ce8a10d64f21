"""The compute budget's price of a model's training step and forward against their measured CPU time.

For each ``ARCH@CxHxW``, a fresh model of that registered arch is timed by ``bench/cost_measure.py``'s own
:func:`bench.cost_measure.measure` (the timing the prices were fitted on: a training step and an inference
forward, process CPU seconds per image, batch ``--batch``), and printed beside
``datafree.rules.cpu_seconds_per_image(model, shape, "train" | "forward")`` with their ratio. Session 42 found
the ImageNet-layout students' cells priced 1.3-1.9x under their CPU time and the CIFAR-layout ones'
1.1-1.3x (docs/fidelity.md, "Session 42"); session 43's small-map price (``bench/cost_measure.py``,
``datafree.rules.SMALL_MAP_PIXELS``) brought them to 0.95x and 1.05x
(``bench/results/s43/student_price_check.json``).

Usage::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/student_price_check.py \
        resnet18_imagenet_half@3x32x32 resnet10_imagenet_quarter@3x32x32 wrn16_2@3x32x32 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, setup  # noqa: E402
from bench.cost_measure import measure  # noqa: E402


def price_check(arch: str, shape: tuple[int, int, int], batch: int) -> dict[str, float]:
    """Measured (``bench.cost_measure.measure``) and priced CPU seconds per image, and their ratios."""
    from datafree.models import create_model
    from datafree.rules import cpu_seconds_per_image

    torch.manual_seed(0)
    model = create_model(arch, 10, shape[0])
    m = measure(arch, model, shape, batch)
    out = {"train_measured_s": m["train_cpu_s_per_image"], "forward_measured_s": m["forward_cpu_s_per_image"],
           "train_priced_s": cpu_seconds_per_image(model, shape, "train"),
           "forward_priced_s": cpu_seconds_per_image(model, shape, "forward")}  # fmt: skip
    out["train_ratio"] = out["train_measured_s"] / out["train_priced_s"]
    out["forward_ratio"] = out["forward_measured_s"] / out["forward_priced_s"]
    return out


def main() -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="ARCH@CxHxW")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = setup("cpu", args.threads)
    rows = []
    for spec in args.models:
        arch, _, dims = spec.partition("@")
        shape = tuple(int(v) for v in dims.split("x"))
        r = {"arch": arch, "input_shape": list(shape), **price_check(arch, shape, args.batch)}  # type: ignore[arg-type]
        rows.append(r)
        print(
            f"{arch} @ {dims}: train {1e3 * r['train_measured_s']:.3f} ms/image measured, "
            f"{1e3 * r['train_priced_s']:.3f} priced ({r['train_ratio']:.2f}x); forward "
            f"{1e3 * r['forward_measured_s']:.3f} / {1e3 * r['forward_priced_s']:.3f} "
            f"({r['forward_ratio']:.2f}x)"
        )
    if args.out is not None:
        from datafree.utils import atomic_write_json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, {"machine": machine(device), "batch": args.batch, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
