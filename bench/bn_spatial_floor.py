"""The BN-statistic loss of REAL test digits against Gaussian noise, split by the BN input's spatial size.

DeepInversion's prior (and every BN-inverting generator's) asks a synthetic batch for the teacher's running
statistics at every BN layer. This prints, per teacher and per spatial size of the BN layers' inputs (H x W
at the card's input shape), the summed per-layer loss ``||mu - mu_run|| + ||var - var_run||`` of 256 and of 32
real test digits and of 32 Gaussian-noise images (normalised space, clamped like the noise baseline): where
real data is not far below noise, the prior does not tell data from noise (docs/fidelity.md, "Session 27").

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/bn_spatial_floor.py CARD [CARD ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def main(argv: list[str]) -> int:  # noqa: D103
    from bench.bn_standardized_profile import layer_terms
    from datafree.cards import load_model
    from datafree.data.digits import digits_split
    from datafree.hooks import batchnorm_spatial_sizes

    torch.set_num_threads(1)
    for path in argv:
        lm = load_model(path)
        model = lm.model.eval()
        shape = tuple(int(v) for v in lm.card.input_shape)
        x, _ = digits_split("test", shape)  # type: ignore[arg-type]
        norm = lm.card.normalizer()
        x = norm(x)
        noise = norm.clamp_(torch.randn((32, *shape), generator=torch.Generator().manual_seed(0)))
        hw = batchnorm_spatial_sizes(model, shape)
        sums: dict[str, dict[int, float]] = {}
        for name, batch in (("real 256", x[:256]), ("real 32", x[:32]), ("noise 32", noise)):
            by: dict[int, float] = {}
            for j, t in enumerate(layer_terms(model, batch, standardized=False)):
                by[hw[j]] = by.get(hw[j], 0.0) + t
            sums[name] = by
        for size in sorted(sums["real 256"], reverse=True):
            n = sum(1 for v in hw if v == size)
            cols = " | ".join(f"{sums[k][size]:.1f}" for k in sums)
            print(f"| {lm.card.name} | {size} | {n} | {cols} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
