"""Fit the compute budget's cost measure: MACs plus a price per activation element, against CPU time.

For each model (the suite's teachers, the shipped ones and the default students at their teachers'
input shapes), times a training step (train mode, forward + backward with parameter gradients, batch
``--batch``) and an inference forward (eval mode, no gradients) in process CPU seconds per image,
one thread; counts its features with :func:`datafree.rules.cost_features` (MACs, activation
elements, grouped-conv MACs); and fits ``CPU s per image = (MACs + p_a x activations + p_g x grouped
MACs) / R`` by least squares on the log of the ratio (the prices on a grid, ``R`` in closed form), for
the training step and for the forward, against MACs alone. The fits are what ``datafree.rules``'
``TRAIN_PRICES`` / ``TRAIN_MACS_PER_CPU_S`` and ``FORWARD_PRICES`` / ``FORWARD_MACS_PER_CPU_S`` hold.
With ``--steps``, the synthesis step's two terms (``SYNTH_PASS_PRICE``, ``GEN_S_PER_ELEMENT``; and each
backend's own, ``SYNTH_PRICES``) are fitted on bench/cell_cost.py's measured steps, and its KD steps are
checked. ``--rows`` refits an
earlier run's timings without timing again.

Usage::

    PYTHONPATH=. python bench/cost_measure.py --suite /work/cache/suite \
        --out bench/results/s7_cap/cost_measure.json

Session 43 (the ImageNet-layout students added; the small-map MACs' price fitted with session 7's two held,
``train_small_map_price_bn_models``, which ``datafree.rules.TRAIN_PRICES`` holds)::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python bench/cost_measure.py --suite /work/cache/suite --threads 1 \
        --out bench/results/s43/cost_measure_timings.json        # timing, idle machine (52 s)
    PYTHONPATH=. python bench/cost_measure.py --suite /work/cache/suite \
        --rows bench/results/s43/cost_measure_timings.json --out bench/results/s43/cost_measure.json
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402

from bench.common import machine, markdown_table, setup  # noqa: E402

BN_TEACHERS = ["resnet8_digits", "mobilenetv2_32", "resnet18_32", "vgg8_bn_32", "wrn40_2_32"]
OTHER_TEACHERS = ["lenet5_digits", "plain_32"]
# The default students (datafree.plan.make_student) of the BN teachers, at their teachers' shapes:
# session 7's five (CIFAR layout), and the ImageNet-layout students that ResNet-18 and MobileNetV2 got in
# session 24 (session 42 found them under-priced ~1.9x, bench/student_price_check.py).
STUDENTS = [("resnet8_half", (1, 16, 16)), ("lenet5_bn", (3, 32, 32)), ("resnet8", (3, 32, 32)),
            ("wrn16_1_post", (3, 32, 32)), ("wrn16_2", (3, 32, 32)),
            ("resnet18_imagenet_half", (3, 32, 32)), ("resnet10_imagenet_quarter", (3, 32, 32))]  # fmt: skip


def _cpu_per_call(fn: Any, min_cpu: float = 1.5, min_reps: int = 2) -> float:
    fn()  # untimed
    reps, c0 = 0, time.process_time()
    while reps < min_reps or time.process_time() - c0 < min_cpu:
        fn()
        reps += 1
    return (time.process_time() - c0) / reps


def measure(name: str, model: torch.nn.Module, shape: tuple[int, ...], batch: int) -> dict[str, Any]:
    """CPU seconds per image of a training step and of a forward, and the model's cost features."""
    from datafree.rules import cost_features

    feats = cost_features(model, shape)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)

    def train_step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model(x).float().logsumexp(1).mean().backward()

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats move in train mode
    train_s = _cpu_per_call(train_step) / batch
    fwd_s = _cpu_per_call(forward) / batch
    model.load_state_dict(state)
    return {"model": name, "shape": list(shape), **feats, "train_cpu_s_per_image": train_s,
            "forward_cpu_s_per_image": fwd_s, "train_over_forward": round(train_s / fwd_s, 2)}  # fmt: skip


FEATURES = ("activations", "grouped_macs")  # priced on top of the MACs (datafree.rules.priced_macs)
# Grid of each price: 1 to 10,000 MAC-equivalents per element.
GRIDS = {f: [0.0] + [10 ** (k / 20) for k in range(0, 81)] for f in FEATURES}
# The MACs of convolutions on maps of <= 4 pixels (datafree.rules.SMALL_MAP_PIXELS) cost a fraction more
# than a dense MAC, not hundreds of times: their grid starts at 0.001.
GRIDS["small_map_macs"] = [0.0] + [10 ** (k / 20) for k in range(-60, 41)]


def priced(r: dict[str, Any], prices: dict[str, float]) -> float:
    """``macs + sum(price x feature)`` of a row (the features the prices name)."""
    return r["macs"] + sum(p * r[f] for f, p in prices.items())


