r"""Why one seed of an offline backend distils worse: its images against the KD stage's own noise.

For each synthetic dataset (a ``compress`` run's ``data/``) the script reports what the teacher
says of the images (agreement with the target labels per class, confidence, the share of each
predicted class, and how alike the images of a class are: the mean cosine similarity of the
teacher's penultimate features between images of the same target class), then distils the
student ``compress`` would train (its KD settings, ``datafree.plan.kd_settings``, plus ``--kd``
overrides) once per KD seed, with the student evaluated on the digits test split after every
epoch, and records the per-epoch accuracy and the test confusions of the final student. The KD
seed sets the student's initial weights, the data order and the augmentation, as ``compress
--seed`` does; with the data's own seed the run is ``compress``'s KD stage exactly.

Also: ``--data real`` gives the statistics of the real train digits for comparison; ``--data A+B``
distils from two datasets concatenated (the KD steps per epoch follow the total count, as
``compress --num-images`` would set them); ``--balance`` repeats the images of the teacher's rarer
predicted classes so that KD draws every class equally often; every run also reports the student
after "precise BN" (its BN statistics recomputed over the whole set).

Usage::

    PYTHONPATH=. python bench/kd_seed_probe.py --data /tmp/cmi/0/data,/tmp/cmi/2/data \
        --kd-seeds 0,1,2 --out bench/results/s7_cmi8/kd_seed_probe.json

Prints one line per (dataset, KD seed) and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, setup  # noqa: E402


def penultimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` for ``x`` (B, D)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    got: list[torch.Tensor] = []
    h = last.register_forward_pre_hook(lambda _m, inp: got.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return got[0].flatten(1)


def load_sets(roots: list[Path], shape: tuple[int, ...] = (1, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] and stored labels of one dataset or of several, concatenated.

    The name ``real`` stands for the real digits train split with its true labels (statistics only).
    """
    from datafree.data.digits import digits_split
    from datafree.dataset import SyntheticDataset

    if [str(r) for r in roots] == ["real"]:
        return digits_split("train", tuple(shape))  # type: ignore[arg-type]

    parts = [SyntheticDataset.open(r).load() for r in roots]
    return torch.cat([d["images"] for d in parts]), torch.cat([d["labels"] for d in parts])


def data_stats(lm: Any, roots: list[Path]) -> dict[str, Any]:
    """Agreement, confidence, predicted-class shares and within-class similarity of a dataset."""
    pixels, labels = load_sets(roots, tuple(lm.card.input_shape))
    x = lm.card.normalizer()(pixels)
    with torch.no_grad():
        logits = lm.model(x)
    feats = torch.nn.functional.normalize(penultimate(lm.model, x), dim=1)
    pred = logits.argmax(1)
    prob = logits.softmax(1)
    c = lm.card.num_classes
    per_class = {}
    for k in range(c):
        m = labels == k
        f = feats[m]
        sim = f @ f.T
        n = len(f)
        mean_sim = float((sim.sum() - sim.diagonal().sum()) / max(1, n * (n - 1)))
        per_class[k] = {
            "images": int(m.sum()),
            "agreement": round(float((pred[m] == k).float().mean()), 4),
            "confidence": round(float(prob[m].amax(1).mean()), 4),
            "within_class_cos": round(mean_sim, 4),
            "predicted_share": round(float((pred == k).float().mean()) * c, 4),
        }
    cross = feats @ feats.T
    return {
        "images": len(x),
        "agreement": round(float((pred == labels).float().mean()), 4),
        "confidence": round(float(prob.amax(1).mean()), 4),
        "mean_cos_all_pairs": round(
            float((cross.sum() - cross.diagonal().sum()) / (len(x) * (len(x) - 1))), 4
        ),
        "per_class": per_class,
    }


def precise_bn(student: torch.nn.Module, images: torch.Tensor, batch: int = 128) -> torch.nn.Module:
    """A copy of ``student`` whose BN running statistics are the average over ``images`` ("precise BN").

    The KD stage leaves them an exponential average over its last batches (momentum 0.1); this
    recomputes them as the cumulative mean over the whole synthetic set, weights unchanged.
    """
    import copy

    m = copy.deepcopy(student)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            m(images[i : i + batch])
    return m.eval()


