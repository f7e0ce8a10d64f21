"""The online backends' loss terms at the first generator step, raw vs standardised BN term (session 31).

Run from the repository root (the suite of ``assets/train_suite.py`` in ``$DATAFREE_SUITE``):
``OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/results/s31/bn_terms_probe.py``
"""

import os

import torch

from datafree.cards import load_model
from datafree.models import create_model
from generators import create_synthesizer

torch.set_num_threads(1)
SUITE = os.environ.get("DATAFREE_SUITE", "/work/cache/suite")
for t in ("wrn40_2_32", "mobilenetv2_32", "vgg8_bn_32"):
    lm = load_model(f"{SUITE}/{t}/model.json")
    for m in ("dafl", "dfad"):
        for std in (False, True):
            s = create_synthesizer(m, lm.model, lm.card, batch_size=64, bn_standardized=std)
            student = create_model("resnet10_imagenet_quarter", 10, 3) if m != "dafl" else None
            logs = s.step(student)
            terms = {k: round(float(v), 3) for k, v in logs.items()}
            print(t, m, "std" if std else "raw", terms, flush=True)
