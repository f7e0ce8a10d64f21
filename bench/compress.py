"""`datafree compress` with its defaults on the shipped BN teacher and on the never-seen custom teacher.

Usage: python bench/compress.py [--threads 2] [--device cpu] [--only resnet8_digits|custom]

Prints a markdown table (teacher, student, test accuracies, ratio, Gaussian-noise baseline, wall time
per stage) and writes bench/results/compress.json. Each run is the same code path as
`datafree compress --teacher T --out DIR` with default settings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import machine, markdown_table, write_result

import torch
from datafree.cards import ASSETS_DIR
from datafree.pipeline import compress

TEACHERS = {
    "resnet8_digits": "resnet8_digits",
    "custom": str(ASSETS_DIR / "fixtures" / "custom_teacher" / "model.json"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for key, spec in TEACHERS.items():
        if args.only and key != args.only:
            continue
        out = Path(tempfile.mkdtemp(prefix=f"bench-compress-{key}-"))
        t0 = time.perf_counter()
        rep = compress(spec, out, device=args.device)
        total = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        st = rep["stages_seconds"]
        rows.append(
            {
                "teacher": f"{rep['teacher']['name']} ({rep['teacher']['arch']})",
                "student": rep["student"]["arch"],
                "method": rep["method"],
                "teacher acc": f"{rep['teacher']['accuracy']:.4f}",
                "student acc": f"{rep['student']['accuracy']:.4f}",
                "ratio": f"{100 * rep['student']['ratio_to_teacher']:.1f}%",
                "noise-baseline acc": f"{rep['noise_baseline']['accuracy']:.4f}",
                "params T/S": f"{rep['teacher']['params']}/{rep['student']['params']}",
                "synth s": st.get("synthesize", ""),
                "distill s": st["distill"],
                "baseline s": st["baseline"],
                "total s": round(total, 1),
            }
        )
    cols = list(rows[0])
    print(f"machine: {machine()}")
    print(markdown_table(rows, cols))
    write_result("compress", {"rows": rows, "threads": args.threads})


if __name__ == "__main__":
    main()
