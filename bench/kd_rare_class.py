r"""A controlled test of the KD stage's class balance: real digits with one class thinned out.

The digits train split (at the teacher's input shape), labelled by the teacher's logits as a written
dataset is, keeps only ``--keep`` images of class ``--rare-class`` (the rest of every other class), the way
a synthetic dataset may hold almost none of a class (``fast`` on the suite's MobileNetV2: 14 of 4,096
images of class 1). The teacher's default student is distilled on it with the shared KD defaults and each
``KDConfig.class_balance`` of ``--balance`` (0: the plain shuffle, the default; 1: every class drawn equally
often), for each KD seed. Reported: the student's test
accuracy, overall and on the thinned class.

    PYTHONPATH=. python bench/kd_rare_class.py --teacher resnet8_digits --rare-class 1 --keep 4 \
        --balance 0,1 --seeds 0,1,2 --out bench/results/s19_balance/rare_resnet8_digits.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from bench.suite import resolve_teacher  # noqa: E402
from datafree.cards import load_model  # noqa: E402
from datafree.data.digits import digits_split  # noqa: E402
from datafree.dataset import SyntheticDataset  # noqa: E402
from datafree.distill import KDConfig, distill  # noqa: E402
from datafree.plan import make_student  # noqa: E402
from datafree.sources import DatasetSource  # noqa: E402


def thinned_dataset(lm, root: Path, rare: int, keep: int) -> torch.Tensor:
    """Write the train split with ``keep`` images of class ``rare``; return the teacher's class counts."""
    x, y = digits_split("train", tuple(lm.card.input_shape))
    idx = torch.cat([torch.nonzero(y != rare).view(-1), torch.nonzero(y == rare).view(-1)[:keep]])
    x = x[idx]
    with torch.no_grad():
        logits = torch.cat([lm.model(lm.card.normalizer()(x[i : i + 256])) for i in range(0, len(x), 256)])
    ds = SyntheticDataset.create(
        root, method="real-digits-thinned", config={"rare_class": rare, "keep": keep}, seed=0,
        teacher=lm.card.name, teacher_sha256=lm.card.sha256, input_shape=list(lm.card.input_shape),
        mean=lm.card.mean, std=lm.card.std, num_classes=lm.card.num_classes, num_images=len(x),
        shard_size=len(x),
    )  # fmt: skip
    ds.write_shard(0, x, logits.argmax(1), logits)
    ds.write_manifest()
    return torch.bincount(logits.argmax(1), minlength=lm.card.num_classes)


def test_accuracy(student: torch.nn.Module, lm, rare: int) -> tuple[float, float]:
    """Test accuracy overall and on class ``rare``."""
    x, y = digits_split("test", tuple(lm.card.input_shape))
    student.eval()
    with torch.no_grad():
        pred = student(lm.card.normalizer()(x)).argmax(1)
    return float((pred == y).float().mean()), float((pred[y == rare] == rare).float().mean())


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="resnet8_digits", help="a shipped name, a suite name or a card")
    ap.add_argument("--rare-class", type=int, default=1)
    ap.add_argument("--keep", type=int, default=4, help="images of the rare class kept")
    ap.add_argument("--balance", default="0,1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = load_model(resolve_teacher(args.teacher), torch.device("cpu"))
    t_acc, _ = test_accuracy(lm.model, lm, args.rare_class)
    work = Path(tempfile.mkdtemp(prefix="kd_rare_class_"))
    counts = thinned_dataset(lm, work / "data", args.rare_class, args.keep)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for balance in (float(b) for b in args.balance.split(",")):
            student, arch = make_student(None, lm, seed)
            src = DatasetSource(work / "data", lm.card, seed=seed)
            t0 = time.process_time()
            res = distill(lm.model, student, src, KDConfig(class_balance=balance, seed=seed),
                          input_shape=lm.card.input_shape, desc="kd")  # fmt: skip
            acc, rare_acc = test_accuracy(res.student, lm, args.rare_class)
            row = {
                "teacher": lm.card.name,
                "student": arch,
                "balance": balance,
                "seed": seed,
                "accuracy": acc,
                "ratio_to_teacher": round(acc / t_acc, 4),
                "rare_class_accuracy": rare_acc,
                "class_balance": res.class_balance,
                "cpu_s": round(time.process_time() - t0, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {"machine": machine(torch.device("cpu")), "args": vars(args), "teacher_accuracy": t_acc,
           "class_counts": counts.tolist(), "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
