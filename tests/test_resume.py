"""Interruption and resume: SIGKILL a real ``python cli.py`` run at a random point, rerun, compare.

Also: a numerical blow-up stops the KD stage with a clear message and leaves the last good
checkpoint byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.dataset import SyntheticDataset
from datafree.distill import CHECKPOINT, KDConfig, distill
from datafree.errors import NumericalError, UserInputError
from datafree.models import create_model
from datafree.sources import NoiseSource, TensorSource
from tests.conftest import real_digits_dataset

ROOT = Path(__file__).resolve().parent.parent
SYNTH = ["--num-images", "12", "--batch-size", "2", "--iterations", "12", "--set", "warmup=1", "--seed", "3"]
KD = ["--epochs", "10", "--steps-per-epoch", "10", "--kd-batch-size", "32", "--lr", "0.1"]
COMMON = ["--quiet", "--threads", "1"]


def _kill_at_random_point(args: list[str], started: Path, rng: random.Random, window: float) -> int:
    """Start ``python cli.py ARGS``; once ``started`` exists, wait U(0, window) s and SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, window))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode() if proc.stderr else ""
    return proc.returncode


def test_synthesize_killed_at_random_then_rerun_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random()
    out = tmp_path / "killed"
    code = _kill_at_random_point(
        ["synthesize", "--out", str(out), *SYNTH, *COMMON], out / "shard-00000.safetensors", rng, 2.0
    )
    r = CliRunner().invoke(cli, ["synthesize", "--out", str(out), *SYNTH, *COMMON])
    assert r.exit_code == 0, r.output
    assert (
        CliRunner().invoke(cli, ["synthesize", "--out", str(tmp_path / "ref"), *SYNTH, *COMMON]).exit_code
        == 0
    )
    ds, ref = SyntheticDataset.open(out), SyntheticDataset.open(tmp_path / "ref")
    assert ds.manifest["images_written"] == 12 and ds.complete, code
    got, want = ds.load(), ref.load()
    assert len(torch.unique(got["images"].flatten(1), dim=0)) == 12  # no duplicates
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=f"{k} (kill exit code {code})")
    assert not list(out.glob(".*.tmp"))  # torn temporary files of the killed run are gone


def test_distill_killed_at_random_then_rerun_reaches_the_same_student(tmp_path):
    rng = random.Random()
    data = tmp_path / "real"
    real_digits_dataset(data)
    out = tmp_path / "killed"
    args = ["distill", "--data", str(data), *KD, *COMMON]
    code = _kill_at_random_point([*args, "--out", str(out)], out / CHECKPOINT, rng, 4.0)
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ref")])
    assert r.exit_code == 0, r.output
    acc = {
        k: json.loads((tmp_path / k / "model.json").read_text())["test_accuracy"] for k in ("killed", "ref")
    }
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 10 and [h["epoch"] for h in ckpt["history"]] == list(range(1, 11)), code
    assert acc["ref"] > 0.8 and abs(acc["killed"] - acc["ref"]) <= 0.03, (acc, code)


class _Poisoned(TensorSource):
    """Gives NaN images from batch ``limit + 1`` on, noting the checkpoint bytes at that moment."""

    def __init__(self, images, limit, ckpt):
        super().__init__(images)
        self.limit, self.calls, self.ckpt, self.before = limit, 0, ckpt, None

    def next_batch(self, n):
        self.calls += 1
        x = super().next_batch(n)
        if self.calls <= self.limit:
            return x
        if self.before is None:
            self.before = (self.ckpt.read_bytes(), self.ckpt.stat().st_mtime_ns)
        return torch.full_like(x, float("nan"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, bn_teacher):
    cfg = KDConfig(epochs=4, steps_per_epoch=2, batch_size=8)
    src = _Poisoned(NoiseSource(32, bn_teacher.card).images, limit=4, ckpt=tmp_path / CHECKPOINT)
    torch.manual_seed(0)
    with pytest.raises(
        NumericalError, match=r"KD loss became nan in epoch 3.*last good checkpoint \(epoch 2\)"
    ):
        distill(bn_teacher.model, create_model("resnet8_quarter", 10, 1), src, cfg, checkpoint_dir=tmp_path)
    assert src.before is not None
    assert (tmp_path / CHECKPOINT).read_bytes() == src.before[0]
    assert (tmp_path / CHECKPOINT).stat().st_mtime_ns == src.before[1]
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 2


def test_nan_through_the_cli_is_one_line_and_exit_3(tmp_path):
    data = tmp_path / "real"
    real_digits_dataset(data, n=64)
    args = [
        "distill",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
    ]
    r = CliRunner().invoke(cli, [*args, "--kd-batch-size", "8", "--lr", "1e30", "-q"])
    assert r.exit_code == 3, r.output
    assert r.output.startswith("error: the KD loss became") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "model.json").exists()


def test_run_once_computes_once_then_loads(tmp_path):
    from datafree.resume import run_once, safe_torch_load
    from datafree.utils import atomic_torch_save

    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(3.0)}

    for _ in range(2):
        got = run_once(tmp_path / "stage.pt", compute, lambda r, p: atomic_torch_save(r, p), safe_torch_load)
        assert torch.equal(got["w"], torch.arange(3.0))
    assert calls == [1]
    (tmp_path / "stage.pt").write_bytes(b"torn")
    with pytest.raises(UserInputError, match="corrupt checkpoint"):
        run_once(tmp_path / "stage.pt", compute, lambda r, p: None, safe_torch_load)
