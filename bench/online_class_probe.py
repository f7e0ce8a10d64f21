r"""What a finished online run's generator taught its student about one class (a diagnosis, no training).

For each ``compress`` run of an online backend (``generator.safetensors``, ``model.json``, ``report.json``),
the trained generator draws ``--images`` images (fixed seed) and this prints, for class ``--cls``:

- how many of them the teacher calls that class, and its mean confidence on them;
- how often the student agrees with the teacher on them (its fit of the class it was shown);
- on the digits test split's real images of the class: the student's accuracy and where it puts them;
- whether the generator covered the real images in the teacher's feature space: for each real image, the
  teacher class of its nearest generated image (cosine of the teacher's penultimate features) and the mean
  of that nearest cosine.

Session 33 ran it on the MobileNetV2 runs whose students read no real 1
(``bench/results/s33/class_probe.md``), to tell a class the generator does not make from a class the student
does not learn from what it makes.

Usage::

    OMP_WAIT_POLICY=PASSIVE python bench/online_class_probe.py /tmp/job_queue/mbv2_{dafl,zskt,dfad}_std_s0 \
        --cls 1 --out bench/results/s33/class_probe.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def _penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and its penultimate features (the classifier's input), flattened and unit-norm."""
    from datafree.hooks import FeatureRecorder, penultimate_module

    logits, feats = [], []
    with FeatureRecorder([penultimate_module(model)], what="input") as rec:
        for b in x.split(256):
            logits.append(model(b))
            feats.append(rec.features[0].detach())
    return torch.cat(logits), nn.functional.normalize(torch.cat(feats).flatten(1), dim=1)


def probe(run: Path, cls: int, images: int, seed: int) -> dict:
    """The figures of the module docstring for one run directory."""
    from datafree.cards import load_model
    from datafree.data.evalsets import open_eval_data
    from datafree.online_train import load_online_synthesizer

    rep = json.loads((run / "report.json").read_text())
    teacher = load_model(rep["teacher"]["card"])
    student = load_model(run / "model.json")
    synth = load_online_synthesizer(teacher, run)
    rng = torch.Generator().manual_seed(seed)  # as datafree.quality.generator_quality draws
    with torch.no_grad():  # the generator's images are in the teacher's normalised space
        parts = [synth.sample(min(256, images - i), generator=rng).images for i in range(0, images, 256)]
    gen = torch.cat(parts)
    real = [(x, y) for x, y in open_eval_data("digits:test", teacher.card, batch_size=512)]
    x = torch.cat([b[0] for b in real])
    y = torch.cat([b[1] for b in real])
    k = teacher.card.num_classes
    student.model.eval()
    t_gen, f_gen = _penultimate(teacher.model, gen)
    _, f_real = _penultimate(teacher.model, teacher.card.normalizer()(x[y == cls]))
    with torch.no_grad():
        s_gen = torch.cat([student.model(b) for b in gen.split(256)]).argmax(1)
        s_real = student.model(student.card.normalizer()(x[y == cls])).argmax(1)
    t_arg = t_gen.argmax(1)
    mine = t_arg == cls
    sim = f_real @ f_gen.T
    nearest = t_arg[sim.argmax(1)]
    return {
        "run": run.name,
        "teacher_calls": int(mine.sum()),
        "images": len(gen),
        "teacher_conf": float(t_gen.softmax(1)[mine, cls].mean()) if mine.any() else None,
        "student_agrees": float((s_gen[mine] == cls).float().mean()) if mine.any() else None,
        "real_acc": float((s_real == cls).float().mean()),
        "real_read_as": torch.bincount(s_real, minlength=k).tolist(),
        "nearest_is_cls": float((nearest == cls).float().mean()),
        "nearest_cos": float(sim.max(1).values.mean()),
        "generated_per_class": torch.bincount(t_arg, minlength=k).tolist(),
    }


def main() -> None:
    """Probe the runs given on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="compress output directories of online backends")
    ap.add_argument("--cls", type=int, required=True, help="the class to probe")
    ap.add_argument("--images", type=int, default=2048, help="generated images per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the table here (Markdown) as well as to stdout")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = args.cls
    lines = [
        f"| run | generated images the teacher calls {c} | teacher's confidence on them | student agrees "
        f"on them | student on real {c}s | real {c}s read as (0-9) | real {c}s nearest a generated {c} | "
        "nearest cosine | generated images per teacher class (0-9) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    for run in args.runs:
        r = probe(run, c, args.images, args.seed)
        conf = "-" if r["teacher_conf"] is None else f"{r['teacher_conf']:.2f}"
        lines.append(
            f"| {r['run']} | {r['teacher_calls']} of {r['images']} | {conf} | {pct(r['student_agrees'])} | "
            f"{pct(r['real_acc'])} | {' '.join(map(str, r['real_read_as']))} | {pct(r['nearest_is_cls'])} | "
            f"{r['nearest_cos']:.3f} | {' '.join(map(str, r['generated_per_class']))} |"
        )
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
