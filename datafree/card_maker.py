"""Writing a model card for an architecture and its weights (``datafree card``), checked by loading it.

Where each field comes from, first match wins:

- ``num_classes``: ``--num-classes``; the preset's classes; torchvision's weight meta
  (``categories``); timm's ``pretrained_cfg``.
- ``input_shape``, ``mean``, ``std`` (and ``resize_size`` / ``crop_pct`` / ``interpolation`` for
  ImageNet-style evaluation): the preset; torchvision's weight transforms; timm's ``pretrained_cfg``.
- ``classes`` (names) and ``trained_on``: the preset, or torchvision's categories.

Presets: ``cifar10`` and ``cifar100`` (3x32x32 with the mean/std of the community CIFAR teachers of
CMI / Fast-Datafree), ``imagenet`` (3x224x224, resize 256 then centre crop), ``digits`` (1x16x16,
the shipped teachers' task). The card is written only after :func:`datafree.cards.load_model` has
loaded it (strict key match, one forward pass), so a card on disk always loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .cards import ModelCard, _validate, load_model, save_state
from .errors import UserInputError
from .utils import atomic_write_json, sha256_file

__all__ = ["PRESETS", "make_card", "imagenet_categories"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile "
    "cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp "
    "lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom "
    "oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine "
    "possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake "
    "spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor "
    "train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# input_shape, mean, std and the task of each preset; ``classes`` None: filled in by _preset()
PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": {"input_shape": [3, 32, 32], "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010],
                "classes": CIFAR10_CLASSES},
    "cifar100": {"input_shape": [3, 32, 32], "mean": [0.5071, 0.4867, 0.4408],
                 "std": [0.2675, 0.2565, 0.2761], "classes": CIFAR100_CLASSES},
    "imagenet": {"input_shape": [3, 224, 224], "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "classes": None,
                 "resize_size": 256, "interpolation": "bilinear"},
    "digits": {"input_shape": [1, 16, 16], "mean": [0.3045], "std": [0.3188],
               "classes": [str(i) for i in range(10)]},
}  # fmt: skip


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight meta (shipped with torchvision)."""
    import torchvision

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise UserInputError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    fields = {k: (list(v) if isinstance(v, list) else v) for k, v in PRESETS[name].items()}
    if fields["classes"] is None:
        fields["classes"] = imagenet_categories()
    fields["trained_on"] = name
    fields["num_classes"] = len(fields["classes"])
    return fields


def _torchvision_meta(arch: str, weights: str) -> dict[str, Any]:
    """Card fields from a torchvision weights enum member: categories, crop, resize, mean, std."""
    from .checkpoints import torchvision_weights

    w = torchvision_weights(arch, weights)
    fields: dict[str, Any] = {}
    cats = w.meta.get("categories")
    if cats:
        fields["classes"] = list(cats)
    try:
        t = w.transforms()
        crop = int(t.crop_size[0])
        fields.update(
            input_shape=[3, crop, crop],
            mean=[float(v) for v in t.mean],
            std=[float(v) for v in t.std],
            resize_size=int(t.resize_size[0]),
            interpolation=str(t.interpolation.value),
        )
    except (
        AttributeError,
        TypeError,
        IndexError,
    ):  # a weight whose transforms are not an image classification
        pass
    if "IMAGENET" in weights.upper():
        fields["trained_on"] = "imagenet"
    fields["weights_meta"] = {"enum": f"{type(w).__name__}.{w.name}", "url": w.url,
                              "recipe": w.meta.get("recipe"), "metrics": w.meta.get("_metrics")}  # fmt: skip
    return fields


def _timm_meta(arch: str) -> dict[str, Any]:
    """Card fields from timm's ``pretrained_cfg`` of the architecture (the extra's defaults)."""
    try:
        import timm
    except ImportError:
        from .models import TIMM_EXTRA_HINT

        raise UserInputError(f"arch {arch!r} needs timm, which is not installed; {TIMM_EXTRA_HINT}") from None
    name = arch.removeprefix("timm:")
    if not timm.is_model(name):
        raise UserInputError(f"timm has no model {name!r}")
    cfg = timm.models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    fields: dict[str, Any] = {}
    if cfg.get("input_size"):
        fields["input_shape"] = [int(v) for v in cfg["input_size"]]
    for key in ("mean", "std"):
        if cfg.get(key):
            fields[key] = [float(v) for v in cfg[key]]
    if cfg.get("crop_pct"):
        fields["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation"):
        fields["interpolation"] = str(cfg["interpolation"])
    if cfg.get("num_classes"):
        fields["num_classes"] = int(cfg["num_classes"])
    fields["timm_pretrained_cfg"] = {k: cfg[k] for k in ("hf_hub_id", "tag", "license") if cfg.get(k)}
    return fields


