"""CPU seconds of a DAFL generator step on WRN-40-2, raw vs standardised BN loss, alternating in one process.

Run from the repository root (the suite of ``assets/train_suite.py`` in ``$DATAFREE_SUITE``):
``OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/results/s31/step_time_probe.py``
"""

import os
import time

import torch

from datafree.cards import load_model
from generators import create_synthesizer

torch.set_num_threads(1)
lm = load_model(f"{os.environ.get('DATAFREE_SUITE', '/work/cache/suite')}/wrn40_2_32/model.json")
make = lambda std: create_synthesizer("dafl", lm.model, lm.card, batch_size=64, bn_standardized=std)  # noqa: E731
synths = {std: make(std) for std in (False, True)}
times: dict[bool, list[float]] = {False: [], True: []}
for _ in range(6):
    for std, synth in synths.items():
        t0 = time.process_time()
        synth.step(None)
        times[std].append(time.process_time() - t0)
for std, ts in times.items():  # the first step of each warms up
    print("std" if std else "raw", [round(x, 3) for x in ts], "mean of steps 2-6:", round(sum(ts[1:]) / 5, 3))
