"""Train the teacher suite (realistic input specs, digits data) and cache cards + weights.

Usage: python assets/train_suite.py [--out DIR] [--only NAME[,NAME]] [--force] [--threads 1]

The held-out teachers (``bench.suite.HELDOUT``: torchvision ResNet-18 and MobileNetV2 at 3x64x64, session 24;
175 s and 262 s on one thread; torchvision ShuffleNetV2 x1.0 and MobileNetV3-small at 3x32x32, session 26;
41 s and 123 s; torchvision EfficientNet-B0 and RegNetX-400MF at 3x32x32, session 27; 383 s and 107 s) are
trained only when named with ``--only``.

Teachers (see bench/suite.py): torchvision ``resnet18`` and ``mobilenet_v2`` at 3x32x32 with ImageNet
mean/std, a standard pre-activation WRN-40-2 and a VGG-8 with BatchNorm at 3x32x32 with CIFAR mean/std,
a BN-less CNN at 3x32x32 (mean/std 0.5); the shipped 1x16x16 teachers complete the suite. Data: the
digits train split (datafree.data.digits, fixed split), bilinearly resized to 32x32, grey replicated to
RGB; selection on val; accuracy on test. Each teacher goes to ``OUT/<name>/model.json`` (+
``model.safetensors``, ``net.py`` for non-torchvision archs) and ``OUT/suite.json`` indexes them.
A teacher whose cached card was made from the same spec and seed is reused, not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.suite import HELDOUT, NORMS, SHIPPED, SUITE, TeacherSpec, suite_dir  # noqa: E402
from datafree.cards import build_model, load_card, load_model, save_model, shipped_teachers  # noqa: E402
from datafree.data import DIGITS_SPLIT, digits_split  # noqa: E402
from datafree.errors import UserInputError  # noqa: E402
from datafree.evaluate import accuracy  # noqa: E402
from datafree.normalize import Normalizer  # noqa: E402
from datafree.train import train_supervised  # noqa: E402
from datafree.utils import atomic_write_json  # noqa: E402

NETS = ROOT / "assets" / "suite_nets.py"


def _spec_json(spec: TeacherSpec, seed: int) -> dict:
    d = dataclasses.asdict(spec)
    d["input_shape"] = list(spec.input_shape)
    d["seed"] = seed
    return d


def cached(spec: TeacherSpec, out: Path, seed: int) -> dict | None:
    """The cached card (as JSON) when it was trained from this spec and its weights load; else None."""
    path = out / spec.name / "model.json"
    if not path.is_file():
        return None
    try:
        card = load_card(path)
        if card.extra.get("training", {}).get("spec") != _spec_json(spec, seed):
            return None
        load_model(card)  # checks the sha256 and that the weights match the arch
    except UserInputError:
        return None
    return card.to_json()


def train_one(spec: TeacherSpec, out: Path, seed: int) -> dict:
    """Train one suite teacher and write its card; returns the card as JSON."""
    d = out / spec.name
    d.mkdir(parents=True, exist_ok=True)
    if spec.arch.startswith("net.py:"):
        shutil.copyfile(NETS, d / "net.py")
    mean, std = NORMS[spec.norm]
    shape = spec.input_shape
    train, val, test = (digits_split(s, shape) for s in ("train", "val", "test"))
    norm = Normalizer(mean, std)
    torch.manual_seed(seed)
    # Build through a provisional card so that exactly what the cache will load is trained.
    probe = load_card_like(spec, d, mean, std)
    model = build_model(probe)
    t0 = time.time()
    model, val_acc = train_supervised(model, train, val, norm, epochs=spec.epochs, lr=spec.lr, seed=seed)
    seconds = round(time.time() - t0, 1)
    test_acc = accuracy(model, *test, norm)
    card = save_model(
        model,
        d,
        arch=spec.arch,
        name="model",
        card_name=spec.name,
        num_classes=10,
        input_shape=list(shape),
        mean=mean,
        std=std,
        test_accuracy=round(test_acc, 4),
        trained_on="digits",
        val_accuracy=round(val_acc, 4),
        params=sum(p.numel() for p in model.parameters()),
        training={
            "data": f"sklearn digits, bilinear 8x8 -> {shape[1]}x{shape[2]}, grey x{shape[0]} channels",
            "split": DIGITS_SPLIT,
            "script": "assets/train_suite.py",
            "epochs": spec.epochs,
            "optimizer": f"AdamW lr {spec.lr} one-cycle, wd 5e-4, batch 64, random crop (pad H/8)",
            "threads": torch.get_num_threads(),
            "seconds": seconds,
            "spec": _spec_json(spec, seed),
        },
    )
    return card.to_json()


def load_card_like(spec: TeacherSpec, d: Path, mean: list[float], std: list[float]):
    """A card object for ``spec`` (not written), used to build the architecture."""
    from datafree.cards import _validate

    card = _validate(
        {
            "arch": spec.arch,
            "weights": "model.safetensors",
            "num_classes": 10,
            "input_shape": list(spec.input_shape),
            "mean": mean,
            "std": std,
        },
        str(d / "model.json"),
    )
    card.path = (d / "model.json").resolve()
    return card


def write_index(out: Path) -> dict:
    """``OUT/suite.json``: every cached suite teacher plus the shipped ones."""
    index: dict = {"teachers": {}}
    for spec in SUITE:
        p = out / spec.name / "model.json"
        if p.is_file():
            c = json.loads(p.read_text())
            index["teachers"][spec.name] = {
                "card": str(p.resolve()),
                "arch": spec.arch,
                "family": spec.family,
                "batchnorm": spec.batchnorm,
                "input_shape": c["input_shape"],
                "params": c.get("params"),
                "test_accuracy": c.get("test_accuracy"),
                "train_seconds": c.get("training", {}).get("seconds"),
            }
    for name, (family, bn) in SHIPPED.items():
        c = json.loads(shipped_teachers()[name].read_text())
        index["teachers"][name] = {
            "card": name,
            "arch": c["arch"],
            "family": family,
            "batchnorm": bn,
            "input_shape": c["input_shape"],
            "test_accuracy": c.get("test_accuracy"),
            "train_seconds": c.get("training", {}).get("seconds"),
        }
    atomic_write_json(out / "suite.json", index)
    return index


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) the requested suite teachers; exit status 2 on an unknown name."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=None, help="cache dir (default $DATAFREE_SUITE or ~/.cache/datafree/suite)"
    )
    ap.add_argument("--only", default=None, help="comma-separated suite teacher names")
    ap.add_argument("--force", action="store_true", help="retrain even when cached")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = suite_dir(args.out)
    names = [s.name for s in SUITE]
    only = args.only.split(",") if args.only else names  # the held-out teachers only by name
    known = names + [s.name for s in HELDOUT]
    unknown = [n for n in only if n not in known]
    if unknown:
        print(
            f"error: unknown suite teacher(s) {', '.join(unknown)}; choose from {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    for spec in SUITE + HELDOUT:
        if spec.name not in only:
            continue
        card = None if args.force else cached(spec, out, args.seed)
        status = "cached"
        if card is None:
            card = train_one(spec, out, args.seed)
            status = "trained"
        write_index(out)
        tr = card["training"]
        print(
            f"{spec.name}: {status} arch={spec.arch} params={card['params']:,} "
            f"test={card['test_accuracy']:.4f} val={card['val_accuracy']:.4f} "
            f"train={tr['seconds']} s ({tr['epochs']} epochs, {tr['threads']} thread)",
            flush=True,
        )
    write_index(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
