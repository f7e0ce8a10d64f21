"""The GPU check: what to measure when a GPU is lent (run through ``bench/gpu_check.sh``).

For each precision (fp32, bf16, fp16 on CUDA; fp32 and bf16 on CPU):

* ``di_vs_bare``: a DeepInversion step (``synth.step()``, the BN-statistics hooks, priors, Adam,
  keep-best) against a bare teacher forward+backward of the same batch (gradients to the input),
  timed alternately in one process, for a torchvision ResNet-50 at 3x224x224 (batch 64) and a CIFAR
  ResNet-34 at 3x32x32 (batch 128; the registered ``resnet34_cifar`` when there is one, else the
  torchvision ResNet-34 at 32 px). Weights are random: BN running statistics of random weights
  are fine for step timing. Peak memory of each (``max_memory_allocated`` above the memory held
  before; RSS growth on CPU is not measured).
* ``kd``: images/s of the shared KD stage (``datafree.distill.distill``) from the ResNet-34 teacher
  into a ResNet-18 student at batch 256, with its peak memory.
* ``torchrun``: with 2 or more GPUs, ``datafree distill`` under ``torchrun --nproc_per_node 2``
  against the same command in one process (wall seconds of the KD stage).

``--dry-run`` runs every code path on the CPU with tiny sizes (tests use it); the figures are then
meaningless. Writes one JSON file (``bench/results/gpu.json`` by default) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import interleaved, machine, markdown_table, median_ratio, sync  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _model(name: str, size: int) -> tuple[torch.nn.Module, str]:
    from datafree.models import MODELS

    torch.manual_seed(0)
    if name == "resnet34_cifar" and "resnet34_cifar" in MODELS.names():
        from datafree.models import create_model

        return create_model("resnet34_cifar", 10, 3), "resnet34_cifar"
    import torchvision

    arch = {"resnet34_cifar": "resnet34"}.get(name, name)
    return getattr(torchvision.models, arch)(num_classes=10), f"torchvision {arch}"


def _card(size: int) -> Any:
    from datafree.cards import ModelCard

    return ModelCard(
        arch="resnet", weights="", num_classes=10, input_shape=[3, size, size], mean=[0.5] * 3, std=[0.25] * 3
    )


def _peak(device: torch.device, fn: Any, calls: int = 2) -> float | None:
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(calls):
        fn()
    sync(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)


def di_case(name: str, size: int, batch: int, prec: str, device: torch.device, reps: int) -> dict[str, Any]:
    """DeepInversion step vs bare forward+backward at one precision."""
    from datafree import precision
    from generators import create_synthesizer

    precision.configure(prec, channels_last=device.type == "cuda", device=device)
    model, arch = _model(name, size)
    model = model.to(device).eval().requires_grad_(False)
    synth = create_synthesizer("deepinversion", model, _card(size), batch_size=batch, iterations=100)
    synth.reset(batch, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = precision.prepare_input(torch.randn((batch, 3, size, size), generator=g).to(device)).requires_grad_(
        True
    )
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def bare() -> None:
        x.grad = None
        with precision.autocast(device):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()

    def step() -> None:
        synth.step()

    t_step, t_bare = interleaved([step, bare], device, reps, warmup=2)
    return {
        "kind": "di_vs_bare",
        "model": arch,
        "input": size,
        "batch_size": batch,
        "precision": prec,
        "channels_last": precision.options().channels_last,
        "step_ms": round(1e3 * statistics.median(t_step), 2),
        "bare_ms": round(1e3 * statistics.median(t_bare), 2),
        "ratio": round(median_ratio(t_step, t_bare), 3),
        "step_peak_mib": _peak(device, step),
        "bare_peak_mib": _peak(device, bare),
    }


def kd_case(size: int, batch: int, steps: int, prec: str, device: torch.device) -> dict[str, Any]:
    """Images/s of the KD stage (ResNet-34 teacher -> ResNet-18 student)."""
    import torchvision

    from datafree import precision
    from datafree.distill import KDConfig, distill
    from datafree.progress import set_quiet
    from datafree.sources import TensorSource

    set_quiet(True)
    precision.configure(prec, channels_last=device.type == "cuda", device=device)
    teacher, arch = _model("resnet34_cifar", size)
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = torchvision.models.resnet18(num_classes=10)
    source = TensorSource(torch.randn((4 * batch, 3, size, size)).to(device))
    cfg = KDConfig(epochs=1, steps_per_epoch=2, batch_size=batch)
    distill(teacher, student, source, cfg)  # warm-up (kernels, autotuning)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = KDConfig(epochs=1, steps_per_epoch=steps, batch_size=batch)
    sync(device)
    t0 = time.perf_counter()
    distill(teacher, student, source, cfg)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None
    return {
        "kind": "kd",
        "teacher": arch,
        "student": "torchvision resnet18",
        "input": size,
        "batch_size": batch,
        "precision": prec,
        "steps": steps,
        "images_per_s": round(steps * batch / seconds, 1),
        "peak_mib": peak,
    }


def torchrun_case(tmp: Path, epochs: int) -> dict[str, Any]:
    """``datafree distill`` on 2 GPUs (torchrun) against one GPU: wall seconds of the whole command."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    ds = tmp / "ds"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import cli; cli.main()",
            "synthesize",
            "-n",
            "1024",
            "--out",
            str(ds),
            "--iterations",
            "20",
            "--quiet",
        ],
        check=True,
        env=env,
    )
    args = ["distill", "--data", str(ds), "--epochs", str(epochs), "--quiet", "--kd-batch-size", "256"]
    out = {}
    for label, prefix in (
        ("1gpu", [sys.executable, "-c", "import cli; cli.main()"]),
        (
            "2gpu",
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(root / "cli.py")],
        ),
    ):
        t0 = time.perf_counter()
        subprocess.run([*prefix, *args, "--out", str(tmp / label)], check=True, env=env)
        out[f"{label}_s"] = round(time.perf_counter() - t0, 2)
    return {
        "kind": "torchrun",
        "command": "datafree distill --data (1024 images) " + " ".join(args[3:]),
        **out,
        "speedup": round(out["1gpu_s"] / out["2gpu_s"], 3),
    }


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: exercise every path quickly")
    ap.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", str(RESULTS / "gpu.json")))
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        precisions, reps = ["fp32", "bf16"], args.reps or 2
        di = [("resnet18", 32, 8), ("resnet34_cifar", 32, 8)]
        kd = (32, 16, 2)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run for the CPU path")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        precisions, reps = ["fp32", "bf16", "fp16"], args.reps or 20
        di = [("resnet50", 224, 64), ("resnet34_cifar", 32, 128)]
        kd = (32, 256, 50)
    rows: list[dict[str, Any]] = []
    for name, size, batch in di:
        for prec in precisions:
            rows.append(di_case(name, size, batch, prec, device, reps))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for prec in precisions:
        rows.append(kd_case(*kd, prec, device))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(torchrun_case(Path(tmp), epochs=3))
    from datafree import precision

    precision.configure()
    info = machine(device)
    result = {"machine": info, "device": str(device), "dry_run": args.dry_run, "rows": rows}
    from datafree.utils import atomic_write_json

    atomic_write_json(args.out, result)
    table = [
        [
            r["model"],
            r["input"],
            r["batch_size"],
            r["precision"],
            r["step_ms"],
            r["bare_ms"],
            f"**{r['ratio']}x**",
            f"{r['step_peak_mib']} / {r['bare_peak_mib']}",
        ]
        for r in rows
        if r["kind"] == "di_vs_bare"
    ]
    print(
        markdown_table(
            ["teacher", "px", "batch", "precision", "DI step ms", "bare ms", "ratio", "peak MiB"], table
        )
    )
    kd_rows = [
        [r["teacher"], r["batch_size"], r["precision"], r["images_per_s"], r["peak_mib"]]
        for r in rows
        if r["kind"] == "kd"
    ]
    print()
    print(markdown_table(["KD teacher -> resnet18", "batch", "precision", "images/s", "peak MiB"], kd_rows))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
