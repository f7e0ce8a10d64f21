r"""Does DAFL's generator leave a class out? Its generator alone, no student (a cheap screen of ``ie_loss``).

DAFL's generator loss does not involve the student, so its class coverage can be read without the KD
stage: for each teacher x seed x form of the information-entropy term (``ie_loss``: ``entropy``, the
paper's, or ``coverage``), the generator trains ``--steps`` steps at DAFL's settings (600: a ``compress``
run's count at DAFL's 30 KD epochs), then the teacher labels 1,024 of its images
(:func:`datafree.quality.generator_quality`, the figure ``compress`` reports as ``teacher_quality``).
The steps' random draws are not a ``compress`` run's (no student, no KD batches), so a row is a sample of
the same process, not a replay of a run.

Session 36 ran it on three BN-less teachers (``bench/results/s36/dafl_coverage_plain.md``; DIR_t1: the suite
trained with ``assets/train_suite.py --seed 1``)::

    OMP_WAIT_POLICY=PASSIVE python bench/dafl_coverage_probe.py --seeds 0,1,2,3,4 \
        --teachers lenet5_digits,DIR/plain_32/model.json,DIR_t1/plain_32/model.json \
        --out bench/results/s36/dafl_coverage_plain
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, markdown_table, setup  # noqa: E402


def probe(teacher_spec: str, seed: int, form: str, steps: int) -> dict:
    """Train DAFL's generator ``steps`` steps with ``ie_loss=form``; the teacher's classes on its images."""
    from datafree.cards import load_model
    from datafree.quality import generator_quality
    from generators import create_synthesizer

    loaded = load_model(teacher_spec)
    teacher, card = loaded.model, loaded.card
    torch.manual_seed(seed)
    synth = create_synthesizer("dafl", teacher, card, iterations=steps, seed=seed, ie_loss=form)
    t0 = time.process_time()
    for _ in range(steps):
        synth.step()
    cpu = time.process_time() - t0
    q = generator_quality(synth, teacher)
    gen = torch.Generator().manual_seed(1234)  # generator_quality's draw, for the class counts
    with torch.no_grad():
        pred = torch.cat([teacher(synth.sample(256, generator=gen).images).argmax(1) for _ in range(4)])
    counts = torch.bincount(pred, minlength=card.num_classes).tolist()
    return {"teacher": card.name, "card": teacher_spec, "seed": seed, "ie_loss": form, "steps": steps,
            "cpu_s": round(cpu, 1), **q, "counts": counts}  # fmt: skip


def main() -> None:
    """Run the probe over teachers x seeds x forms; write OUT.json and OUT.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", required=True, help="comma-separated shipped names or card paths")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forms", default="entropy,coverage")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = ap.parse_args()
    device = setup("cpu", args.threads)
    rows = []
    forms = args.forms.split(",")
    for t in args.teachers.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for form in forms:
                r = probe(t, seed, form, args.steps)
                rows.append(r)
                print(
                    f"{r['teacher']} seed {seed} {form}: rare {r['rare_classes']} counts {r['counts']}",
                    flush=True,
                )
                out = {"machine": machine(device), "rows": rows}
                args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    header = [
        "teacher",
        "card",
        "seed",
        "ie_loss",
        "min class share",
        "rare classes",
        "classes of 1,024",
        "CPU s",
    ]
    table = markdown_table(
        header,
        [[r["teacher"], r["card"], r["seed"], r["ie_loss"], r["min_class_fraction"], r["rare_classes"] or "-",
          " ".join(map(str, r["counts"])), r["cpu_s"]] for r in rows],
    )  # fmt: skip
    summary = ", ".join(
        f"{f}: {sum(bool(r['rare_classes']) for r in rows if r['ie_loss'] == f)} of "
        f"{sum(r['ie_loss'] == f for r in rows)}"
        for f in forms
    )
    args.out.with_suffix(".md").write_text(
        f"DAFL's generator alone, {args.steps} steps (`bench/dafl_coverage_probe.py`); runs with a class "
        f"under 10% of its fair share: {summary}.\n\n{table}\n"
    )
    print(summary)


if __name__ == "__main__":
    main()