def fit(
    rows: list[dict[str, Any]],
    key: str,
    prices: dict[str, float] | None = None,
    forwards: float = 1.0,
    features: tuple[str, ...] = FEATURES,
    held: dict[str, float] | None = None,
) -> dict[str, Any]:
    """``key`` (CPU s per image) ~ ``forwards x priced / R``: the best prices (a grid; or the given), ``R``.

    Least squares on the log of the ratio; ``R`` in closed form (the geometric mean of the ratios).
    ``features``: the features priced (each on its grid, ``GRIDS``); ``held``: prices kept as given.
    """
    grids = itertools.product(*(GRIDS[f] for f in features))
    candidates = (
        [prices]
        if prices is not None
        else [{**(held or {}), **dict(zip(features, c, strict=True))} for c in grids]
    )
    best = None
    for pr in candidates:
        logs = [math.log(forwards * priced(r, pr) / r[key]) for r in rows]
        log_r = sum(logs) / len(logs)
        sse = sum((v - log_r) ** 2 for v in logs)
        if best is None or sse < best[0]:
            best = (sse, pr, math.exp(log_r))
    assert best is not None
    _, pr, rate = best
    errs = {r["model"]: round(forwards * priced(r, pr) / rate / r[key] - 1, 3) for r in rows}
    return {"prices": {k: round(v, 1) for k, v in pr.items()}, "priced_macs_per_cpu_s": float(f"{rate:.3g}"),
            "relative_errors": errs, "max_abs_error": max(abs(v) for v in errs.values())}  # fmt: skip


PASSES = {"nayer": 1, "cmi": 2, "fast": 1, "deepinversion": 1}  # teacher passes per synthesis step


