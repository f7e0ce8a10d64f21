"""Post-training quantization of the shipped BN teacher with ZeroQ data vs noise vs real digits.

For resnet8_digits: test accuracy at FP32, W8A8, W6A6, W4A8, W4A4, each calibrated on 64 images
of ZeroQ distilled data, of Gaussian noise, and of real training digits (the reference upper
bound), mean and spread over ``--seeds`` calibration batches; with the default clipping (MSE
weights and activations) and with ZeroQ's own (min/max). Then W4A4 after KD fine-tuning on the
same 64 synthetic images (and, as a control, on the noise). lenet5_digits has no BatchNorm, so
ZeroQ (which inverts BN statistics) does not apply to it.

Run: ``OMP_WAIT_POLICY=PASSIVE python bench/quantization.py`` (about 15 min on 1 busy core).
Writes bench/results/quantization.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from datafree.cards import load_model  # noqa: E402
from datafree.quant import QuantConfig, calibrate, finetune, finetune_kd, quantize_network  # noqa: E402
from datafree.quant.api import _test_accuracy, calibration_images  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BITS = [(8, 8), (6, 6), (4, 8), (4, 4)]
SOURCES = ["zeroq", "noise", "digits"]
CLIPPING = {"mse": ("mse", "mse"), "minmax (ZeroQ)": ("minmax", "minmax")}


def _fmt(values: list[float]) -> str:
    m = 100 * statistics.mean(values)
    if len(values) < 2:
        return f"{m:.2f}"
    return f"{m:.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model("resnet8_digits")
    seeds = list(range(args.seeds))
    fp32 = _test_accuracy(lm.model, lm.card)

    # Calibration data: 64 images per seed; ZeroQ synthesis timed (wall and process CPU).
    data: dict[str, dict[int, torch.Tensor]] = {s: {} for s in SOURCES}
    synth_times = []
    for seed in seeds:
        for src in SOURCES:
            t0, c0 = time.perf_counter(), time.process_time()
            data[src][seed] = calibration_images(lm, src, 64, seed)
            if src == "zeroq":
                synth_times.append(
                    {
                        "wall_s": round(time.perf_counter() - t0, 1),
                        "cpu_s": round(time.process_time() - c0, 1),
                    }
                )

    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for clip, (wc, ac) in CLIPPING.items():
        results[clip] = {}
        for wb, ab in BITS:
            key = f"W{wb}A{ab}"
            results[clip][key] = {}
            for src in SOURCES:
                accs = []
                for seed in seeds:
                    cfg = QuantConfig(wb, ab, weight_calib=wc, act_calib=ac)
                    q = calibrate(quantize_network(lm.model, cfg), data[src][seed], cfg, seed=seed)
                    accs.append(_test_accuracy(q, lm.card))
                results[clip][key][src] = accs

    finetuned: dict[str, dict[str, list[float]]] = {}
    ft_cfg = finetune_kd(epochs=args.finetune_epochs)
    for src in ("zeroq", "noise"):
        before, after, secs = [], [], []
        for seed in seeds:
            cfg = QuantConfig(4, 4)
            q = calibrate(quantize_network(lm.model, cfg), data[src][seed], cfg, seed=seed)
            before.append(_test_accuracy(q, lm.card))
            t0 = time.perf_counter()
            finetune(q, lm.model, data[src][seed], finetune_kd(epochs=args.finetune_epochs, seed=seed))
            secs.append(time.perf_counter() - t0)
            after.append(_test_accuracy(q, lm.card))
        finetuned[src] = {"before": before, "after": after, "seconds": secs}

    print(
        f"### resnet8_digits (FP32 test accuracy {100 * fp32:.2f} %), 64 calibration images, {len(seeds)} "
        "seeds\n"
    )
    for clip in CLIPPING:
        print(f"Clipping: {clip}\n")
        print("| bits | ZeroQ data | Gaussian noise | real digits (reference) |")
        print("|---|---|---|---|")
        print(f"| FP32 | {100 * fp32:.2f} | {100 * fp32:.2f} | {100 * fp32:.2f} |")
        for key, row in results[clip].items():
            print(f"| {key} | " + " | ".join(_fmt(row[s]) for s in SOURCES) + " |")
        print()
    print(
        f"W4A4 (MSE clipping) + KD fine-tuning ({args.finetune_epochs} epochs x {ft_cfg.steps_per_epoch} "
        "steps, "
        "on the same 64 calibration images, FP32 model as teacher):\n"
    )
    print("| fine-tuning data | before | after |")
    print("|---|---|---|")
    for src, r in finetuned.items():
        print(f"| {src} | {_fmt(r['before'])} | {_fmt(r['after'])} |")
    print()
    walls = [t["wall_s"] for t in synth_times]
    cpus = [t["cpu_s"] for t in synth_times]
    print(
        f"ZeroQ synthesis of one 64-image batch (500 steps): wall {min(walls)}-{max(walls)} s, "
        f"process CPU {min(cpus)}-{max(cpus)} s (1 thread)."
    )
    print("lenet5_digits: no BatchNorm layer, so ZeroQ calibration does not apply (noise/digits/DIR do).")

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "cpu": platform.processor(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "teacher": "resnet8_digits",
        "fp32": fp32,
        "seeds": seeds,
        "results": results,
        "finetune": {"config": dataclasses.asdict(ft_cfg), **finetuned},
        "zeroq_synthesis": synth_times,
    }
    (RESULTS / "quantization.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
