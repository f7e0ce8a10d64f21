"""Every torchvision classifier through a card: save, load back, same logits (session 27).

Builds each architecture of ``torchvision.models.list_models`` with 10 classes (torchvision's own
defaults, GoogLeNet's and Inception-v3's auxiliary classifiers included), writes it with
:func:`datafree.cards.save_model`, loads the card with :func:`datafree.cards.load_model` and compares one
forward pass of a random batch. Prints one line per architecture and the failures last; exit 1 if any.

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/torchvision_cards.py [--max-params 150e6] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def input_size(name: str) -> int:
    """The smallest square input the architecture takes among the sizes tried (ViTs: 224 only)."""
    if name.startswith(("vit_", "swin_", "maxvit_")):
        return 224
    return 96 if name == "inception_v3" else 64


def main() -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-params", type=float, default=150e6, help="skip larger architectures")
    ap.add_argument("--only", default=None, help="comma-separated names")
    args = ap.parse_args()
    import torchvision

    from datafree.cards import load_model, save_model

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    failed = []
    for name in names:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, num_classes=10).eval()
        params = sum(p.numel() for p in model.parameters())
        if params > args.max_params:
            print(f"{name}: skipped ({params / 1e6:.0f}M parameters)")
            continue
        size = input_size(name)
        with tempfile.TemporaryDirectory() as d:
            try:
                save_model(model, d, arch=name, num_classes=10, input_shape=[3, size, size], mean=[0.5] * 3,
                           std=[0.5] * 3)  # fmt: skip
                x = torch.rand(1, 3, size, size)
                with torch.no_grad():
                    same = torch.allclose(load_model(str(Path(d) / "model.json")).model(x), model(x))
                verdict = "ok" if same else "different logits"
            except Exception as e:  # noqa: BLE001 - the sweep reports every failure
                verdict = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        print(f"{name}: {verdict}", flush=True)
        if verdict != "ok":
            failed.append(name)
    print(f"failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
