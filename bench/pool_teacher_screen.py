r"""Screen ``compress``'s growing-pool path on one teacher: learning curve, pool class histogram, CPU time.

Each variant (JSON) runs the pool loop that ``compress --method auto`` takes for an expensive BN
teacher (:func:`datafree.plan.plan` with ``pool=True``: the backend's ``pool_options`` and ``pool_kd``
under the variant's overrides) and distils the default student (or ``student``), evaluating it on the
digits test split every ``every`` epochs. It reports the student's accuracy curve, the teacher's
argmax histogram over the final pool (and its smallest class fraction), the teacher's agreement with
the pool's targets, and the process's CPU seconds (``time.process_time``; 1 thread is the proxy for
an idle core on a shared machine).

A variant with ``"real": true`` is the ceiling instead: the same student and KD settings (the pool's
``pool_kd`` under the overrides), but the batches come from the REAL digits train split.

Variant keys: ``name``, ``method`` (default ``fast``), ``synth`` (backend options, ``--set``), ``kd``
(KD overrides), ``student``, ``seed``, ``real``, ``every`` (epochs between evaluations, default 5).

Usage::

    PYTHONPATH=. python bench/pool_teacher_screen.py \
        --teacher /work/cache/suite/mobilenetv2_32/model.json --out bench/results/issue11_s5/screen.json \
        '{"name": "default"}' '{"name": "adv", "synth": {"adv_weight": 1}}'

Appends one JSON record per variant to ``--out`` (a JSON list, rewritten atomically after each variant).
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


def run_variant(lm: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one variant; its record."""
    from datafree.data.digits import digits_split
    from datafree.distill import distill
    from datafree.evaluate import evaluate_model
    from datafree.plan import make_student, plan
    from datafree.sources import PoolSource, TensorSource

    seed = int(spec.get("seed", 0))
    every = int(spec.get("every", 5))
    method = spec.get("method", "fast")
    p = plan(lm, method=method, pool=True, kd=spec.get("kd") or {}, method_options=spec.get("synth") or {},
             seed=seed)  # fmt: skip
    student, arch = make_student(spec.get("student"), lm, seed)
    shape = tuple(int(v) for v in lm.card.input_shape)
    if spec.get("real"):
        x, _ = digits_split("train", shape)  # type: ignore[arg-type]
        source: Any = TensorSource(lm.card.normalizer()(x), seed)
    else:
        source = p.open_source()
    curve: list[tuple[int, float]] = []

    def ev(m: torch.nn.Module) -> float:
        epoch = len(curve) + 1
        due = epoch % every == 0 or epoch == p.kd.epochs
        a = evaluate_model(m, lm.card)["accuracy"] if due else float("nan")
        curve.append((epoch, round(a, 4)))
        return a

    t0, w0 = time.process_time(), time.perf_counter()
    distill(lm.model, student, source, p.kd, input_shape=shape, eval_fn=ev)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    acc = evaluate_model(student, lm.card)["accuracy"]
    rec: dict[str, Any] = {
        "spec": spec, "student": arch, "student_acc": round(acc, 4), "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1), "curve": [c for c in curve if c[1] == c[1]],
        "kd": {k: getattr(p.kd, k) for k in ("epochs", "steps_per_epoch", "kd_steps", "batch_size", "lr",
                                             "temperature")},
    }  # fmt: skip
    if isinstance(source, PoolSource):
        pool = source.pooled()
        with torch.no_grad():
            pred = torch.cat([lm.model(pool[i : i + 256]).argmax(1) for i in range(0, len(pool), 256)]).cpu()
        hist = torch.bincount(pred, minlength=lm.card.num_classes).tolist()
        targets = source.targets()
        agreement = None if targets is None else round(float((pred == targets).float().mean()), 4)
        rec.update(pool_images=len(pool), teacher_argmax_hist=hist,
                   min_class_fraction=round(min(hist) / len(pred), 4), agreement=agreement)  # fmt: skip
    return rec


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datafree.cards import load_model
    from datafree.progress import set_quiet
    from datafree.utils import atomic_write_json

    set_quiet(True)
    lm = load_model(args.teacher)
    teacher_acc = None
    out = Path(args.out)
    records: list[dict[str, Any]] = json.loads(out.read_text()) if out.is_file() else []
    for v in args.variants:
        spec = json.loads(v)
        rec = run_variant(lm, spec)
        if teacher_acc is None:
            from datafree.evaluate import evaluate_model

            teacher_acc = evaluate_model(lm.model, lm.card)["accuracy"]
        rec.update(teacher=lm.card.name, teacher_acc=round(teacher_acc, 4),
                   pct=round(100 * rec["student_acc"] / teacher_acc, 1), threads=args.threads)  # fmt: skip
        records.append(rec)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, records)
        keys = ("spec", "student", "pct", "cpu_s", "wall_s", "curve", "teacher_argmax_hist", "agreement")
        print(json.dumps({k: rec.get(k) for k in keys}), flush=True)


if __name__ == "__main__":
    main()