def _card_arch(arch: str, card_dir: Path) -> str:
    """A ``file.py:callable`` arch given relative to the working directory, made relative to the card."""
    target, sep, attr = arch.rpartition(":")
    if sep and target.endswith(".py") and not Path(target).is_absolute():
        file = Path(target).resolve()
        if not file.is_file():
            raise UserInputError(f"arch file not found: {target}")
        return f"{os.path.relpath(file, card_dir)}:{attr}"
    return arch


def make_card(
    arch: str,
    out: str | Path,
    *,
    weights: str | None = None,
    preset: str | None = None,
    num_classes: int | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> ModelCard:
    """Write a model card for ``arch`` (and ``weights``) at ``out`` after loading it once.

    Args:
        arch: a registry name, ``torchvision:NAME``, ``timm:NAME``, ``module:callable`` or
            ``file.py:callable`` (relative to the working directory).
        out: the card's path (``.json``), or a directory that gets ``model.json``.
        weights: a weights file (safetensors or a checkpoint in any form :mod:`datafree.checkpoints`
            reads), ``torchvision:ENUM`` for torchvision's pretrained weights in the torch hub cache,
            or None for freshly initialised weights (written beside the card).
        preset: ``cifar10``, ``cifar100``, ``imagenet`` or ``digits``: input shape, mean/std, classes.
        num_classes: overrides the preset's / weight meta's class count.
        arch_kwargs: passed to the architecture's factory.
        trust_checkpoint: allow a pickled checkpoint.

    Returns:
        The card as written (its model loaded and checked with one forward pass).
    """
    out = Path(out)
    if out.suffix != ".json":
        out = out / "model.json"
    fields: dict[str, Any] = {}
    if weights is not None and weights.startswith("torchvision:"):
        fields.update(_torchvision_meta(arch, weights))
    elif arch.startswith("timm:"):
        fields.update(_timm_meta(arch))
    if preset is not None:
        fields.update(_preset(preset))
    if num_classes is not None:
        if num_classes < 1:
            raise UserInputError(f"--num-classes must be >= 1, got {num_classes}")
        fields["num_classes"] = num_classes
    fields.setdefault("num_classes", len(fields["classes"]) if fields.get("classes") else None)
    if fields.get("classes") and len(fields["classes"]) != fields["num_classes"]:
        del fields["classes"]  # --num-classes differs from the preset's task: names would mislead
    missing = [k for k in ("input_shape", "mean", "std", "num_classes") if fields.get(k) is None]
    if missing:
        raise UserInputError(
            f"no {', '.join(missing)} known for {arch}: "
            f"give --preset ({', '.join(PRESETS)}) and/or --num-classes"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    card_dir = out.parent.resolve()
    name = out.stem if out.stem != "model" else out.parent.name
    d: dict[str, Any] = {"name": name, "arch": _card_arch(arch, card_dir), **fields}
    if arch_kwargs:
        d["arch_kwargs"] = dict(arch_kwargs)
    if weights is None:
        return _card_with_fresh_weights(d, out)
    if weights.startswith("torchvision:"):
        d["weights"] = weights
    else:
        wfile = Path(weights).expanduser()
        if not wfile.is_file():
            raise UserInputError(f"weights file not found: {weights}")
        d["weights"] = os.path.relpath(wfile.resolve(), card_dir)
        d["sha256"] = sha256_file(wfile)
    card = _validate(d, str(out))
    card.path = out.resolve()
    lm = load_model(card, "cpu", trust_checkpoint=trust_checkpoint)  # strict keys + one forward pass
    if lm.card.weights.startswith("torchvision:"):
        d["sha256"] = sha256_file(lm.card.weights_path())
    atomic_write_json(out, _validate(d, str(out)).to_json())
    card = _validate(d, str(out))
    card.path = out.resolve()
    return card


def _card_with_fresh_weights(d: dict[str, Any], out: Path) -> ModelCard:
    """The card of a freshly initialised model: weights saved beside it, then loaded once to check."""
    from .cards import build_model, check_forward

    probe = _validate({**d, "weights": "unused"}, str(out))
    probe.path = out.resolve()
    torch.manual_seed(0)
    model = build_model(probe).eval()
    check_forward(model, probe)  # before anything is written
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    fields = {k: v for k, v in d.items() if k not in ("name", "arch")}
    fields["weights_note"] = "freshly initialised (seed 0): no trained weights were given"
    card = save_state(state, out.parent, arch=d["arch"], name=out.stem, card_name=d["name"], **fields)
    load_model(card, "cpu")
    return card
