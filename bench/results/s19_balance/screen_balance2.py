"""KD-only screen on a compress run's written dataset (session 19, throw-away; kept as it ran).

The run's own KD settings and student (from its report.json); 'base' = the plain shuffle, a number p = the
epoch drawn with weights (1 / class count)^p, classes by the teacher's argmax on the un-augmented image.

    python screen_balance2.py RUN/report.json RUN/data OUT base|P
"""

import dataclasses
import json
import sys
import time

import torch

from datafree.cards import load_model
from datafree.distill import KDConfig
from datafree.pipeline import distill_to_dir
from datafree.sources import DatasetSource

torch.set_num_threads(1)
report, data, out, variant = sys.argv[1:5]
r = json.load(open(report))
t = load_model(r["teacher"]["card"], torch.device("cpu"))
t.model.eval()


class Balanced(DatasetSource):
    """The written dataset, each epoch drawn with replacement, weights (1 / class count) ** power."""

    power = 1.0

    def _permutation(self):
        if not hasattr(self, "_w"):
            with torch.no_grad():
                chunks = range(0, len(self.images), 256)
                pred = torch.cat([t.model(self.images[i : i + 256]).argmax(1) for i in chunks])
            counts = torch.bincount(pred, minlength=t.card.num_classes).float()
            self.counts = counts.tolist()
            self._w = (1.0 / counts[pred]) ** self.power
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.multinomial(self._w, len(self.images), replacement=True, generator=g)


if variant == "base":
    src = DatasetSource(data, t.card)
else:
    Balanced.power = float(variant)
    src = Balanced(data, t.card)
fields = {f.name for f in dataclasses.fields(KDConfig)}
kd = KDConfig(**{k: v for k, v in r["kd"].items() if k in fields})
t0 = time.process_time()
res = distill_to_dir(t, src, out, student_arch=r["student"]["arch"], kd=kd, seed=r["seed"], save=False)
ratio = res["accuracy"] / r["teacher"]["accuracy"]
reported = r["student"]["accuracy"]
counts = getattr(src, "counts", None)
print(json.dumps({"report": report, "variant": variant, "acc": res["accuracy"], "ratio": ratio,
                  "reported": reported, "counts": counts, "cpu": time.process_time() - t0}))  # fmt: skip
