"""s12 probe: the size of each generator term of an online backend on a suite teacher.

At init and after 10-100 generator steps against a fixed fresh student (which terms drive the generator);
``quick`` among the arguments: the first step only. Run from the repository root:
PYTHONPATH=. python bench/results/s12_probe/terms_probe.py TEACHER METHOD [KEY=VALUE...] [quick]
"""

import sys

import torch

from datafree.cards import load_card, load_model
from datafree.plan import make_student
from generators import create_synthesizer

torch.set_num_threads(1)
name, method = sys.argv[1], sys.argv[2]
opts = {k: float(v) for k, v in (a.split("=") for a in sys.argv[3:] if "=" in a)}
lm = load_model(load_card(name if name.endswith("_digits") else f"/work/cache/suite/{name}/model.json"))
t = lm.model.eval()
for p in t.parameters():
    p.requires_grad_(False)
student, arch = make_student(None, lm, 0)
synth = create_synthesizer(method, t, lm.card, seed=0, **opts)
STEPS = (1, 10, 50, 100) if len(sys.argv) < 4 or "quick" not in sys.argv[3:] else (1,)
for step in range(1, max(STEPS) + 1):
    logs = synth.step(student)
    if step in STEPS:
        with torch.no_grad():
            x = synth.sample(512, generator=torch.Generator().manual_seed(1)).images
            counts = torch.bincount(t(x).argmax(1), minlength=10).tolist()
        terms = {k: round(float(v), 3) for k, v in logs.items()}
        print(f"step {step}: {terms}; teacher argmax on 512: {counts}", flush=True)
