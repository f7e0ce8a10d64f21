"""Train the shipped digits teachers and write their model cards into assets/teachers/.

Usage: python assets/train_teachers.py [--only NAME]

Real data: scikit-learn digits, upsampled to 16x16 (see datafree.data.digits for the split).
Teachers train on the train split, are selected on val, and are reported on test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datafree.cards import save_model  # noqa: E402
from datafree.data import DIGITS_SPLIT, digits_split  # noqa: E402
from datafree.evaluate import accuracy  # noqa: E402
from datafree.models import create_model  # noqa: E402
from datafree.normalize import Normalizer  # noqa: E402
from datafree.train import train_supervised  # noqa: E402

INPUT_SHAPE = (1, 16, 16)
TEACHERS = {
    # name: (arch, epochs, lr)
    "resnet8_digits": ("resnet8", 40, 3e-3),
    "lenet5_digits": ("lenet5", 60, 3e-3),
}
# A teacher of an architecture the package does not know, with another input shape: only its
# card (arch "net.py:build") tells datafree how to load it.
CUSTOM = {"name": "custom_teacher", "input_shape": (3, 24, 24), "epochs": 40, "lr": 3e-3}


def main() -> None:
    """Train the custom teacher and the digits teachers (or only ``--only``) and write their cards."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train = digits_split("train", INPUT_SHAPE)
    val = digits_split("val", INPUT_SHAPE)
    test = digits_split("test", INPUT_SHAPE)
    mean = round(train[0].mean().item(), 4)
    std = round(train[0].std().item(), 4)
    norm = Normalizer([mean], [std])
    out = Path(__file__).resolve().parent / "teachers"
    if args.only in (None, CUSTOM["name"]):
        train_custom(args.seed)
    for name, (arch, epochs, lr) in TEACHERS.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(args.seed)
        model = create_model(arch, 10, INPUT_SHAPE[0])
        t0 = time.time()
        model, val_acc = train_supervised(model, train, val, norm, epochs=epochs, lr=lr, seed=args.seed)
        test_acc = accuracy(model, *test, norm)
        card = save_model(
            model,
            out,
            arch=arch,
            name=name,
            num_classes=10,
            input_shape=list(INPUT_SHAPE),
            mean=[mean],
            std=[std],
            test_accuracy=round(test_acc, 4),
            trained_on="digits",
            val_accuracy=round(val_acc, 4),
            training={
                "data": "sklearn load_digits, bilinear upsampled 8x8 -> 16x16, pixels/16 in [0,1]",
                "split": DIGITS_SPLIT,
                "script": "assets/train_teachers.py",
                "epochs": epochs,
                "optimizer": f"AdamW lr {lr} one-cycle, wd 5e-4, batch 64, random crop (pad 2)",
                "seed": args.seed,
                "seconds": round(time.time() - t0, 1),
            },
        )
        print(f"{name}: arch={arch} val={val_acc:.4f} test={test_acc:.4f} sha256={card.sha256[:12]}")


def train_custom(seed: int) -> None:
    """Train the never-seen custom teacher into assets/fixtures/custom_teacher/."""
    import importlib.util

    root = Path(__file__).resolve().parent / "fixtures" / CUSTOM["name"]
    spec = importlib.util.spec_from_file_location("custom_net", root / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shape = CUSTOM["input_shape"]
    train, val, test = (digits_split(s, shape) for s in ("train", "val", "test"))
    # Per-channel statistics (channels are equal copies here, but the card format is per channel).
    mean = [round(v, 4) for v in train[0].mean(dim=(0, 2, 3)).tolist()]
    std = [round(v, 4) for v in train[0].std(dim=(0, 2, 3)).tolist()]
    norm = Normalizer(mean, std)
    torch.manual_seed(seed)
    model = mod.build(num_classes=10)
    t0 = time.time()
    model, val_acc = train_supervised(
        model, train, val, norm, epochs=CUSTOM["epochs"], lr=CUSTOM["lr"], seed=seed
    )
    test_acc = accuracy(model, *test, norm)
    card = save_model(
        model,
        root,
        arch="net.py:build",
        name="model",
        card_name=CUSTOM["name"],
        num_classes=10,
        input_shape=list(shape),
        mean=mean,
        std=std,
        test_accuracy=round(test_acc, 4),
        val_accuracy=round(val_acc, 4),
        trained_on="digits",
        training={
            "data": "sklearn digits upsampled to 24x24, grey repeated to 3 channels",
            "split": DIGITS_SPLIT,
            "script": "assets/train_teachers.py",
            "epochs": CUSTOM["epochs"],
            "seed": seed,
            "seconds": round(time.time() - t0, 1),
        },
    )
    print(
        f"{CUSTOM['name']}: arch=net.py:build val={val_acc:.4f} test={test_acc:.4f} sha256={card.sha256[:12]}"
    )


if __name__ == "__main__":
    main()
