"""Deployed CPU latency, batch 1 and 64, one thread: PyTorch fp32/int8 (PT2E), ONNX Runtime fp32/int8 (QDQ).

For each model: the fp32 PyTorch model; the PT2E int8 model of ``datafree quantize --int8`` (eager
reference graph, and with ``--compile`` also ``torch.compile``d, which lowers it to oneDNN int8
kernels); the fp32 ONNX export and the QDQ int8 ONNX export of the W8A8 model (``datafree deploy``),
both run by ONNX Runtime's CPU provider. All timed round-robin in one process (1 thread,
:func:`datafree.profile.time_callables`, median CPU time), so load on a shared machine hits all
alike. Per batch size the fastest int8 runtime is chosen only where it beats the fastest fp32 one.

Models: ``resnet8_digits`` (shipped), ``resnet8_half`` (the distilled student's architecture,
random weights: latency only), and the ResNet-18 at 3x32x32 (``--resnet18`` card, default the
teacher-suite card under $DATAFREE_SUITE/resnet18_32 when it exists, else random weights).
Calibration for latency is 64 Gaussian-noise images (speed does not depend on the scales); the
accuracies printed are on the digits test split with those scales.

Run: ``OMP_WAIT_POLICY=PASSIVE python bench/deploy_latency.py [--compile] [--repeats 30]``. Writes
bench/results/deploy_latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.suite import suite_dir  # noqa: E402
from datafree.cards import LoadedModel, ModelCard, load_model, save_model  # noqa: E402
from datafree.data import digits_split  # noqa: E402
from datafree.deploy import _ort_session, deploy  # noqa: E402
from datafree.models import create_model  # noqa: E402
from datafree.profile import time_callables  # noqa: E402
from datafree.quant import QuantConfig, QuantizeJob, calibration_images, quantize  # noqa: E402
from datafree.quant.int8 import export_int8  # noqa: E402
from datafree.utils import atomic_write, atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SUITE_RESNET18 = suite_dir() / "resnet18_32" / "model.json"  # $DATAFREE_SUITE or ~/.cache/datafree/suite


def _random_card(arch: str, shape: list[int], tmp: Path, mean: list[float], std: list[float]) -> LoadedModel:
    torch.manual_seed(0)
    model = create_model(arch, 10, shape[0])
    like = ModelCard(arch=arch, weights="", num_classes=10, input_shape=shape, mean=mean, std=std, name=arch)
    card = save_model(model.eval(), tmp / arch, like=like, arch=arch, card_name=f"{arch}_random")
    return load_model(card.path)


def _models(args: argparse.Namespace, tmp: Path) -> dict[str, LoadedModel]:
    out = {"resnet8_digits": load_model("resnet8_digits")}
    out["resnet8_half (student arch, random)"] = _random_card("resnet8_half", [1, 16, 16], tmp, [0.5], [0.5])
    if args.resnet18 and Path(args.resnet18).is_file():
        out["resnet18_32 (suite teacher)"] = load_model(args.resnet18)
    else:
        imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        out["resnet18 3x32x32 (random)"] = _random_card("resnet18", [3, 32, 32], tmp, *imagenet)
    return out


def _accuracy(fn: Any, card: ModelCard) -> float:
    x, y = digits_split("test", tuple(card.input_shape))  # type: ignore[arg-type]
    with torch.inference_mode():
        pred = torch.cat(
            [torch.as_tensor(fn(card.normalizer()(x[i : i + 120]))).argmax(1) for i in range(0, len(x), 120)]
        )
    return round((pred == y).float().mean().item(), 4)


def bench_model(name: str, lm: LoadedModel, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every runtime of one model at batch 1 and 64."""
    t0 = time.perf_counter()
    images = calibration_images(lm, "noise", 64, seed=0)
    fp32 = lm.model.cpu().eval()
    pt2e = export_int8(fp32, images)
    qdir = tmp / f"q_{abs(hash(name))}"
    quantize(lm, QuantConfig(8, 8), QuantizeJob(latency_repeats=0), images=images, out_dir=qdir)
    deploy(lm, tmp / "fp32.onnx")
    deploy(qdir, tmp / "int8.onnx")
    ort_fp32, ort_int8 = _ort_session(str(tmp / "fp32.onnx"), 1), _ort_session(str(tmp / "int8.onnx"), 1)

    def ort_fn(sess: Any) -> Any:
        return lambda x: sess.run(None, {"input": x.numpy()})[0]

    runtimes: dict[str, Any] = {"PyTorch fp32": fp32, "PyTorch int8 (PT2E eager)": pt2e,
                                "ORT fp32": ort_fn(ort_fp32), "ORT int8 (QDQ)": ort_fn(ort_int8)}  # fmt: skip
    compile_s = None
    if args.compile:
        t1 = time.perf_counter()
        compiled = torch.compile(pt2e)
        with torch.no_grad():
            for bs in (1, 64):
                compiled(images[:bs])
        compile_s = round(time.perf_counter() - t1, 1)
        runtimes["PyTorch int8 (PT2E + torch.compile)"] = compiled
    acc = {k: _accuracy(fn, lm.card) for k, fn in runtimes.items()}
    pixels, _ = digits_split("test", tuple(lm.card.input_shape))  # type: ignore[arg-type]
    row: dict[str, Any] = {"accuracy": acc, "compile_seconds": compile_s, "setup_seconds": None}
    for bs in (1, 64):
        x = lm.card.normalizer()(pixels[:bs]).contiguous()
        lat = time_callables(runtimes, x, repeats=args.repeats, warmup=3)
        fp32_best = min((k for k in lat if "fp32" in k), key=lambda k: lat[k]["cpu_ms"])
        int8_best = min((k for k in lat if "int8" in k), key=lambda k: lat[k]["cpu_ms"])
        chosen = int8_best if lat[int8_best]["cpu_ms"] < lat[fp32_best]["cpu_ms"] else fp32_best
        row[f"batch_{bs}"] = {
            "latency": lat,
            "fastest_fp32": fp32_best,
            "fastest_int8": int8_best,
            "chosen": chosen,
            "int8_speedup": round(lat[fp32_best]["cpu_ms"] / lat[int8_best]["cpu_ms"], 2),
            "int8_speedup_vs_pytorch_fp32": round(
                lat["PyTorch fp32"]["cpu_ms"] / lat[int8_best]["cpu_ms"], 2
            ),
        }
    row["setup_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"# Deployed CPU latency ({results['conditions']})", ""]
    for name, row in results["models"].items():
        lines += [f"## {name}", "", "| runtime | test acc | b1 CPU ms | b64 CPU ms |", "|---|---|---|---|"]
        for k in row["batch_1"]["latency"]:
            lines.append(f"| {k} | {row['accuracy'][k]:.4f} | {row['batch_1']['latency'][k]['cpu_ms']} | "
                         f"{row['batch_64']['latency'][k]['cpu_ms']} |")  # fmt: skip
        for b in ("batch_1", "batch_64"):
            r = row[b]
            lines.append(
                f"\n{b.replace('_', ' ')}: chosen **{r['chosen']}**; fastest int8 ({r['fastest_int8']}) is "
                f"{r['int8_speedup']}x the fastest fp32 ({r['fastest_fp32']}), "
                f"{r['int8_speedup_vs_pytorch_fp32']}x PyTorch fp32"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="also time the PT2E model under torch.compile")
    ap.add_argument("--resnet18", default=str(SUITE_RESNET18), help="card of the ResNet-18 at 3x32x32")
    ap.add_argument("--results", type=Path, default=RESULTS / "deploy_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "conditions": f"1 thread, torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared machine (median CPU time of "
        f"{args.repeats} runs)",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, lm in _models(args, Path(tmp)).items():
            sub = Path(tmp) / str(len(results["models"]))
            sub.mkdir()
            results["models"][name] = bench_model(name, lm, sub, args)
            print(
                name,
                json.dumps({b: results["models"][name][b]["chosen"] for b in ("batch_1", "batch_64")}),
                flush=True,
            )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, results)
    with atomic_write(args.results.with_suffix(".md")) as f:
        f.write(_markdown(results).encode())
    print(_markdown(results))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