def fit_steps(
    files: str,
    rows: list[dict[str, Any]],
    train: dict[str, Any],
    forward: dict[str, Any],
    methods: set[str] | None = None,
    basis: str = "forward",
) -> dict[str, Any]:
    """Fit ``step CPU s / batch = passes x k x T + g x C*H*W`` on bench/cell_cost.py rows.

    ``T`` is the teacher's forward per image by the ``forward`` fit (``basis="train"``: its training
    step by the ``train`` fit, session 7's basis), in seconds: a synthesis pass is a forward and a
    backward to the pixels, without the weight gradients whose depthwise part the training price
    carries. Each equation is divided by its left side (relative least squares); a 2x2 normal system,
    solved in closed form. ``methods``: only those backends' rows (one backend: its own prices,
    ``datafree.rules.SYNTH_PRICES``). Also checks each cell's KD step: ``kd_batch x (T_forward +
    S_train)`` by the two fits.
    """
    import json

    def secs(r: dict[str, Any], f: dict[str, Any]) -> float:
        return priced(r, f["prices"]) / f["priced_macs_per_cpu_s"]

    t_train = {r["model"]: secs(r, train) for r in rows}
    t_fwd = {r["model"]: secs(r, forward) for r in rows}
    elements = {r["model"]: math.prod(r["shape"]) for r in rows}
    eqs = []
    for f in files.split(","):
        for c in json.loads(Path(f).read_text())["rows"]:
            if c["teacher"] in t_train and c["method"] in PASSES and (not methods or c["method"] in methods):
                y = c["step_cpu_s"] / c["batch_size"]
                t_pass = (t_fwd if basis == "forward" else t_train)[c["teacher"]]
                eqs.append((c, PASSES[c["method"]] * t_pass / y, elements[c["teacher"]] / y))
    a11 = sum(x1 * x1 for _, x1, _ in eqs)
    a12 = sum(x1 * x2 for _, x1, x2 in eqs)
    a22 = sum(x2 * x2 for _, _, x2 in eqs)
    b1 = sum(x1 for _, x1, _ in eqs)
    b2 = sum(x2 for _, _, x2 in eqs)
    det = a11 * a22 - a12 * a12
    k, g = (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det
    errs = {f"{c['method']} x {c['teacher']}": round(k * x1 + g * x2 - 1, 3) for c, x1, x2 in eqs}
    kd_errs = {
        f"{c['method']} x {c['teacher']}": round(
            c.get("kd_batch_size", 128) * (t_fwd[c["teacher"]] + t_train[c["student"]]) / c["kd_step_cpu_s"]
            - 1,
            3,
        )
        for c, _, _ in eqs
        if c["student"] in t_train
    }
    worst = max(abs(v) for v in errs.values())
    return {"synth_pass_price": round(k, 3), "gen_s_per_element": float(f"{g:.3g}"), "relative_errors": errs,
            "max_abs_error": worst, "kd_step_relative_errors": kd_errs}  # fmt: skip


def main(argv: list[str] | None = None) -> int:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--rows", default=None, help="an earlier --out JSON: refit its timings, features recounted"
    )
    ap.add_argument(
        "--steps", default=None, help="bench/cell_cost.py JSON files: fit the synthesis step's terms"
    )
    args = ap.parse_args(argv)
    if args.suite:
        import os

        os.environ["DATAFREE_SUITE"] = args.suite
    device = setup("cpu", args.threads)
    from bench.suite import resolve_teacher
    from datafree.cards import load_model
    from datafree.models import create_model

    rows = []
    if args.rows:  # no timing: the earlier run's CPU times, the features counted again
        import json

        from datafree.rules import cost_features

        for r in json.loads(Path(args.rows).read_text())["rows"]:
            if r["kind"] == "teacher":
                try:
                    m = load_model(resolve_teacher(r["model"]), device).model
                except FileNotFoundError:  # an uncached suite teacher: the features the file counted
                    if "grouped_macs" not in r:
                        raise
                    rows.append(r)
                    continue
            else:
                torch.manual_seed(0)
                m = create_model(r["model"], 10, r["shape"][0])
            rows.append({**r, **cost_features(m, tuple(r["shape"]))})
    for t in [] if args.rows else BN_TEACHERS + OTHER_TEACHERS:
        lm = load_model(resolve_teacher(t), device)
        rows.append({**measure(t, lm.model, tuple(lm.card.input_shape), args.batch), "kind": "teacher",
                     "bn": t in BN_TEACHERS})  # fmt: skip
        print(rows[-1], flush=True)
    for arch, shape in [] if args.rows else STUDENTS:
        torch.manual_seed(0)
        m = create_model(arch, 10, shape[0])
        rows.append({**measure(arch, m, shape, args.batch), "kind": "student", "bn": True})
        print(rows[-1], flush=True)
    bn = [r for r in rows if r["bn"]]
    teachers = [r for r in bn if r["kind"] == "teacher"]
    tr, fw, none = "train_cpu_s_per_image", "forward_cpu_s_per_image", dict.fromkeys(FEATURES, 0.0)
    fits = {  # R: MAC-equivalents per CPU second of the step timed (a training step, or a forward)
        "train_priced_bn_models": fit(bn, tr),
        "train_macs_only_bn_models": fit(bn, tr, none),
        "forward_priced_bn_models": fit(bn, fw),
        "forward_macs_only_bn_models": fit(bn, fw, none),
        "train_priced_bn_teachers": fit(teachers, tr),
        "train_macs_only_bn_teachers": fit(teachers, tr, none),
    }
    fits["train_all_models_at_those_prices"] = fit(rows, tr, fits["train_priced_bn_models"]["prices"])
    # Session 43: the small-map MACs' price on top of session 7's two (held), the rate refitted;
    # datafree.rules adds the price and keeps session 7's rate (the unit of the budget, synthesis prices).
    from datafree.rules import TRAIN_PRICES

    s7_prices = {f: TRAIN_PRICES[f] for f in FEATURES}
    fits["train_small_map_price_bn_models"] = fit(bn, tr, features=("small_map_macs",), held=s7_prices)
    fits["train_session7_prices_bn_models"] = fit(bn, tr, s7_prices)
    fits["forward_all_models_at_those_prices"] = fit(rows, fw, fits["forward_priced_bn_models"]["prices"])
    if args.steps:
        fits["synthesis_step"] = fit_steps(args.steps, rows, fits["train_priced_bn_models"],
                                           fits["forward_priced_bn_models"])  # fmt: skip
        import json

        files = args.steps.split(",")
        measured = {c["method"] for f in files for c in json.loads(Path(f).read_text())["rows"]}
        train, forward = fits["train_priced_bn_models"], fits["forward_priced_bn_models"]
        backends = sorted(measured & set(PASSES))
        fits["synthesis_step_by_method"] = {  # each backend's own prices (datafree.rules.SYNTH_PRICES)
            m: fit_steps(args.steps, rows, train, forward, {m}) for m in backends
        }
        fits["synthesis_step_train_basis_by_method"] = {  # session 7's basis, for the comparison
            m: fit_steps(args.steps, rows, train, forward, {m}, "train") for m in backends
        }
    for k, v in fits.items():
        print(k, v, flush=True)
    header = ["model", "MACs", "small-map MACs", "activations", "layers", "train ms/img", "fwd ms/img",
              "train/fwd", "train error, MACs only", "train error, priced", "train error, session 7's prices",
              "train error, + small-map price", "forward error, priced"]  # fmt: skip
    body = [[r["model"], f"{r['macs'] / 1e6:.1f}M", f"{r['small_map_macs'] / 1e6:.1f}M",
             f"{r['activations'] / 1e6:.2f}M", r["layers"],
             f"{1e3 * r['train_cpu_s_per_image']:.3f}", f"{1e3 * r['forward_cpu_s_per_image']:.3f}",
             r["train_over_forward"],
             *(fits[k]["relative_errors"].get(r["model"], "-") for k in (
                 "train_macs_only_bn_models", "train_all_models_at_those_prices",
                 "train_session7_prices_bn_models", "train_small_map_price_bn_models",
                 "forward_all_models_at_those_prices"))]
            for r in rows]  # fmt: skip
    table = markdown_table(header, body)
    print(table)
    if args.out:
        from datafree.utils import atomic_write, atomic_write_json

        atomic_write_json(
            args.out, {"machine": machine(device), "batch": args.batch, "rows": rows, "fits": fits}
        )
        with atomic_write(args.out.with_suffix(".md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
