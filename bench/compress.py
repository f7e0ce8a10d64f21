"""`datafree compress` with its defaults on the shipped BN teacher and on the never-seen custom teacher.

Usage: python bench/compress.py [--threads 2] [--device cpu] [--only resnet8_digits|custom]
       [--method deepinversion] [--set KEY=VALUE ...] [--no-baseline] [--seed 0] [--num-images N] [--tag T]

Prints a markdown table (teacher, student, test accuracies, ratio, Gaussian-noise baseline, wall time
per stage) and writes bench/results/compress.json. Each run is the same code path as
`datafree compress --teacher T --out DIR` with default settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from bench.common import machine, markdown_table, setup  # noqa: E402
from datafree.cards import ASSETS_DIR  # noqa: E402
from datafree.pipeline import compress  # noqa: E402

TEACHERS = {
    "resnet8_digits": "resnet8_digits",
    "custom": str(ASSETS_DIR / "fixtures" / "custom_teacher" / "model.json"),
}


def main() -> None:
    """Run ``compress`` on each teacher (or only ``--only``), print the table and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None)
    ap.add_argument("--method", default="deepinversion", help="synthesis backend (compress's --method)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backend option")
    ap.add_argument("--no-baseline", action="store_true", help="skip the Gaussian-noise baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-images", type=int, default=None, help="synthetic images (default 1024)")
    ap.add_argument("--tag", default="", help="suffix of the result file name (e.g. the --set values)")
    args = ap.parse_args()
    from bench.common import key_values

    options = key_values(args.set, "--set", ap.error)
    device = setup(args.device, args.threads)
    rows = []
    for key, spec in TEACHERS.items():
        if args.only and key != args.only:
            continue
        out = Path(tempfile.mkdtemp(prefix=f"bench-compress-{key}-"))
        t0 = time.perf_counter()
        rep = compress(spec, out, device=device, method=args.method, synth_options=options,
                       baseline=not args.no_baseline, seed=args.seed,
                       **({"num_images": args.num_images} if args.num_images else {}))  # fmt: skip
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
                "noise-baseline acc": (
                    f"{rep['noise_baseline']['accuracy']:.4f}" if "noise_baseline" in rep else "-"
                ),
                "params T/S": f"{rep['teacher']['params']}/{rep['student']['params']}",
                "synth s": st.get("synthesize", ""),
                "distill s": st["distill"],
                "baseline s": st.get("baseline", "-"),
                "total s": round(total, 1),
            }
        )
    cols = list(rows[0])
    info = machine(device)
    print(f"machine: {info}")
    print(markdown_table(cols, [[r[c] for c in cols] for r in rows]))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    name = "compress" + (f"_{args.method}" if args.method != "deepinversion" else "")
    name += (f"_{args.only}" if args.only else "") + (f"_seed{args.seed}" if args.seed else "")
    name += f"_n{args.num_images}" if args.num_images else ""
    name += f"_{args.tag}" if args.tag else ""
    record = {"machine": info, "threads": args.threads, "method": args.method, "options": options}
    record["rows"] = rows
    (results / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
