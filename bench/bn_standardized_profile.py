"""DeepInversion's BN loss, raw and standardised, on real digits, noise and synthetic datasets.

The BN prior is meant to tell data from noise. For each teacher this prints the loss (first layer x10, as
DeepInversion weighs it) of 256 real train digits, of 256 Gaussian-noise images (normalised space, clamped)
and of the first 256 images of each synthetic dataset given, in two forms: raw, ``||mu - mu_run|| + ||var -
var_run||`` per layer (the paper's), and standardised, the same on each channel's statistics in units of its
running spread (``--set bn_standardized=true``; :meth:`datafree.losses.BNStatisticLoss.standardized`), with
each form's share in the first, middle and last third of the BN layers. A prior under which a synthetic
dataset scores below real data rewards something real data does not do (docs/fidelity.md, "Session 29").

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/bn_standardized_profile.py CARD [--dataset NAME=DIR ...] \
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

FIRST_LAYER_WEIGHT = 10.0  # DeepInversion's first_bn_weight


def layer_terms(model: torch.nn.Module, x: torch.Tensor, standardized: bool) -> list[float]:
    """Each BN layer's ``||mean term|| + ||variance term||`` on batch ``x`` (first layer unweighted)."""
    from datafree.hooks import BNStatistics
    from datafree.losses import BNStatisticLoss

    with torch.no_grad(), BNStatistics(model) as st:
        model(x)
        out = []
        for i, layer in enumerate(st.layers):
            spec = BNStatisticLoss([layer.running_mean], None, [layer.running_var])  # type: ignore[list-item]
            if standardized:
                spec = spec.standardized([layer.eps])
            out.append(float(spec([st.means[i]], [st.vars[i]])))  # type: ignore[list-item]
        return out


def summary(terms: list[float]) -> dict[str, Any]:
    """The weighted total and the unweighted sums over the first, middle and last third of the layers."""
    n = len(terms)
    cuts = [0, n // 3, 2 * n // 3, n]
    return {
        "total": round(FIRST_LAYER_WEIGHT * terms[0] + sum(terms[1:]), 2),
        "thirds": [round(sum(terms[a:b]), 2) for a, b in zip(cuts, cuts[1:], strict=False)],
    }


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cards", nargs="+", help="teacher cards (or shipped names)")
    ap.add_argument("--dataset", action="append", default=[], metavar="NAME=DIR",
                    help="a synthetic dataset directory of the (single) teacher")  # fmt: skip
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    from datafree.cards import load_model
    from datafree.data.digits import digits_split
    from datafree.dataset import SyntheticDataset

    if args.dataset and len(args.cards) > 1:
        ap.error("--dataset needs a single teacher")
    torch.set_num_threads(1)
    rows = []
    for card in args.cards:
        lm = load_model(card)
        model = lm.model.eval()
        shape = tuple(int(v) for v in lm.card.input_shape)
        norm = lm.card.normalizer()
        x, _ = digits_split("train", shape)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(0)
        batches = {"real": norm(x)[torch.randperm(len(x), generator=g)[:256]],
                   "noise": norm.clamp_(torch.randn((256, *shape), generator=g))}  # fmt: skip
        for item in args.dataset:
            name, _, path = item.partition("=")
            batches[name] = norm(SyntheticDataset.open(path).load()["images"][:256].float())
        for name, batch in batches.items():
            row = {"teacher": lm.card.name or card, "images": name, "n": len(batch)}
            for form in ("raw", "standardized"):
                row[form] = summary(layer_terms(model, batch, form == "standardized"))
            rows.append(row)
            raw, std = row["raw"], row["standardized"]
            print(f"{row['teacher']:18s} {name:14s} raw {raw['total']:9.1f} (thirds "
                  f"{' / '.join(f'{v:.1f}' for v in raw['thirds'])})   standardised {std['total']:8.1f} "
                  f"(thirds {' / '.join(f'{v:.1f}' for v in std['thirds'])})", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
