"""s12 probe: can the online backends' generator make images mobilenetv2_32 calls "1" when asked?

Trains a fresh DFAD generator (the backends' network, tanh->BN head, clamp) with the teacher's CE toward
one class only, and prints the share of a batch the teacher assigns to it every 25 steps. Run:
DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. python bench/results/s12_probe/class1_probe.py [TEACHER] [CLASS]
"""

import sys

import torch
import torch.nn.functional as F

from datafree.cards import load_card, load_model
from generators import create_synthesizer

torch.set_num_threads(1)
torch.manual_seed(0)
name = sys.argv[1] if len(sys.argv) > 1 else "mobilenetv2_32"
cls = int(sys.argv[2]) if len(sys.argv) > 2 else 1
lm = load_model(load_card(f"/work/cache/suite/{name}/model.json"))
t = lm.model.eval()
for p in t.parameters():
    p.requires_grad_(False)
synth = create_synthesizer("dfad", t, lm.card, seed=0)
g = synth.generator
opt = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
target = torch.full((64,), cls)
for step in range(1, 201):
    x = synth.generate(synth.draw_z(64))
    logits = t(x)
    loss = F.cross_entropy(logits, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 25 == 0 or step == 1:
        share = float((logits.argmax(1) == cls).float().mean())
        p = float(logits.detach().softmax(1)[:, cls].mean())
        print(f"step {step}: CE {loss.item():.3f}, argmax == {cls}: {share:.2f}, mean p {p:.3f}", flush=True)
