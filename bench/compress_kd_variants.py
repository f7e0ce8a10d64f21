r"""`compress` with its defaults and with KD variants, each on the same synthetic images per seed.

For each seed, ``datafree compress --method M --seed S`` runs once into ``--cache/S`` (its ``data/``
is kept; a rerun reuses it) and is the row ``default``; every KD variant (JSON: ``{"name":
{KDConfig field: value}}``) then runs ``compress`` again in a fresh directory holding a copy of
that ``data/``, so the synthesis (the same backend settings and seed) is reused and only the KD
stage differs. This is the code path of ``datafree compress`` (no noise baseline): a variant's
figure is what ``compress`` would give with those KD settings as its defaults.

Usage::

    PYTHONPATH=. python bench/compress_kd_variants.py --method cmi --seeds 0,1,2 \
        --variants '{"default": {}, "T20": {"temperature": 20}}' --cache /tmp/cmi_cache \
        --out bench/results/compress_cmi_kd_variants.json

Prints one line per (seed, variant) and writes the JSON (student accuracy, share of the teacher,
seconds per stage, the KD settings used).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, setup  # noqa: E402


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="cmi")
    ap.add_argument("--teacher", default="resnet8_digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default='{"default": {}}', help="JSON: name -> KDConfig overrides")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backend option")
    ap.add_argument("--cache", required=True, help="directory of the per-seed compress runs (data/ reused)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from bench.common import key_values
    from datafree.pipeline import compress

    options = key_values(args.set, "--set", ap.error)
    variants: dict[str, dict[str, Any]] = json.loads(args.variants)
    device = setup("cpu", args.threads)
    cache = Path(args.cache)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = cache / str(seed)
        if not (base / "report.json").is_file():
            compress(args.teacher, base, device=device, method=args.method, synth_options=options,
                     baseline=False, seed=seed)  # fmt: skip
        first = json.loads((base / "report.json").read_text())
        synth_s = first["stages_seconds"].get("synthesize")
        rows.append({
            "seed": seed, "variant": "default", "kd_overrides": {},
            "student_accuracy": first["student"]["accuracy"],
            "share_of_teacher": first["student"]["ratio_to_teacher"],
            "teacher_accuracy": first["teacher"]["accuracy"],
            "synthesize_s (first run)": synth_s, "distill_s": first["stages_seconds"]["distill"],
            "kd": first["kd"],
        })  # fmt: skip
        print(f"seed {seed} default: student {first['student']['accuracy']:.4f} "
              f"({100 * first['student']['ratio_to_teacher']:.1f}% of the teacher)", flush=True)  # fmt: skip
        for name, kd in variants.items():
            out = Path(tempfile.mkdtemp(prefix="bench-kdv-"))
            shutil.copytree(base / "data", out / "data")
            t1 = time.perf_counter()
            rep = compress(args.teacher, out, device=device, method=args.method, synth_options=options,
                           baseline=False, seed=seed, kd=kd or None)  # fmt: skip
            row = {
                "seed": seed,
                "variant": name,
                "kd_overrides": kd,
                "student_accuracy": rep["student"]["accuracy"],
                "share_of_teacher": rep["student"]["ratio_to_teacher"],
                "teacher_accuracy": rep["teacher"]["accuracy"],
                "synthesize_s (first run)": synth_s,
                "distill_s": rep["stages_seconds"]["distill"],
                "wall_s": round(time.perf_counter() - t1, 1),
                "kd": rep["kd"],
            }
            shutil.rmtree(out, ignore_errors=True)
            rows.append(row)
            print(f"seed {seed} {name}: student {row['student_accuracy']:.4f} "
                  f"({100 * row['share_of_teacher']:.1f}% of the teacher), distill {row['distill_s']} s",
                  flush=True)  # fmt: skip
    record = {"machine": machine(device), "method": args.method, "options": options, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
