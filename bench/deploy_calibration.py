"""ONNX Runtime static int8 (W8A8 QDQ) calibrated on datafree's synthetic set vs on real digits.

The recipe of docs/deploy.md: ``datafree deploy`` exports the fp32 model to ONNX, ONNX Runtime's
``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration) reads
the calibration images through a ``CalibrationDataReader``, and the int8 model is evaluated by ONNX
Runtime on the digits test split (360 images). Calibration sets, each ``--num-images`` images:
``synthetic`` (datafree's, ``--calib`` method, default DeepInversion as ``datafree synthesize``
writes by default; ``--calib zeroq`` for ZeroQ's BN-statistics images) and
``real digits`` (random training images: the reference, not data-free).

Models: resnet8_digits and the ResNet-18 at 3x32x32 of the teacher suite (``--resnet18``, default
$DATAFREE_SUITE/resnet18_32/model.json; skipped when absent).

Run: ``OMP_WAIT_POLICY=PASSIVE python bench/deploy_calibration.py``. Writes
bench/results/deploy_calibration.json and .md.
"""

from __future__ import annotations

import argparse
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
from datafree.cards import LoadedModel, load_model  # noqa: E402
from datafree.data import digits_split  # noqa: E402
from datafree.deploy import _ort_session, deploy  # noqa: E402
from datafree.quant import calibration_images  # noqa: E402
from datafree.utils import atomic_write, atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SUITE_RESNET18 = str(suite_dir() / "resnet18_32" / "model.json")  # $DATAFREE_SUITE


def ort_static_int8(
    fp32_onnx: Path, out: Path, images: np.ndarray, batch_size: int = 32, keep_last_float: bool = True
) -> Path:
    """docs/deploy.md's recipe: ``quantize_static`` over ``images`` (float32 NCHW, normalised).

    ``keep_last_float`` leaves the final ``Gemm``/``MatMul`` (the logits) unquantized, as datafree's
    own quantization does: a logit range calibrated on unlabelled synthetic images clips the winning
    class (with ZeroQ images and the last layer quantized, resnet8_digits falls to ~78%).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    nodes = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type in ("Gemm", "MatMul")]
    exclude = nodes[-1:] if keep_last_float else []

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    quantize_static(
        str(fp32_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
    )  # fmt: skip
    return out


def ort_accuracy(path: Path, lm: LoadedModel) -> float:
    """Top-1 accuracy of an ONNX file on the digits test split, through ONNX Runtime."""
    sess = _ort_session(str(path), 1)
    x, y = digits_split("test", tuple(lm.card.input_shape))  # type: ignore[arg-type]
    logits = sess.run(None, {"input": lm.card.normalizer()(x).numpy()})[0]
    return round(float((logits.argmax(1) == y.numpy()).mean()), 4)


def bench_model(lm: LoadedModel, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """fp32 and the two calibrations of one model."""
    fp32 = tmp / "fp32.onnx"
    deploy(lm, fp32)
    row: dict[str, Any] = {"fp32 (ORT)": ort_accuracy(fp32, lm), "seconds": {}}
    for name, calib in (("synthetic", args.calib), ("real digits", "digits")):
        t0 = time.perf_counter()
        images = (
            calibration_images(lm, calib, args.num_images, seed=args.seed).cpu().numpy().astype(np.float32)
        )
        row["seconds"][f"{name} data"] = round(time.perf_counter() - t0, 1)
        q = ort_static_int8(fp32, tmp / f"int8_{calib}.onnx", images, keep_last_float=not args.quantize_last)
        row[f"int8 ORT, {name} calibration"] = ort_accuracy(q, lm)
    diff = abs(row["int8 ORT, synthetic calibration"] - row["int8 ORT, real digits calibration"])
    row["abs diff (points)"] = round(100 * diff, 2)
    row["within 0.5 points"] = bool(100 * diff <= 0.5 + 1e-9)
    return row


def main() -> None:
    """Run the benchmark and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--calib", default="deepinversion", help="datafree calibration source for the synthetic set"
    )
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quantize-last", action="store_true", help="also quantize the last layer (the logits)")
    ap.add_argument("--resnet18", default=SUITE_RESNET18)
    ap.add_argument("--results", type=Path, default=RESULTS / "deploy_calibration.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = {"resnet8_digits": "resnet8_digits"}
    if Path(args.resnet18).is_file():
        models["resnet18_32"] = args.resnet18
    results: dict[str, Any] = {
        "conditions": f"{args.num_images} calibration images ({args.calib} vs real digits), "
        f"seed {args.seed}, last layer {'int8' if args.quantize_last else 'float'}, 1 thread, torch "
        f"{torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, spec) in enumerate(models.items()):
            sub = Path(tmp) / str(i)
            sub.mkdir()
            results["models"][name] = bench_model(load_model(spec), sub, args)
            print(name, results["models"][name], flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, results)
    cols = [
        "fp32 (ORT)",
        "int8 ORT, synthetic calibration",
        "int8 ORT, real digits calibration",
        "abs diff (points)",
        "within 0.5 points",
    ]
    md = [f"# ORT static int8: synthetic vs real calibration ({results['conditions']})", "",
          "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]  # fmt: skip
    md += [f"| {n} | " + " | ".join(str(r[c]) for c in cols) + " |" for n, r in results["models"].items()]
    with atomic_write(args.results.with_suffix(".md")) as f:
        f.write(("\n".join(md) + "\n").encode())
    print("\n".join(md))


if __name__ == "__main__":
    main()