def balanced_by_teacher(teacher: torch.nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
    """``images`` with those of the teacher's rarer predicted classes repeated (drawn at random).

    Every predicted class ends with as many images as the most frequent one, so that a KD batch sees
    each class the teacher recognises equally often.
    """
    with torch.no_grad():
        pred = teacher(images).argmax(1)
    g = torch.Generator().manual_seed(seed)
    counts = torch.bincount(pred)
    top = int(counts.max())
    extra = []
    for c in range(len(counts)):
        idx = (pred == c).nonzero().flatten()
        if 0 < len(idx) < top:
            extra.append(idx[torch.randint(len(idx), (top - len(idx),), generator=g)])
    return torch.cat([images, images[torch.cat(extra)]]) if extra else images


def kd_run(
    lm: Any, roots: list[Path], kd_seed: int, overrides: dict[str, Any], method: str, balance: bool = False
) -> dict[str, Any]:
    """``compress``'s KD stage on ``roots`` with ``kd_seed``; per-epoch test accuracy and confusions.

    Several datasets are concatenated (their images in order); the KD steps per epoch follow the
    total count (:func:`datafree.rules.kd_budget`), as ``compress --num-images`` would set them.
    ``balance``: the KD stage draws the teacher's predicted classes equally often
    (:func:`balanced_by_teacher`); the KD steps stay those of the original count.
    """
    from datafree.data.digits import digits_split
    from datafree.distill import distill
    from datafree.evaluate import evaluate_model
    from datafree.plan import kd_settings, make_student
    from datafree.sources import DatasetSource, TensorSource

    for r in roots:
        DatasetSource(r, lm.card)  # checked against the teacher's card
    images = lm.card.normalizer()(load_sets(roots)[0])
    n = len(images)
    if balance:
        images = balanced_by_teacher(lm.model, images, kd_seed)
    source = TensorSource(images, seed=kd_seed)
    kd = kd_settings(method, {"seed": kd_seed, **overrides}, num_images=n)
    student, arch = make_student(None, lm, kd_seed)
    curve: list[float] = []

    def ev(m: torch.nn.Module) -> float:
        a = evaluate_model(m, lm.card)["accuracy"]
        curve.append(round(a, 4))
        return a

    t0, c0 = time.perf_counter(), time.process_time()
    distill(lm.model, student, source, kd, input_shape=lm.card.input_shape, eval_fn=ev)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    x, y = digits_split("test", tuple(lm.card.input_shape))
    x = lm.card.normalizer()(x)
    with torch.no_grad():
        pred = student(x).argmax(1)
        pred_bn = precise_bn(student, source.images)(x).argmax(1)
    wrong = [(int(t), int(p)) for t, p in zip(y, pred, strict=True) if t != p]
    return {
        "kd_seed": kd_seed,
        "student": arch,
        "kd": {k: v for k, v in kd.__dict__.items()},
        "final_accuracy": round(float((pred == y).float().mean()), 4),
        "correct": int((pred == y).sum()),
        "curve": curve,
        "errors_true_pred": sorted(wrong),
        "precise_bn_correct": int((pred_bn == y).sum()),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
    }


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True,
                    help="comma-separated dataset directories; A+B: the two concatenated; real: the "
                         "real train digits (statistics only)")  # fmt: skip
    ap.add_argument("--kd-seeds", default="", help="comma-separated KD seeds (empty: statistics only)")
    ap.add_argument("--kd", default="{}", help="JSON: KDConfig overrides")
    ap.add_argument("--balance", action="store_true", help="KD draws the teacher's classes equally often")
    ap.add_argument("--method", default="cmi", help="backend whose KD defaults apply")
    ap.add_argument("--teacher", default="resnet8_digits")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from datafree.cards import load_model
    from datafree.progress import set_quiet

    set_quiet(True)
    device = setup("cpu", args.threads)
    lm = load_model(args.teacher)
    overrides = json.loads(args.kd)
    out: dict[str, Any] = {"machine": machine(device), "method": args.method, "kd_overrides": overrides,
                           "balance": args.balance, "datasets": {}}  # fmt: skip
    for spec in [p for p in args.data.split(",") if p]:
        roots = [Path(p) for p in spec.split("+")]
        root = spec  # the JSON key
        stats = data_stats(lm, roots)
        print(f"{root}: agreement {stats['agreement']} confidence {stats['confidence']} "
              f"mean cos {stats['mean_cos_all_pairs']}", flush=True)  # fmt: skip
        for k, v in stats["per_class"].items():
            print(f"  class {k}: {v}", flush=True)
        out["datasets"][root] = {"stats": stats, "runs": []}
        runs = []
        for s in [int(v) for v in args.kd_seeds.split(",") if v]:
            r = kd_run(lm, roots, s, overrides, args.method, args.balance)
            runs.append(r)
            line = f"{root} kd seed {s}: {r['final_accuracy']} ({r['correct']}/360)"
            line += f" errors {r['errors_true_pred']} precise BN {r['precise_bn_correct']}/360"
            print(f"{line} last curve {r['curve'][-8:]} cpu {r['cpu_s']} s", flush=True)
            out["datasets"][root] = {"stats": stats, "runs": runs}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        out["datasets"][root] = {"stats": stats, "runs": runs}
    out["machine"]["load_average_end"] = machine(device)["load_average"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
