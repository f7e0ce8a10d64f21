"""Session 10: what ``plan(teacher, method="deepinversion")`` decides, as JSON (to diff two checkouts).

Usage (from the checkout whose code is dumped; the budget's change must leave resnet8_digits as it was)::

    PYTHONPATH=. DATAFREE_SUITE=/work/cache/suite python bench/results/s10_di/di_plan_dump.py resnet8_digits
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings

import torch


def main(teachers: list[str]) -> None:  # noqa: D103
    import datafree
    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.plan import plan

    torch.set_num_threads(1)
    out: dict[str, object] = {"datafree": datafree.__file__}  # which checkout's code ran
    for t in teachers:
        lm = load_model(resolve_teacher(t))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = plan(lm, method="deepinversion")
        assert p.synthesizer is not None
        out[t] = {
            "num_images": p.num_images,
            "kd": dataclasses.asdict(p.kd),
            "method_options": p.method_options,
            "synth": dataclasses.asdict(p.synthesizer.config),
        }
    print(json.dumps(out, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
