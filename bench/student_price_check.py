"""The compute budget's price of a student's training step against its measured CPU time (one thread).

For each ``ARCH@CxHxW``, a fresh model of that registered arch trains ``--steps`` SGD steps (cross entropy,
batch ``--batch``, after two untimed ones) on random inputs; the process CPU time per image (median step)
is printed beside ``datafree.rules.cpu_seconds_per_image(model, shape, "train")`` and their ratio, and the
same for a forward (``"forward"``, no grad). Session 42 found the ImageNet-layout students' cells priced
1.3-1.9x under their CPU time and the CIFAR-layout ones' 1.1-1.2x (docs/fidelity.md, "Session 42").

Usage::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/student_price_check.py \
        resnet18_imagenet_half@3x32x32 resnet10_imagenet_quarter@3x32x32 wrn16_2@3x32x32 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import machine  # noqa: E402


def measure(arch: str, shape: tuple[int, int, int], batch: int, steps: int) -> dict[str, float]:
    """Measured and priced CPU seconds per image of a training step and of a forward."""
    from datafree.models import create_model
    from datafree.rules import cpu_seconds_per_image

    torch.manual_seed(0)
    model = create_model(arch, 10, shape[0])
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train, fwd = [], []
    model.train()
    for i in range(steps + 2):
        t = time.process_time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            train.append((time.process_time() - t) / batch)
    model.eval()
    with torch.no_grad():
        for i in range(steps + 2):
            t = time.process_time()
            model(x)
            if i >= 2:
                fwd.append((time.process_time() - t) / batch)
    out = {"train_measured_s": statistics.median(train), "forward_measured_s": statistics.median(fwd),
           "train_priced_s": cpu_seconds_per_image(model, shape, "train"),
           "forward_priced_s": cpu_seconds_per_image(model, shape, "forward")}  # fmt: skip
    out["train_ratio"] = out["train_measured_s"] / out["train_priced_s"]
    out["forward_ratio"] = out["forward_measured_s"] / out["forward_priced_s"]
    return out


def main() -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="ARCH@CxHxW")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models:
        arch, _, dims = spec.partition("@")
        shape = tuple(int(v) for v in dims.split("x"))
        r = {"arch": arch, "input_shape": list(shape), **measure(arch, shape, args.batch, args.steps)}  # type: ignore[arg-type]
        rows.append(r)
        print(
            f"{arch} @ {dims}: train {1e3 * r['train_measured_s']:.3f} ms/image measured, "
            f"{1e3 * r['train_priced_s']:.3f} priced ({r['train_ratio']:.2f}x); forward "
            f"{1e3 * r['forward_measured_s']:.3f} / {1e3 * r['forward_priced_s']:.3f} "
            f"({r['forward_ratio']:.2f}x)"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {"machine": machine(torch.device("cpu")), "batch": args.batch, "rows": rows}
        args.out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
