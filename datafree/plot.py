"""``datafree plot RUN_DIR``: a run's loss curves and accuracies in one PNG (drawn with PIL).

Reads ``RUN_DIR/metrics.jsonl`` (:mod:`datafree.metrics`) and, when present, ``RUN_DIR/report.json``.
One panel per stage (synthesis, distill, noise baseline, ...) shows its main loss (``total`` for
synthesis backends, ``loss`` for KD; log scale when every value is positive) against the step
(the batches of a synthesis stage one after another); a last panel shows the test accuracy of
every model in the report (teacher, student, noise baseline, pruned, quantized) and the KD epochs'
accuracies when the run evaluated them.

PIL draws it (already a dependency through torchvision, and what ``bench/time_to_accuracy.py``
uses), so no plotting library is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .metrics import METRICS_FILE

__all__ = ["load_metrics", "plot_run"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (torn or foreign lines are skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise UserInputError(
            f"{run_dir} has no {METRICS_FILE}; run a datafree command with --out {run_dir} first"
        )
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Stage -> [(x, main loss)], x continuing across the batches of a stage."""
    curves: dict[str, list[tuple[float, float]]] = {}
    offset: dict[str, float] = {}
    last: dict[str, float] = {}
    for r in records:
        if "step" not in r or "event" in r:
            continue
        stage = str(r.get("stage", "run"))
        value = r.get("total", r.get("loss"))
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        step = float(r["step"])
        if step <= last.get(stage, 0.0):  # a new synthesis batch (or a restarted run): continue the axis
            offset[stage] = offset.get(stage, 0.0) + last[stage]
        last[stage] = step
        curves.setdefault(stage, []).append((offset.get(stage, 0.0) + step, float(value)))
    return curves


