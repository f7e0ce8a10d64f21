"""The torchrun code path, on CPU with gloo: 2 ranks started by ``torch.multiprocessing.spawn``.

Each rank runs the real CLI command (click's CliRunner) with torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK) and a ``file://`` rendezvous, exactly as under ``torchrun``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

from cli import cli
from datafree.dataset import SyntheticDataset
from datafree.distributed import local_slice
from datafree.sources import TensorSource
from tests.conftest import real_digits_dataset

WORLD = 2
SYNTH = [
    "--num-images",
    "9",
    "--batch-size",
    "2",
    "--iterations",
    "3",
    "--set",
    "warmup=1",
    "--seed",
    "5",
    "-q",
]
KD = ["--epochs", "10", "--steps-per-epoch", "10", "--kd-batch-size", "32", "--lr", "0.1", "-q"]


def _rank_main(rank: int, tmp: str, jobs: list[tuple[str, list[str]]]) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    for name, args in jobs:
        os.environ["DATAFREE_INIT_METHOD"] = f"file://{tmp}/rendezvous-{name}"
        r = CliRunner().invoke(cli, args)
        Path(tmp, f"{name}-rank{rank}.json").write_text(json.dumps({"code": r.exit_code, "output": r.output}))
        if r.exit_code != 0:
            raise RuntimeError(f"rank {rank} {name}: exit {r.exit_code}: {r.output}")


def _spawn(tmp_path: Path, jobs: list[tuple[str, list[str]]]) -> None:
    mp.spawn(_rank_main, args=(str(tmp_path), jobs), nprocs=WORLD, join=True)


def test_local_slices_partition_a_batch():
    for n in (1, 7, 32):
        parts = [torch.arange(n)[local_slice(n, r, 3)] for r in range(3)]
        assert torch.equal(torch.cat(parts), torch.arange(n))
    a, b = (
        TensorSource(torch.arange(10.0)[:, None], seed=3),
        TensorSource(torch.arange(10.0)[:, None], seed=3),
    )
    whole = TensorSource(torch.arange(10.0)[:, None], seed=3)
    for _ in range(4):  # crosses an epoch boundary of the permutation
        got = torch.cat([a.next_batch_for_rank(6, 0, 2), b.next_batch_for_rank(6, 1, 2)])
        assert torch.equal(got, whole.next_batch(6))


def test_two_ranks_synthesize_the_one_process_dataset_and_distill_as_well(tmp_path):
    real_digits_dataset(tmp_path / "real")
    _spawn(
        tmp_path,
        [
            ("synth", ["synthesize", "--out", str(tmp_path / "ds2"), *SYNTH]),
            ("kd", ["distill", "--data", str(tmp_path / "real"), "--out", str(tmp_path / "kd2"), *KD]),
        ],
    )
    run = CliRunner()
    assert run.invoke(cli, ["synthesize", "--out", str(tmp_path / "ds1"), *SYNTH]).exit_code == 0
    r = run.invoke(cli, ["distill", "--data", str(tmp_path / "real"), "--out", str(tmp_path / "kd1"), *KD])
    assert r.exit_code == 0, r.output

    # one merged manifest, exactly the requested images, no duplicates, equal to the 1-process dataset
    ds1, ds2 = SyntheticDataset.open(tmp_path / "ds1"), SyntheticDataset.open(tmp_path / "ds2")
    assert ds2.manifest["images_written"] == 9 and ds2.complete and len(ds2.manifest["shards"]) == 5
    d1, d2 = ds1.load(), ds2.load()
    assert len(d2["images"]) == 9 and len(torch.unique(d2["images"].flatten(1), dim=0)) == 9
    for k in d1:
        torch.testing.assert_close(d1[k], d2[k], msg=k)
    only_main = [json.loads((tmp_path / f"synth-rank{r}.json").read_text())["output"] for r in range(WORLD)]
    assert "wrote 9 images" in only_main[0] and only_main[1] == ""

    # the DDP student (2 x 16 per global batch of 32) is as good as the one-process student
    acc = {k: json.loads((tmp_path / k / "model.json").read_text())["test_accuracy"] for k in ("kd1", "kd2")}
    assert acc["kd1"] > 0.8, acc
    assert abs(acc["kd1"] - acc["kd2"]) < 0.08, acc
    ckpt = torch.load(tmp_path / "kd2" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 10 and len(ckpt["rng_ranks"]) == WORLD


def test_two_ranks_synthesize_with_the_persistent_state_backends(tmp_path):
    """Cmi (memory bank) and nayer (persistent generator) keep per-process state across shards.

    Under torchrun each rank has its own, and the ranks still write one complete dataset.
    """
    tiny = {"cmi": "negatives=4", "nayer": "group_size=2"}
    jobs = [
        (
            m,
            [
                "synthesize",
                "--method",
                m,
                "--out",
                str(tmp_path / m),
                "--num-images",
                "9",
                "--batch-size",
                "2",
                "--iterations",
                "2",
                "--set",
                opt,
                "-q",
            ],
        )
        for m, opt in tiny.items()
    ]
    _spawn(tmp_path, jobs)
    for m in tiny:
        ds = SyntheticDataset.open(tmp_path / m)
        assert ds.complete and ds.manifest["images_written"] == 9 and ds.manifest["method"] == m
        images = ds.load()["images"]
        assert len(torch.unique(images.flatten(1), dim=0)) == 9


def test_an_error_only_rank0_sees_stops_every_rank_without_hanging(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["synthesize", "--out", str(out), "--num-images", "2", "--iterations", "1", "-q"]
    with pytest.raises(mp.ProcessRaisedException, match="exit 2"):
        _spawn(tmp_path, [("bad", args)])
    for r in range(WORLD):  # every rank that reported printed the same one-line error
        p = tmp_path / f"bad-rank{r}.json"
        if p.is_file():
            res = json.loads(p.read_text())
            assert res["code"] == 2 and "not empty and holds no dataset" in res["output"]
            assert len(res["output"].strip().splitlines()) == 1
    assert [c.name for c in out.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_real_torchrun_command_lines(tmp_path):
    """The documented command lines, through torchrun itself (slow: two launches)."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("WORLD_SIZE", None)
    real_digits_dataset(tmp_path / "real")
    for args in (
        ["synthesize", "--out", str(tmp_path / "ds"), "--device", "cpu", *SYNTH],
        ["distill", "--data", str(tmp_path / "real"), "--out", str(tmp_path / "kd"), "--device", "cpu", *KD],
    ):
        cmd = [torchrun, "--standalone", f"--nproc_per_node={WORLD}", str(root / "cli.py"), *args]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
    assert SyntheticDataset.open(tmp_path / "ds").manifest["images_written"] == 9
    assert json.loads((tmp_path / "kd" / "model.json").read_text())["test_accuracy"] > 0.8
