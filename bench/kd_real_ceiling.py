"""KD ceiling of the default student: KD on the REAL digits train split (bounds data-free KD).

The same student (the default rule) and KD settings as DAFL's online runs (Adam 5e-3, T = 4, 30 x 100
steps of 64, random-crop augmentation), but the batches come from the real training images. Prints the
student's test accuracy per seed.

``--num-images N`` takes a random N of the train split (seeded by the seed) and ``--kd KEY=VALUE`` sets
any KD field, so a data-free run's own plan can be replayed on real images: what its data-free student
would reach if its images were as good as real ones (session 29: DeepInversion's plan on WRN-40-2).

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/kd_real_ceiling.py --teacher lenet5_digits --seeds 0,1
    python bench/kd_real_ceiling.py --teacher CARD --num-images 256 --kd epochs=10 --kd batch_size=32 \
        --kd steps_per_epoch=20 --kd optimizer=sgd --kd lr=0.05 --kd weight_decay=5e-4
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
    ap.add_argument("--num-images", type=int, default=0, help="a random subset of the train split (0: all)")
    ap.add_argument("--student", default=None, help="a registered arch (default: the default student rule)")
    ap.add_argument("--kd", action="append", default=[], metavar="KEY=VALUE", help="a KDConfig field")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datafree.cards import load_model
    from datafree.config import parse_kd
    from datafree.data.digits import digits_split
    from datafree.distill import KDConfig, distill
    from datafree.evaluate import evaluate_model
    from datafree.plan import make_student
    from datafree.sources import TensorSource

    lm = load_model(args.teacher)
    shape = tuple(int(v) for v in lm.card.input_shape)
    x, _ = digits_split("train", shape)  # type: ignore[arg-type]
    x_all = lm.card.normalizer()(x)
    settings = {"epochs": 30, "steps_per_epoch": 100, "batch_size": 64, "optimizer": "adam", "lr": 5e-3,
                "weight_decay": 0.0, "temperature": 4.0, **parse_kd(args.kd)}  # fmt: skip
    teacher_acc = evaluate_model(lm.model, lm.card)["accuracy"]
    for seed in (int(s) for s in args.seeds.split(",")):
        x = x_all
        if 0 < args.num_images < len(x_all):
            order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
            x = x_all[order[: args.num_images]]
        student, arch = make_student(args.student, lm, seed)
        kd = KDConfig(**{**settings, "seed": seed})
        distill(lm.model, student, TensorSource(x, seed), kd, input_shape=shape)
        acc = evaluate_model(student, lm.card)["accuracy"]
        print(f"{args.teacher} -> {arch} seed {seed}: KD on {len(x)} real train images {acc:.4f} "
              f"({100 * acc / teacher_acc:.1f}% of the teacher's {teacher_acc:.4f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
