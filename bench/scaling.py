"""One process vs 2 gloo ranks on CPU: same dataset? same student quality? (the torchrun code path).

Ranks are started with torch.multiprocessing.spawn and a file:// rendezvous, exactly as in
tests/test_distributed.py; each runs the real CLI command. Prints a markdown table and writes
bench/results/scaling.json.

    PYTHONPATH=. python bench/scaling.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from cli import cli  # noqa: E402
from datafree.dataset import SyntheticDataset  # noqa: E402
from tests.conftest import real_digits_dataset  # noqa: E402
from tests.test_distributed import KD, SYNTH, _spawn  # noqa: E402


def main() -> None:
    """Run both paths and compare."""
    torch.set_num_threads(1)
    t = Path(tempfile.mkdtemp(prefix="datafree-scale-"))
    real_digits_dataset(t / "real")
    rows = {}
    t0 = time.perf_counter()
    _spawn(t, [("synth", ["synthesize", "--out", str(t / "ds2"), *SYNTH])])
    rows["synthesize_2_ranks_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _spawn(t, [("kd", ["distill", "--data", str(t / "real"), "--out", str(t / "kd2"), *KD])])
    rows["distill_2_ranks_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert CliRunner().invoke(cli, ["synthesize", "--out", str(t / "ds1"), *SYNTH]).exit_code == 0
    rows["synthesize_1_process_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert (
        CliRunner()
        .invoke(cli, ["distill", "--data", str(t / "real"), "--out", str(t / "kd1"), *KD])
        .exit_code
        == 0
    )
    rows["distill_1_process_s"] = time.perf_counter() - t0
    d1, d2 = SyntheticDataset.open(t / "ds1").load(), SyntheticDataset.open(t / "ds2").load()
    rows["images"] = len(d2["images"])
    rows["unique_images"] = len(torch.unique(d2["images"].flatten(1), dim=0))
    rows["max_abs_pixel_diff_vs_1_process"] = float((d1["images"] - d2["images"]).abs().max())
    rows["labels_equal"] = bool(torch.equal(d1["labels"], d2["labels"]))
    for k in ("kd1", "kd2"):
        rows[f"{k}_test_accuracy"] = json.loads((t / k / "model.json").read_text())["test_accuracy"]
    print("| | 1 process | 2 gloo ranks |")
    print("|---|---|---|")
    print(
        f"| synthesize {SYNTH[1]} images (wall s; 2 ranks include spawning the processes and their imports) "
        f"| {rows['synthesize_1_process_s']:.1f} | "
        f"{rows['synthesize_2_ranks_s']:.1f} |"
    )
    print(
        f"| dataset: images / unique / max pixel diff vs 1 process / labels equal | {SYNTH[1]} | "
        f"{rows['images']} / "
        f"{rows['unique_images']} / {rows['max_abs_pixel_diff_vs_1_process']:.2e} / {rows['labels_equal']} |"
    )
    print(
        "| distill 10 epochs x 10 steps, global batch 32 (wall s, same caveat) | "
        f"{rows['distill_1_process_s']:.1f} | {rows['distill_2_ranks_s']:.1f} |"
    )
    print(
        f"| student test accuracy (digits test, 360 images) | {rows['kd1_test_accuracy']:.4f} | "
        f"{rows['kd2_test_accuracy']:.4f} |"
    )
    (ROOT / "bench" / "results" / "scaling.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
