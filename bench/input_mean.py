r"""Where the online generators' images sit against the teacher's data (session 45; issues 11 and 15).

DAFL's and DFAD's generators end in Tanh + BatchNorm without affine parameters (ZSKT's in an affine
BatchNorm starting at the identity): every batch has mean 0 and spread 1 per channel in the teacher's
normalised input space. That is the data's own place when the card's mean / std are the data's statistics
(the papers' CIFAR and MNIST teachers), not for a model trained on other data under ImageNet's or CIFAR's
constants. Per teacher this prints the real digits' per-channel mean in the normalised space, the mean
recovered from the teacher's first BatchNorm layer without data (``datafree.hooks.input_mean_from_batchnorm``,
the ``output_mean="teacher"`` default of the online backends), and the teacher's accuracy on the real test
digits moved to the places a generator can put them: each channel's mean and spread set to (0, 1) (the
papers' heads), to (the recovered mean, 1), to (the real mean, 1), and to (the real mean, the real spread)
(the data itself), clamped to valid pixels as the generators' images are; also each class's accuracy there
and the two it then reads worst.

Session 46 adds the images' spread and colour: the real digits' per-channel spread in pixel units and the
correlation between their channels (grey: 1), against the structure recovered from the first BatchNorm
layer (``datafree.hooks.input_structure_from_batchnorm``: the online backends' ``output_scale="data"`` and
``output_colour="teacher"`` defaults), and the teacher's accuracy on the real digits at (the recovered mean,
the recovered spread) (``teacher``); also the fit's residual with the channels held independent.

    PYTHONPATH=. python bench/input_mean.py --suite /work/cache/suite --heldout /work/cache/heldout \\
        --heldout /work/cache/heldout_b --out bench/results/s46/input_structure.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from datafree.cards import load_model
from datafree.data.digits import digits_split
from datafree.hooks import input_mean_from_batchnorm, input_structure_from_batchnorm
from datafree.utils import atomic_write_json

SUITE_BN = ["resnet18_32", "mobilenetv2_32", "vgg8_bn_32", "wrn40_2_32"]


def teacher_row(path: str) -> dict:
    """The figures above for one teacher card (a shipped name or a model.json path)."""
    lm = load_model(path)
    card, model = lm.card, lm.model.eval()
    mean = torch.tensor(card.mean).view(1, -1, 1, 1)
    std = torch.tensor(card.std).view(1, -1, 1, 1)
    x, y = digits_split("test", tuple(card.input_shape))
    xn = (x - mean) / std
    lo, hi = (0 - mean) / std, (1 - mean) / std
    m, s = xn.mean((0, 2, 3), keepdim=True), xn.std((0, 2, 3), keepdim=True)
    est = input_mean_from_batchnorm(model, card.input_shape)
    places = {"zero_one": (0 * m, 1 + 0 * s), "real_mean_one": (m, 1 + 0 * s), "real": (m, s)}
    structure = (
        None if est is None else input_structure_from_batchnorm(model, card.input_shape, est, card.std)
    )
    if est is not None:
        places["teacher_mean_one"] = (est.view(1, -1, 1, 1), 1 + 0 * s)
    if structure is not None:
        places["teacher"] = (est.view(1, -1, 1, 1), structure.spread / std)
    independent = None  # the best fit with independent channels: how much worse than the best
    if structure is not None and x.shape[1] > 1:
        independent = input_structure_from_batchnorm(
            model, card.input_shape, est, card.std, correlations=[0.0]
        )
    pixel_std = x.std((0, 2, 3))
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    real_corr = float(torch.corrcoef(flat).min()) if x.shape[1] > 1 else 1.0
    acc, worst, classes = {}, {}, {}
    for name, (mu, sd) in places.items():
        moved = torch.max(torch.min((xn - m) / s * sd + mu, hi), lo)
        with torch.no_grad():
            right = (model(moved).argmax(1) == y).float()
        acc[name] = round(float(right.mean()), 4)
        per_class = [float(right[y == k].mean()) for k in range(int(y.max()) + 1)]
        worst[name] = sorted(range(len(per_class)), key=lambda k: per_class[k])[:2]
        classes[name] = [round(v, 3) for v in per_class]
    return {
        "teacher": Path(path).parent.name if path.endswith(".json") else path,
        "input_shape": list(card.input_shape),
        "real_mean": [round(v, 3) for v in m.flatten().tolist()],
        "real_std": [round(v, 3) for v in s.flatten().tolist()],
        "recovered_mean": None if est is None else [round(v, 3) for v in est.tolist()],
        "max_error": None if est is None else round(float((est - m.flatten()).abs().max()), 3),
        "real_pixel_std": [round(v, 4) for v in pixel_std.tolist()],
        "real_correlation": round(real_corr, 4),
        "recovered_structure": None
        if structure is None
        else {
            "spread": round(structure.spread, 4),
            "correlation": structure.correlation,
            "grain": structure.grain,
            "residual": round(structure.residual, 4),
        },
        "independent_channels_residual": None if independent is None else round(independent.residual, 4),
        "spread_error": None
        if structure is None
        else round(float((structure.spread / pixel_std - 1).abs().max()), 4),
        "accuracy": acc,
        "worst_classes": worst,
        "per_class": classes,
    }


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--out`` write) one row per teacher."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="/work/cache/suite", help="the suite's folder (assets/train_suite.py)")
    ap.add_argument("--heldout", action="append", default=[], help="held-out teachers' folder")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    paths = ["resnet8_digits"] + [str(Path(a.suite) / t / "model.json") for t in SUITE_BN]
    paths += [str(p) for d in a.heldout for p in sorted(Path(d).glob("*/model.json"))]
    rows = []
    for p in paths:
        r = teacher_row(p)
        rows.append(r)
        print(f"{r['teacher']:>16}  real mean {r['real_mean']}  recovered {r['recovered_mean']}  accuracy "
              + "  ".join(f"{k} {v:.3f}" for k, v in r["accuracy"].items()), flush=True)  # fmt: skip
        got = r["recovered_structure"]
        print(f"{'':>16}  real pixel std {r['real_pixel_std']} correlation {r['real_correlation']}  "
              f"recovered {got}  spread error {r['spread_error']}", flush=True)  # fmt: skip
    if a.out:
        atomic_write_json(a.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
