r"""KD steps to 95% of the teacher on a fixed image set: what a synthetic image teaches against a real one.

Each image set (JSON: ``kind`` ``real`` for the digits train split or a backend name, ``n`` images,
``seed``, and backend options) is made once; then for each KD variant (JSON: ``KDConfig`` fields
over batch 64, lr 0.1, a 1200-step cosine schedule) a fresh ``resnet8_half`` is distilled from
``resnet8_digits`` on that set and evaluated on the digits test split every 20 KD steps until it
reaches 95% of the teacher (0.9944) or ``max_steps``. Backend images are synthesised as the backend's
rounds of ``batch_size``, from seeds ``seed * 1_000_003 + round``.

Usage::

    PYTHONPATH=. python bench/kd_efficiency.py \
        '{"nayer512": {"kind": "nayer", "n": 512, "batch_size": 32, "iterations": 20},
          "real512": {"kind": "real", "n": 512}}' \
        '{"base": {}, "T1": {"temperature": 1.0}, "hard": {"hard_label_weight": 1.0},
          "noaug": {"augment": false}}'

Prints one line per (set, variant): the KD steps and the last accuracies (no file is written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

TEACHER_ACC = 0.9944


class _Stop(Exception):
    pass


def image_set(lm: Any, kind: str, n: int = 512, seed: int = 0, **opts: Any) -> torch.Tensor:
    """``n`` normalised images: real digits (train split) or a backend's rounds."""
    from datafree.data.digits import digits_split
    from generators import create_synthesizer

    if kind == "real":
        x, _ = digits_split("train", tuple(lm.card.input_shape))
        return lm.card.normalizer()(x)[:n]
    s = create_synthesizer(kind, lm.model, lm.card, seed=seed, **opts)
    bs = s.config.batch_size
    rounds = [
        s.synthesize(bs, torch.Generator().manual_seed(seed * 1_000_003 + i)).images for i in range(n // bs)
    ]
    return torch.cat(rounds)


def steps_to_95(
    lm: Any, x: torch.Tensor, seed: int = 0, max_steps: int = 480, **kd: Any
) -> tuple[int, list[float]]:
    """KD steps until the student reaches 95% of the teacher (or ``max_steps``), and its accuracies."""
    from datafree.distill import KDConfig, distill
    from datafree.evaluate import evaluate_model
    from datafree.models import create_model
    from datafree.sources import TensorSource

    torch.manual_seed(seed)
    student = create_model("resnet8_half", 10, 1)
    n = [0]
    hist: list[float] = []

    def ev(m: torch.nn.Module) -> float:
        n[0] += 20
        a = evaluate_model(m, lm.card)["accuracy"]
        hist.append(round(a, 3))
        if a >= 0.95 * TEACHER_ACC or n[0] >= max_steps:
            raise _Stop
        return a

    cfg = {"batch_size": 64, "lr": 0.1, "steps_per_epoch": 20, "epochs": 60, "seed": seed, **kd}
    try:
        distill(lm.model, student, TensorSource(x, seed=seed), KDConfig(**cfg), eval_fn=ev)
    except _Stop:
        pass
    return n[0], hist


def main() -> None:  # noqa: D103
    torch.set_num_threads(1)
    from datafree.cards import load_model
    from datafree.progress import set_quiet

    set_quiet(True)
    lm = load_model("resnet8_digits")
    sets, variants = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    for name, spec in sets.items():
        x = image_set(lm, **spec)
        for vname, kd in variants.items():
            n, hist = steps_to_95(lm, x, **kd)
            print(name, vname, "KD steps", n, "last accuracies", hist[-5:], flush=True)


if __name__ == "__main__":
    main()
