r"""Does a DeepInversion change keep the method? Two checkouts' step, gradient and images compared.

Usage::

    git archive BASE_COMMIT | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    PYTHONPATH=. python bench/di_step_equivalence.py --base /tmp/base \
        [--teachers resnet8_digits,mobilenetv2_32,resnet18_32] [--batch 32] [--steps 30]

For each teacher, in fresh processes with 1 thread: the loss terms and the pixel gradient of the first
step (jitter on, same generator) with the base code and with this checkout's; the images after
``--steps`` steps with both; and, as a control for how much the optimisation amplifies rounding, the base
code's images when its initial pixels are scaled by ``1 + 1e-7``. Prints one line per teacher and writes
``bench/results/di_step_equivalence.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

WORKER = r"""
import sys, torch
root, card, batch, steps, perturb, out = sys.argv[1:7]
sys.path.insert(0, root)
torch.set_num_threads(1)
from datafree.cards import load_model
from generators import create_synthesizer
lm = load_model(card, "cpu")
s = create_synthesizer("deepinversion", lm.model, lm.card, batch_size=int(batch), iterations=int(steps))
s.reset(int(batch), torch.Generator().manual_seed(0))
if perturb == "1":
    with torch.no_grad():
        s.inputs.mul_(1 + 1e-7)
loss, logs = s._loss(s.inputs, None)
grad = torch.autograd.grad(loss, s.inputs)[0]
s.reset(int(batch), torch.Generator().manual_seed(0))
if perturb == "1":
    with torch.no_grad():
        s.inputs.mul_(1 + 1e-7)
for _ in range(int(steps)):
    s.step()
torch.save({"grad": grad, "logs": {k: float(v) for k, v in logs.items()}, "x": s.sample().images}, out)
"""


def _run(root: Path, card: str, batch: int, steps: int, perturb: bool, out: Path) -> dict:
    import torch

    env = {**os.environ, "PYTHONPATH": str(root)}
    args = [str(root), card, str(batch), str(steps), "1" if perturb else "0", str(out)]
    subprocess.run([sys.executable, "-c", WORKER, *args], check=True, env=env, cwd=str(root))
    return torch.load(out)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--teachers", default="resnet8_digits,mobilenetv2_32,resnet18_32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(HERE / "bench" / "results" / "di_step_equivalence.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench.synthesis_overhead import teacher_card
    from datafree.utils import atomic_write_json

    rows = []
    tmp = Path(tempfile.mkdtemp())
    for name in [t for t in args.teachers.split(",") if t]:
        card = teacher_card(name, tmp)
        base = _run(Path(args.base).resolve(), card, args.batch, args.steps, False, tmp / "base.pt")
        new = _run(HERE, card, args.batch, args.steps, False, tmp / "new.pt")
        ctrl = _run(Path(args.base).resolve(), card, args.batch, args.steps, True, tmp / "ctrl.pt")
        row = {
            "teacher": name, "batch_size": args.batch, "steps": args.steps,
            "grad_rel_l2": float((new["grad"] - base["grad"]).norm() / base["grad"].norm()),
            "loss_terms_base": base["logs"], "loss_terms_new": new["logs"],
            "images_max_abs_diff": float((new["x"] - base["x"]).abs().max()),
            "images_max_abs_diff_control": float((ctrl["x"] - base["x"]).abs().max()),
            "images_max_abs": float(base["x"].abs().max()),
        }  # fmt: skip
        rows.append(row)
        print(f"{name}: first-step gradient differs by {row['grad_rel_l2']:.1e} (relative L2); images after "
              f"{args.steps} steps by {row['images_max_abs_diff']:.2e} at most (base vs base with pixels "
              f"x (1 + 1e-7): {row['images_max_abs_diff_control']:.2e}; "
              f"|x| <= {row['images_max_abs']:.2f})")  # fmt: skip
    atomic_write_json(args.out, {"base": str(args.base), "rows": rows})


if __name__ == "__main__":
    main()
