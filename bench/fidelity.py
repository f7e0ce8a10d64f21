"""Fidelity matrix: teacher x method, each cell `datafree compress` with every default.

Usage:
    python bench/fidelity.py [--teachers resnet18_32,resnet8_digits] [--methods deepinversion,dafl]
                             [--quick] [--threads 1] [--suite DIR] [--out bench/results] [--tag NAME]
                             [--merge] [--num-images N --epochs E --batch-size B --iterations I]

Teachers are the suite's (bench/suite.py: cached by assets/train_suite.py under --suite,
$DATAFREE_SUITE or ~/.cache/datafree/suite) and the shipped 1x16x16 ones; methods are every
registered backend except ZeroQ (its data calibrates quantizers; it is not meant for KD). BN methods
run only on BN teachers. Each cell is exactly ``datafree.compress(teacher, out, method=m)``: the
rule-based defaults, no per-teacher flag. A cell reports the teacher's and the student's test
accuracy, the student's % of the teacher, the same student from Gaussian noise with the same budget,
wall time, the teacher's agreement with the targets and mean confidence on the synthetic images
(offline methods), and a grid of samples. Writes ``OUT/fidelity[_TAG].json``, ``.md`` and ``.png``
(all cells' sample grids). ``--quick`` shrinks every budget (a few steps: for the tests, not figures).
``--num-images``, ``--epochs``, ``--batch-size``, ``--iterations`` give a cell what a user would give
compress (``-n``, ``--epochs``, ``--batch-size``, ``--set iterations=I``; the compute budget keeps them): a
screen of one setting, not the defaults.
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

from bench.common import add_setting_options, machine, markdown_table, setup  # noqa: E402
from bench.suite import SHIPPED, SUITE, resolve_teacher, suite_names  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# --quick: a few steps of everything (checks the bench end to end; the accuracies mean nothing).
QUICK_SYNTH = {
    "deepinversion": {"iterations": 4, "batch_size": 16},
    "fast": {"iterations": 2, "batch_size": 16},
}
QUICK_KD = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 16}
QUICK_IMAGES = 32


def default_methods() -> list[str]:
    """``auto`` (compress's default path) and every registered backend but ZeroQ."""
    from generators import list_methods

    return ["auto", *(m for m in list_methods() if m != "zeroq")]


def _is_bn_teacher(name: str) -> bool:
    spec = next((s for s in SUITE if s.name == name), None)
    if spec is not None:
        return spec.batchnorm
    if name in SHIPPED:
        return SHIPPED[name][1]
    from datafree.cards import load_model
    from datafree.hooks import batchnorm_layers

    return bool(batchnorm_layers(load_model(name).model))


def _cell_samples(rep: dict[str, Any], out: Path, method: str, n: int = 16) -> Any:
    """Up to ``n`` sample images (pixels in [0, 1]) of the cell: its dataset or its trained generator."""
    import torch

    from datafree.cards import load_model

    if "data" in rep:
        from datafree.dataset import SyntheticDataset

        shard = next(SyntheticDataset.open(rep["data"]["dir"]).iter_shards())
        return shard["images"][:n]
    from datafree.online_train import load_online_synthesizer

    lm = load_model(rep["teacher"]["card"])
    synth = load_online_synthesizer(lm, out, method)
    with torch.no_grad():
        batch = synth.sample(n, torch.Generator().manual_seed(0))
    return synth.normalizer.inverse(batch.images).clamp(0, 1)


def label(teacher: str) -> str:
    """A teacher's name in the table: its suite/shipped name, or its card's directory or file stem."""
    p = Path(teacher)
    if teacher in suite_names() or not p.suffix:
        return p.name
    return p.parent.name if p.name == "model.json" else p.stem


def run_cell(
    teacher: str,
    method: str,
    quick: bool,
    seed: int,
    device: Any,
    keep: Path | None,
    baseline: bool = True,
    given: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One cell: compress with every default (or the --quick budget); returns its row and samples.

    ``given``: the user's ``num_images``, KD ``epochs`` and ``batch_size``, synthesis ``iterations``
    (compress's ``-n``, ``--epochs``, ``--batch-size``, ``--set iterations=I``; the compute budget keeps
    them), for a screen of one setting.
    """
    from datafree.distill import KDConfig
    from datafree.pipeline import DEFAULT_NUM_IMAGES, compress
    from datafree.plan import AUTO

    name = label(teacher)
    out = Path(tempfile.mkdtemp(prefix=f"fidelity-{name}-{method}-"))
    kw: dict[str, Any] = {}
    if quick:
        from generators import method_class

        ran = method
        if method == AUTO:  # the path the full run takes (the rule depends on the number of images)
            from datafree.cards import load_model
            from datafree.rules import default_method

            lm = load_model(resolve_teacher(teacher), device)
            choice = default_method(lm.model, lm.card, DEFAULT_NUM_IMAGES)
            ran = "pool" if choice["pool"] else choice["method"]
        if ran != "pool" and method_class(ran).online:
            from datafree.plan import kd_settings

            kw["kd"] = kd_settings(ran, {"seed": seed, **QUICK_KD})
        else:
            kw["kd"] = KDConfig(seed=seed, **QUICK_KD)
            kw["synth_options"] = QUICK_SYNTH.get("fast" if ran == "pool" else ran, {})
        if ran != "pool":  # the pool's size is its KD budget's (rounds x its batch), not num_images
            kw["num_images"] = QUICK_IMAGES
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if given and not quick:  # what a user gives on compress's command line (the budget keeps it)
        if "num_images" in given:
            kw["num_images"] = given["num_images"]
        kd_given = {k: given[k] for k in ("epochs", "batch_size") if k in given}
        if kd_given:
            kw["kd"] = {"seed": seed, **kd_given}
        if "iterations" in given:  # the backend's steps per batch (a user's --set: the budget keeps it)
            kw["synth_options"] = {"iterations": given["iterations"]}
    import contextlib
    from unittest import mock

    # --quick skips compress's latency profile (a fixed cost of seconds that would dominate a few steps).
    no_profile = (
        mock.patch("datafree.pipeline._profile", lambda *a, **k: {}) if quick else contextlib.nullcontext()
    )
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with no_profile:
            rep = compress(
                resolve_teacher(teacher),
                out / "run",
                method=method,
                seed=seed,
                device=device,
                eval_data="digits:test",
                baseline=baseline,
                **kw,  # the suite is trained on digits: score on its real test split
            )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        samples = _cell_samples(rep, out / "run", rep["method"])
    finally:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            dest = keep / f"{name}__{method}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(out / "run"), dest) if (out / "run").exists() else None
        shutil.rmtree(out, ignore_errors=True)
    t, s, nb = rep["teacher"], rep["student"], rep.get("noise_baseline", {})
    # a written dataset's (or pool's) images; an online backend's: its trained generator's (student report)
    quality = rep.get("data", {}).get("teacher_quality") or s.get("teacher_quality") or {}
    choice = rep.get("method_choice")
    row = {
        "teacher": name,
        "method": method,
        "ran": rep["method"] + (" (pool)" if choice and choice.get("pool") else ""),
        "method_rule": choice.get("rule") if choice else None,
        "student": s["arch"],
        "params_teacher": t["params"],
        "params_student": s["params"],
        "teacher_acc": round(t["accuracy"], 4),
        "student_acc": round(s["accuracy"], 4),
        "ratio": round(s["ratio_to_teacher"], 4),
        "noise_acc": round(nb["accuracy"], 4) if nb else None,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),  # process CPU time (every thread of the process)
        "stages_s": rep["stages_seconds"],
        "num_images": rep.get("data", {}).get("num_images"),
        "steps_per_batch": rep.get("data", {}).get("steps_per_batch"),
        "agreement": quality.get("agreement"),
        "confidence": quality.get("confidence"),
        "min_class_fraction": quality.get("min_class_fraction"),
        "rare_classes": quality.get("rare_classes"),
        "kd": {k: rep["kd"][k] for k in ("epochs", "steps_per_epoch", "batch_size")},
        # the compute budget of an offline backend on a CPU (datafree.plan.budget_settings): its estimate
        # of the run (CPU s of one core, noise baseline included) and what it scaled down
        "budget_rule": rep.get("compute_budget", {}).get("rule"),
        "budget_estimate_s": rep.get("compute_budget", {}).get("capped_estimate"),
        "default_num_images": DEFAULT_NUM_IMAGES,
    }
    return {"row": row, "samples": samples}


def grids_png(cells: list[dict[str, Any]], path: Path) -> None:
    """One PNG: a 4x4 grid of samples per cell, teachers as rows, methods as columns, labelled."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from datafree.utils import atomic_write

    teachers = list(dict.fromkeys(c["row"]["teacher"] for c in cells))
    methods = list(dict.fromkeys(c["row"]["method"] for c in cells))
    tile, label_h, label_w = 136, 14, 110
    canvas = Image.new(
        "RGB", (label_w + tile * len(methods), label_h + (tile + label_h) * len(teachers)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for j, m in enumerate(methods):
        draw.text((label_w + j * tile + 4, 1), m, fill="black")
    for i, t in enumerate(teachers):
        y0 = label_h + i * (tile + label_h)
        draw.text((2, y0 + tile // 2), t, fill="black")
        for j, m in enumerate(methods):
            cell = next((c for c in cells if c["row"]["teacher"] == t and c["row"]["method"] == m), None)
            if cell is None:
                continue
            if cell.get("samples") is not None:
                x = cell["samples"].float().clamp(0, 1)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                x = F.interpolate(x, size=(32, 32), mode="nearest")
                g = make_grid(x, nrow=4, padding=1, pad_value=1.0)
                g = F.interpolate(g[None], size=(tile - 4, tile - 4), mode="nearest")[0]
                img = Image.fromarray((g.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
                cell["tile"] = img
            elif cell.get("tile") is not None:  # a merged cell of an earlier run: its saved grid
                img = cell["tile"].convert("RGB").resize((tile - 4, tile - 4))
            else:
                continue
            canvas.paste(img, (label_w + j * tile + 2, y0 + 2))
            r = cell["row"]
            draw.text((label_w + j * tile + 4, y0 + tile - 2), f"{100 * r['ratio']:.1f}%", fill="black")
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="png")
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}" if isinstance(v, float) else str(v)


def _coverage(r: dict[str, Any]) -> str:
    """The rarest class's share of the images (1 = balanced) and the classes almost never made."""
    frac, rare = r.get("min_class_fraction"), r.get("rare_classes")
    if frac is None:
        return "-"
    return f"{frac:.2f}" + (f", rare: {' '.join(map(str, rare))}" if rare else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The matrix as a markdown table."""
    header = [
        "teacher",
        "method",
        "student",
        "teacher acc",
        "student acc",
        "% of teacher",
        "noise baseline",
        "wall s",
        "CPU s",
        "agreement",
        "confidence",
        "classes (rarest share)",
        "steps/batch",
    ]
    body = []
    for r in rows:
        steps = r.get("steps_per_batch")
        body.append(
            [
                r["teacher"],
                r["method"] + (f" -> {r['ran']}" if r.get("ran") and r["ran"] != r["method"] else ""),
                r["student"],
                _fmt(r["teacher_acc"]),
                _fmt(r["student_acc"]),
                f"**{_fmt(r['ratio'], True)}**",
                _fmt(r["noise_acc"]),
                r["wall_s"],
                r.get("cpu_s", "-"),
                _fmt(r["agreement"], True),
                _fmt(r["confidence"]),
                _coverage(r),
                "-" if not steps else f"{min(steps)}-{max(steps)}",
            ]
        )
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; exit status 2 on an unknown method or an uncached suite teacher."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default=",".join(suite_names()))
    ap.add_argument("--methods", default=None, help="comma-separated (default: every backend but zeroq)")
    ap.add_argument(
        "--quick", action="store_true", help="a few steps per stage (end-to-end check, not figures)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--suite", default=None, help="suite cache dir (default $DATAFREE_SUITE or ~/.cache/...)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--merge", action="store_true", help="keep the rows of an earlier run for other cells")
    ap.add_argument("--keep", type=Path, default=None, help="keep each cell's run directory under this dir")
    ap.add_argument(
        "--combine",
        default=None,
        help="comma-separated result .json files of earlier runs (their *_cells grids beside them): merge "
        "their rows into OUT/fidelity[_TAG] (with --merge, over its rows) and redraw; runs nothing",
    )
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the noise baseline (say so with the figures)"
    )
    add_setting_options(ap, iterations=True)
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    from generators import list_methods, method_class

    methods = args.methods.split(",") if args.methods else default_methods()
    unknown = [m for m in methods if m not in ["auto", *list_methods()]]
    if unknown:
        print(
            f"error: unknown method(s) {', '.join(unknown)}; choose from {', '.join(list_methods())}",
            file=sys.stderr,
        )
        return 2
    teachers = [] if args.combine else args.teachers.split(",")
    device = setup(args.device, args.threads)
    stem = "fidelity" + (f"_{args.tag}" if args.tag else "")
    json_path = args.out / f"{stem}.json"
    old = json.loads(json_path.read_text())["rows"] if args.merge and json_path.is_file() else []
    cells, rows = [], []
    for f in (args.combine or "").split(",") if args.combine else []:  # earlier runs' rows and grids
        src = Path(f)
        from PIL import Image

        for r in json.loads(src.read_text())["rows"]:
            tile = src.parent / f"{src.stem}_cells" / f"{r['teacher']}__{r['method']}.png"
            img = Image.open(tile).convert("RGB") if tile.is_file() else None
            key = (r["teacher"], r["method"])
            rows = [x for x in rows if (x["teacher"], x["method"]) != key] + [r]
            cells = [c for c in cells if (c["row"]["teacher"], c["row"]["method"]) != key]
            cells.append({"row": r, "tile": img, "save_tile": True})
    for t in teachers:
        try:
            resolve_teacher(t)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        bn = _is_bn_teacher(t)
        for m in methods:
            if m != "auto" and method_class(m).requires_batchnorm and not bn:
                continue
            given = {"num_images": args.num_images, "epochs": args.epochs, "batch_size": args.batch_size,
                     "iterations": args.iterations}  # fmt: skip
            cell = run_cell(t, m, args.quick, args.seed, device, args.keep, baseline=not args.no_baseline,
                            given=given)  # fmt: skip
            cells.append(cell)
            rows.append(cell["row"])
            r = cell["row"]
            print(
                f"{t} x {m}: {100 * r['ratio']:.1f}% of the teacher "
                f"({r['student_acc']:.4f} / {r['teacher_acc']:.4f}), "
                f"noise {r['noise_acc']}, {r['wall_s']} s ({r['cpu_s']} s CPU), agreement {r['agreement']}",
                flush=True,
            )
    done = {(r["teacher"], r["method"]) for r in rows}
    kept = [r for r in old if (r["teacher"], r["method"]) not in done]
    rows = kept + rows
    tiles = args.out / f"{stem}_cells"  # each cell's sample grid, so that --merge redraws every cell
    from PIL import Image

    for r in kept:
        f = tiles / f"{r['teacher']}__{r['method']}.png"
        cells.insert(0, {"row": r, "tile": Image.open(f) if f.is_file() else None})
    from datafree.utils import atomic_write, atomic_write_json

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        json_path, {"quick": args.quick, "seed": args.seed, "machine": machine(device), "rows": rows}
    )
    with atomic_write(args.out / f"{stem}.md", "w") as f:
        f.write(markdown(rows) + "\n")
    if cells:
        grids_png(cells, args.out / f"{stem}.png")
        tiles.mkdir(parents=True, exist_ok=True)
        for c in cells:
            if (c.get("samples") is not None or c.get("save_tile")) and c.get("tile") is not None:
                import io

                buf = io.BytesIO()
                c["tile"].save(buf, format="png")
                with atomic_write(tiles / f"{c['row']['teacher']}__{c['row']['method']}.png") as f:
                    f.write(buf.getvalue())
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