def _accuracies(
    run_dir: Path, records: list[dict[str, Any]]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    final: dict[str, float] = {}
    report_path = run_dir / "report.json"
    if report_path.is_file():
        try:
            rep = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            rep = {}
        for key in ("teacher", "student", "noise_baseline"):
            if isinstance(rep.get(key), dict) and isinstance(rep[key].get("accuracy"), (int, float)):
                final[key] = float(rep[key]["accuracy"])
        stages = rep.get("prune", {}).get("stages", {}) if isinstance(rep.get("prune"), dict) else {}
        for key in ("pruned", "recovered"):
            if isinstance(stages.get(key), dict) and isinstance(stages[key].get("accuracy"), (int, float)):
                final[key] = float(stages[key]["accuracy"])
        q = rep.get("quantize", {})
        if isinstance(q, dict) and isinstance(q.get("quantized"), dict):
            final["quantized"] = float(q["quantized"].get("accuracy", float("nan")))
    epochs: dict[str, list[float]] = {}
    for r in records:
        if r.get("event") == "epoch" and isinstance(r.get("accuracy"), (int, float)):
            epochs.setdefault(str(r.get("stage")), []).append(float(r["accuracy"]))
    return final, epochs


def _panel(
    d: Any,
    box: tuple[int, int, int, int],
    title: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    log: bool,
    ylabel: str,
) -> None:
    x0, y0, x1, y1 = box
    d.rectangle(box, outline="black")
    d.text((x0, y0 - 16), title, fill="black")
    pts_all = [p for _, pts in series for p in pts]
    if not pts_all:
        d.text((x0 + 10, y0 + 10), "no data", fill="black")
        return
    xs = [p[0] for p in pts_all]
    ys = [math.log10(p[1]) if log else p[1] for p in pts_all]
    xmin, xmax = min(xs), max(xs)
    ymin, ymax = min(ys), max(ys)
    if ymax - ymin < 1e-12:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    xmax = xmax if xmax > xmin else xmin + 1

    def xy(x: float, y: float) -> tuple[float, float]:
        yy = math.log10(y) if log else y
        return x0 + (x1 - x0) * (x - xmin) / (xmax - xmin), y1 - (y1 - y0) * (yy - ymin) / (ymax - ymin)

    for i in range(5):
        yy = ymin + (ymax - ymin) * i / 4
        py = y1 - (y1 - y0) * i / 4
        d.line([x0 - 4, py, x0, py], fill="black")
        d.text((x0 - 58, py - 6), f"{10**yy:.3g}" if log else f"{yy:.3g}", fill="black")
    for i in range(5):
        xx = xmin + (xmax - xmin) * i / 4
        px = x0 + (x1 - x0) * i / 4
        d.line([px, y1, px, y1 + 4], fill="black")
        d.text((px - 10, y1 + 6), f"{xx:.0f}", fill="black")
    d.text((x1 - 40, y1 + 20), "step", fill="black")
    d.text((x0 + 4, y0 + 4), ylabel + (" (log)" if log else ""), fill="#555555")
    for k, (name, pts) in enumerate(series):
        color = _COLORS[k % len(_COLORS)]
        line = [xy(x, y) for x, y in pts]
        if len(line) > 1:
            d.line(line, fill=color, width=2)
        for px, py in line if len(line) < 3 else []:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        if len(series) > 1:
            d.text((x1 - 150, y0 + 6 + 14 * k), name, fill=color)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``run_dir``'s loss curves and accuracies into a PNG (default ``run_dir/metrics.png``).

    Raises:
        UserInputError: no ``metrics.jsonl`` in ``run_dir`` or nothing to draw.
    """
    from PIL import Image, ImageDraw

    from .utils import atomic_write

    run = Path(run_dir)
    records = load_metrics(run)
    curves = _curves(records)
    final, epochs = _accuracies(run, records)
    if not curves and not final:
        raise UserInputError(f"{run / METRICS_FILE} holds no logged steps to plot")
    panels = len(curves) + (1 if final or epochs else 0)
    cols = 2 if panels > 1 else 1
    rows = (panels + cols - 1) // cols
    pw, ph = 520, 320
    img = Image.new("RGB", (cols * pw, rows * ph + 30), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), f"datafree run {run}", fill="black")
    boxes = [
        (c * pw + 70, 30 + r * ph + 30, (c + 1) * pw - 20, 30 + (r + 1) * ph - 40)
        for r in range(rows)
        for c in range(cols)
    ]
    for box, (stage, pts) in zip(boxes, curves.items()):  # noqa: B905 - fewer curves than boxes
        positive = all(y > 0 for _, y in pts)
        _panel(
            d,
            box,
            f"{stage}: main loss",
            [(stage, pts)],
            positive,
            "total" if stage == "synthesize" else "loss",
        )
    if final or epochs:
        box = boxes[len(curves)]
        if epochs:
            series = [
                (f"{s} (epoch)", [(float(i + 1), a) for i, a in enumerate(v)]) for s, v in epochs.items()
            ]
            _panel(d, box, "test accuracy per KD epoch", series, False, "accuracy")
            x0, y0 = box[0], box[1] + 40
        else:
            x0, y0 = box[0], box[1]
            d.rectangle(box, outline="black")
            d.text((x0, y0 - 16), "test accuracy (report.json)", fill="black")
        bw = (box[2] - box[0]) // max(1, len(final)) if not epochs else 0
        for k, (name, acc) in enumerate(final.items()):
            color = _COLORS[k % len(_COLORS)]
            if epochs:  # the final accuracies as text next to the epoch curves
                d.text((x0 + 8, y0 + 14 * k), f"{name}: {acc:.4f}", fill=color)
                continue
            top = box[3] - (box[3] - box[1] - 20) * max(0.0, min(1.0, acc))
            d.rectangle([box[0] + k * bw + 8, top, box[0] + (k + 1) * bw - 8, box[3]], fill=color)
            d.text((box[0] + k * bw + 8, top - 14), f"{acc:.3f}", fill="black")
            d.text((box[0] + k * bw + 8, box[3] + 6), name[:14], fill="black")
    dest = Path(out) if out is not None else run / "metrics.png"
    import io

    buf = io.BytesIO()
    img.save(buf, format="png")
    with atomic_write(dest) as f:
        f.write(buf.getvalue())
    return dest
