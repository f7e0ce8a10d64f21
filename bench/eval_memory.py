"""Peak memory of ``datafree evaluate`` on a large RGB ImageFolder of mixed sizes (issue 12).

Writes ``--num-images`` RGB PNGs of mixed sizes (``--min-size`` to ``--max-size`` px per side, each
side drawn independently) under ``--root``: real digits from scikit-learn's test split, upsampled to
the drawn size, lightly tinted (a random near-white foreground and near-black background colour per
image) and saved in class
folders ``0``..``9``. Then runs ``datafree evaluate --model custom_teacher --data ROOT --json`` (the
shipped 3x24x24 RGB fixture teacher; images are converted and resized to its input as they stream)
in a child process and reads that process's peak resident memory (its own ``ru_maxrss`` from
``wait4``). With ``--workers N`` > 0 each DataLoader worker is a further process not summed into this
figure; the recorded run uses ``--workers 0`` (everything in one process).

    python bench/eval_memory.py --root /tmp/eval_memory_imgs     # generate (once) + measure

Prints and writes ``bench/results/eval_memory.json``: images, peak RSS (MiB), top-1, top-5, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, setup  # noqa: E402

LIMIT_MIB = 1536  # the bound: under 1.5 GB peak RSS


def generate(root: Path, n: int, lo: int, hi: int, seed: int) -> None:
    """Write ``n`` coloured digit PNGs of mixed sizes as ``root/<label>/<i>.png`` (skips if complete)."""
    from PIL import Image

    from datafree.data import digits_split

    marker = root / ".complete"
    if marker.is_file() and marker.read_text().strip() == f"{n} {lo} {hi} {seed}":
        return
    x, y = digits_split("test", (1, 8, 8))
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(y)
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        g = Image.fromarray((x[j, 0].numpy() * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        a = np.asarray(g, dtype=np.float32)[..., None] / 255.0
        fg, bg = 255 - rng.integers(0, 24, size=3), rng.integers(0, 16, size=3)  # lightly tinted
        rgb = (a * fg + (1 - a) * bg).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(root / str(int(y[j])) / f"{i:06d}.png")
    marker.write_text(f"{n} {lo} {hi} {seed}")


def evaluate_peak(card: Path, root: Path, batch_size: int, workers: int) -> tuple[dict, float, float]:
    """Run ``datafree evaluate --json`` in a child; its result, peak RSS (MiB, largest process), seconds."""
    cmd = [sys.executable, str(ROOT / "cli.py"), "evaluate", "--model", str(card), "--data", str(root),
           "--batch-size", str(batch_size), "--workers", str(workers), "--device", "cpu",
           "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    peak = usage.ru_maxrss / 1024  # Linux: KiB -> MiB; the largest single process (workers are separate)
    if proc.returncode != 0:
        sys.exit(f"evaluate failed ({proc.returncode}): {err.strip()}")
    return json.loads(out), peak, seconds


def main() -> None:
    """Generate the folder, evaluate it in a child process, record peak RSS and accuracy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/eval_memory_imgs"))
    ap.add_argument("--num-images", type=int, default=20_000)
    ap.add_argument("--min-size", type=int, default=64)
    ap.add_argument("--max-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--baseline-images", type=int, default=500, help="A small folder measured first, for comparison."
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_memory.json")
    args = ap.parse_args()
    dev = setup("cpu", 1)

    t0 = time.perf_counter()
    generate(args.root, args.num_images, args.min_size, args.max_size, args.seed)
    gen_s = time.perf_counter() - t0
    card = ROOT / "assets" / "fixtures" / "custom_teacher" / "model.json"
    small_root = args.root.with_name(args.root.name + f"_{args.baseline_images}")
    generate(small_root, args.baseline_images, args.min_size, args.max_size, args.seed)
    small, small_mib, _ = evaluate_peak(card, small_root, args.batch_size, args.workers)
    res, peak_mib, eval_s = evaluate_peak(card, args.root, args.batch_size, args.workers)
    record = {
        "command": f"datafree evaluate --model {card.relative_to(ROOT)} --data {args.root} --batch-size "
        f"{args.batch_size} --workers {args.workers} --device cpu --json",
        "num_images": res["num_samples"],
        "image_sizes_px": [args.min_size, args.max_size],
        "model": "custom_teacher (3x24x24, net.py:build)",
        "batch_size": args.batch_size,
        "workers": args.workers,
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_mib_small": round(small_mib, 1),
        "small_num_images": small["num_samples"],
        "command_line": " ".join(sys.argv),
        "limit_mib": LIMIT_MIB,
        "under_limit": peak_mib < LIMIT_MIB,
        "top1": round(res["accuracy"], 4),
        "top5": round(res["top5"], 4),
        "evaluate_seconds": round(eval_s, 1),
        "generate_seconds": round(gen_s, 1),
        "machine": machine(dev),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{record['num_images']} images ({args.min_size}-{args.max_size} px RGB): "
        f"peak RSS {record['peak_rss_mib']} MiB (limit {LIMIT_MIB}; {small['num_samples']} images: "
        f"{record['peak_rss_mib_small']} MiB); top-1 {record['top1']:.4f}, top-5 {record['top5']:.4f}; "
        f"evaluate {record['evaluate_seconds']} s"
    )


if __name__ == "__main__":
    main()
