r"""Screen NAYER's growing-pool loop by work, not wall time: generator and KD steps to 95% of the teacher.

On a shared machine wall-clock caps cut runs short at random; this counts steps instead. For each
configuration (JSON: ``it`` generator steps per round, ``K`` KD steps per round, ``W`` warm-up rounds
of synthesis before the first KD step, ``pb`` images per round, ``kb`` KD batch, ``lr`` KD lr,
``total`` KD steps of the cosine schedule, ``seed``, ``opts`` other backend options, ``kd`` other
``KDConfig`` fields, e.g. ``{"temperature": 20}``) a fresh
``resnet8_half`` is distilled from ``resnet8_digits`` through :class:`datafree.sources.PoolSource` and
the shared KD stage, evaluated on the digits test split every round, until it reaches 95% of the
teacher (0.9944) or ``max_kd`` KD steps. The estimated CPU seconds price each step at the per-step CPU
time (``time.process_time``, one thread) measured at the start of the same process.

Usage::

    PYTHONPATH=. python bench/pool_screen.py '{"it": 20, "K": 20}' '{"it": 10, "K": 10, "W": 8}'

Prints one line per configuration (no file is written).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

TEACHER_ACC = 0.9944


class _Stop(Exception):
    pass


def step_costs(lm: Any) -> dict[tuple[str, int], float]:
    """CPU seconds of one generator step (``g``) and one KD step (``k``) at batch 16, 32, 64 and 128."""
    from datafree.augment import kd_augmentation
    from datafree.distill import KDConfig, _kd_loss, _make_optimizer
    from datafree.models import create_model
    from generators import create_synthesizer

    out = {}
    for b in (16, 32, 64, 128):
        s = create_synthesizer("nayer", lm.model, lm.card, seed=0)
        s.reset(b, torch.Generator().manual_seed(0))
        for _ in range(2):
            s.step()
        t = time.process_time()
        for _ in range(8):
            s.step()
        out[("g", b)] = (time.process_time() - t) / 8
        st = create_model("resnet8_half", 10, 1)
        cfg = KDConfig(batch_size=b, lr=0.1)
        opt = _make_optimizer(st, cfg)
        aug = kd_augmentation((1, 16, 16))
        x = torch.randn(b, 1, 16, 16)

        def one() -> None:
            loss = _kd_loss(st, lm.model, lm.model, aug(x), None, cfg, torch.device("cpu"))  # noqa: B023
            opt.zero_grad()  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        for _ in range(2):
            one()
        t = time.process_time()
        for _ in range(8):
            one()
        out[("k", b)] = (time.process_time() - t) / 8
    return out


def run(lm: Any, it: int = 20, K: int = 20, W: int = 0, pb: int = 32, kb: int = 64, lr: float = 0.1,  # noqa: N803
        total: int = 1200, seed: int = 0, opts: dict[str, Any] | None = None, max_kd: int = 640,
        kd: dict[str, Any] | None = None,
        ) -> tuple[int, int, bool, list[float]]:  # fmt: skip
    """Generator steps, KD steps, whether 95% was reached, and the accuracy after every round."""
    from datafree.distill import KDConfig, distill
    from datafree.evaluate import evaluate_model
    from datafree.models import create_model
    from datafree.sources import PoolSource
    from generators import create_synthesizer

    torch.manual_seed(seed)
    student = create_model("resnet8_half", 10, 1)
    synth = create_synthesizer("nayer", lm.model, lm.card, seed=seed, iterations=it, **(opts or {}))
    src = PoolSource(synth, batch_size=pb, seed=seed)
    for _ in range(W):
        src.update(student)
    kd_done = [0]
    hist: list[float] = []

    def ev(m: torch.nn.Module) -> float:
        kd_done[0] += K
        a = evaluate_model(m, lm.card)["accuracy"]
        hist.append(round(a, 3))
        if a >= 0.95 * TEACHER_ACC or kd_done[0] >= max_kd:
            raise _Stop
        return a

    cfg = KDConfig(batch_size=kb, lr=lr, kd_steps=K, steps_per_epoch=K, epochs=max(1, total // K), seed=seed,
                   **(kd or {}))  # fmt: skip
    try:
        distill(lm.model, student, src, cfg, input_shape=(1, 16, 16), eval_fn=ev)
    except _Stop:
        pass
    return src.rounds * it, kd_done[0], hist[-1] >= 0.95 * TEACHER_ACC, hist


def main() -> None:  # noqa: D103
    torch.set_num_threads(1)
    from datafree.cards import load_model
    from datafree.progress import set_quiet

    set_quiet(True)
    lm = load_model("resnet8_digits")
    costs = step_costs(lm)
    print("CPU ms per step", {f"{k}{b}": round(v * 1e3, 1) for (k, b), v in costs.items()}, flush=True)
    for spec in sys.argv[1:]:
        g = json.loads(spec)
        gs, ks, ok, hist = run(lm, **g)
        est = gs * costs[("g", g.get("pb", 32))] + ks * costs[("k", g.get("kb", 64))]
        print(json.dumps(g), f"reached={ok} gen_steps={gs} kd_steps={ks} est_cpu_s={est:.1f}",
              "last accuracies", hist[-6:], flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
