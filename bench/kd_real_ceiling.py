"""KD ceiling of the default student: KD on the REAL digits train split (bounds data-free KD).

The same student (the default rule) and KD settings as DAFL's online runs (Adam 5e-3, T = 4, 30 x 100
steps of 64, random-crop augmentation), but the batches come from the real training images. Prints the
student's test accuracy per seed.

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/kd_real_ceiling.py --teacher lenet5_digits --seeds 0,1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="lenet5_digits", help="a shipped teacher name or a model card path")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datafree.cards import load_model
    from datafree.data.digits import digits_split
    from datafree.distill import KDConfig, distill
    from datafree.evaluate import evaluate_model
    from datafree.plan import make_student
    from datafree.sources import TensorSource

    lm = load_model(args.teacher)
    shape = tuple(int(v) for v in lm.card.input_shape)
    x, _ = digits_split("train", shape)  # type: ignore[arg-type]
    x = lm.card.normalizer()(x)
    for seed in (int(s) for s in args.seeds.split(",")):
        student, arch = make_student(None, lm, seed)
        kd = KDConfig(epochs=30, steps_per_epoch=100, batch_size=64, optimizer="adam", lr=5e-3,
                      weight_decay=0.0, temperature=4.0, seed=seed)  # fmt: skip
        distill(lm.model, student, TensorSource(x, seed), kd, input_shape=shape)
        acc = evaluate_model(student, lm.card)["accuracy"]
        print(f"{args.teacher} -> {arch} seed {seed}: KD on the real train split {acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
