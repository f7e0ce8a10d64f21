"""Real int8 on CPU: fp32 vs int8 latency at batch 1 and 64, int8 accuracy vs simulated W8A8, file sizes.

The int8 model is torchao's PT2E post-training quantization (X86InductorQuantizer, see
datafree/quant/int8.py; eager PyTorch runs its reference form), calibrated on the same 64 ZeroQ images as
the simulated W8A8 model. It is also saved as the deployable artefact (``model.json`` +
``model.safetensors``, datafree/quant/int8_artefact.py) and reloaded from disk: the reloaded model is
checked bit-identical to the in-memory one and timed beside it; its safetensors size is compared
with the fp32 teacher's. Latencies: 1 thread, models interleaved round-robin in one process,
wall-clock min / median and process CPU time (the machine is shared: trust ratios and CPU time).

Run: ``OMP_WAIT_POLICY=PASSIVE python bench/int8_latency.py``. Writes bench/results/int8_latency.json
(``--results PATH`` elsewhere, e.g. for a quick ``--calib noise --repeats 5`` check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from datafree.cards import LoadedModel, load_model  # noqa: E402
from datafree.data import digits_split  # noqa: E402
from datafree.profile import measure_latency  # noqa: E402
from datafree.quant import QuantConfig, calibrate, quantize_network  # noqa: E402
from datafree.quant.api import _test_accuracy, calibration_images  # noqa: E402
from datafree.quant.fold import fold_batchnorm  # noqa: E402
from datafree.quant.int8 import export_int8  # noqa: E402
from datafree.quant.int8_artefact import save_int8  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _reload(int8: torch.nn.Module, lm: LoadedModel, tmp: str) -> tuple[torch.nn.Module, int, bool]:
    """Save ``int8`` as an artefact under ``tmp``, load it back: (model, safetensors bytes, bit-identical)."""
    card = save_int8(int8, tmp, lm.card)
    reloaded = load_model(card.path).model
    pixels, _ = digits_split("test", tuple(lm.card.input_shape))
    x = lm.card.normalizer()(pixels[:64])
    with torch.no_grad():
        identical = torch.equal(reloaded(x), int8(x))
    return reloaded, card.weights_path().stat().st_size, identical


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--calib", default="zeroq")
    ap.add_argument("--results", type=Path, default=RESULTS / "int8_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = load_model("resnet8_digits")
    t0 = time.perf_counter()
    images = calibration_images(lm, args.calib, 64, seed=0)
    synth_s = time.perf_counter() - t0
    cfg = QuantConfig(8, 8)
    sim = calibrate(quantize_network(lm.model, cfg), images, cfg)
    t0 = time.perf_counter()
    int8 = export_int8(lm.model, images)
    export_s = time.perf_counter() - t0
    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    reloaded, int8_bytes, identical = _reload(int8, lm, tmp.name)
    save_load_s = time.perf_counter() - t0
    fp32_bytes = lm.card.weights_path().stat().st_size
    acc = {
        "fp32": _test_accuracy(lm.model, lm.card),
        "simulated W8A8": _test_accuracy(sim, lm.card),
        "int8 (PT2E, x86)": _test_accuracy(int8, lm.card),
        "int8 reloaded from disk": _test_accuracy(reloaded, lm.card),
    }
    folded = fold_batchnorm(lm.model)
    pixels, _ = digits_split("test", tuple(lm.card.input_shape))
    lat = {}
    for bs in (1, 64):
        x = lm.card.normalizer()(pixels[:bs])
        models = {"fp32": lm.model, "fp32 BN-folded": folded, "int8": int8, "int8 reloaded": reloaded}
        # one forward a sample, threads as set up above (the bench's own conditions)
        per = measure_latency(models, x, repeats=args.repeats, threads=None, min_sample_ms=0.0)
        lat[bs] = {name: {k: round(v, 3) for k, v in t[bs].items()} for name, t in per.items()}

    print(f"### resnet8_digits on CPU, 1 thread ({args.calib} calibration, 64 images)\n")
    print("| model | test accuracy |")
    print("|---|---|")
    for k, v in acc.items():
        print(f"| {k} | {100 * v:.2f} |")
    print()
    print("| batch | model | min ms | median ms | CPU ms (median) | speed-up vs fp32 (CPU time) |")
    print("|---|---|---|---|---|---|")
    for bs, r in lat.items():
        for name, v in r.items():
            speed = r["fp32"]["cpu_ms"] / v["cpu_ms"] if v["cpu_ms"] > 0 else float("nan")
            print(
                f"| {bs} | {name} | {v['min_ms']:.3f} | {v['median_ms']:.3f} | {v['cpu_ms']:.3f} | "
                f"{speed:.2f}x |"
            )
    print(
        f"\nweights on disk (safetensors): fp32 {fp32_bytes} bytes, int8 {int8_bytes} bytes "
        f"({fp32_bytes / int8_bytes:.2f}x smaller); reloaded int8 bit-identical: {identical}"
    )
    print(
        f"int8 export (prepare + calibrate + convert, incl. one-time imports): {export_s:.1f} s; "
        f"save + reload {save_load_s:.1f} s; {args.calib} synthesis {synth_s:.1f} s"
    )
    tmp.cleanup()
    payload = {
        "machine": {
            "cpu": platform.processor(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "calib": args.calib,
        "accuracy": acc,
        "latency": {f"batch_{k}": v for k, v in lat.items()},
        "export_seconds": round(export_s, 2),
        "save_reload_seconds": round(save_load_s, 2),
        "file_bytes": {"fp32": fp32_bytes, "int8": int8_bytes},
        "reloaded_bit_identical": identical,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
