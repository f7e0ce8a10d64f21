"""SIGKILL in the middle of a write: the rerun ends as an uninterrupted run, no torn file remains.

The process is stopped inside ``atomic_write`` (after the bytes, before the rename) of its N-th
file, then killed.

The child is a real ``python`` process running the CLI with ``os.fsync`` replaced by a function
that, on the chosen call, signals the parent and sleeps (so the kill lands inside the write).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from click.testing import CliRunner

from cli import cli
from datafree.dataset import SyntheticDataset
from datafree.distill import CHECKPOINT
from tests.conftest import real_digits_dataset

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import os, sys, time, pathlib
flag, nth = pathlib.Path(sys.argv[1]), int(sys.argv[2])
real, calls = os.fsync, [0]
def fsync(fd):
    real(fd)
    calls[0] += 1
    if calls[0] == nth:
        flag.touch()
        time.sleep(60)
os.fsync = fsync
sys.argv = ["datafree", *sys.argv[3:]]
import cli
cli.main()
"""


def _kill_inside_write(tmp: Path, nth: int, args: list[str]) -> int:
    flag = tmp / f"in-write-{nth}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(flag), str(nth), *args], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode() if proc.stderr else ""
    return proc.returncode


SYNTH = [
    "--num-images",
    "6",
    "--batch-size",
    "2",
    "--iterations",
    "3",
    "--set",
    "warmup=1",
    "--seed",
    "5",
    "-q",
    "--threads",
    "1",
]


def test_synthesize_killed_inside_a_write_then_rerun_equals_an_uninterrupted_run(tmp_path):
    # writes: manifest (create), then per shard: shard + manifest; then manifest, samples.png
    nth = random.Random().randint(1, 8)
    out = tmp_path / "killed"
    code = _kill_inside_write(tmp_path, nth, ["synthesize", "--out", str(out), *SYNTH])
    assert code == -signal.SIGKILL, f"write {nth} was never reached"
    assert list(out.glob(".*.tmp")), "the kill should leave a torn temporary file"
    r = CliRunner().invoke(cli, ["synthesize", "--out", str(out), *SYNTH])
    assert r.exit_code == 0, r.output
    assert CliRunner().invoke(cli, ["synthesize", "--out", str(tmp_path / "ref"), *SYNTH]).exit_code == 0
    got, want = SyntheticDataset.open(out).load(), SyntheticDataset.open(tmp_path / "ref").load()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=f"{k} (killed inside write {nth})")
    assert not list(out.glob(".*.tmp")), nth


def test_distill_killed_inside_a_checkpoint_write_resumes_to_the_same_student(tmp_path):
    data = tmp_path / "real"
    real_digits_dataset(data, n=64)
    args = [
        "distill",
        "--data",
        str(data),
        "--epochs",
        "3",
        "--steps-per-epoch",
        "2",
        "--kd-batch-size",
        "16",
        "--student",
        "lenet5_half",
        "-q",
        "--threads",
        "1",
    ]
    nth = random.Random().randint(1, 3)  # the checkpoint of epoch nth
    out = tmp_path / "killed"
    code = _kill_inside_write(tmp_path, nth, [*args, "--out", str(out)])
    assert code == -signal.SIGKILL
    assert list(out.glob(f".{CHECKPOINT}.*.tmp"))
    assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
    assert CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ref")]).exit_code == 0
    a = torch.load(out / CHECKPOINT, weights_only=True)["student"]
    b = torch.load(tmp_path / "ref" / CHECKPOINT, weights_only=True)["student"]
    for k in b:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} (killed inside checkpoint write {nth})")
    assert not list(out.glob(".*.tmp"))
