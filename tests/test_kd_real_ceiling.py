"""bench/kd_real_ceiling.py replays a data-free run's KD plan on a random subset of real images."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from bench import kd_real_ceiling
from datafree.errors import UserInputError


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["kd_real_ceiling.py", "--teacher", "resnet8_digits", *args])
    threads = torch.get_num_threads()
    try:
        kd_real_ceiling.main()
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_subset_and_kd_overrides(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(monkeypatch, capsys, "--num-images", "48", "--student", "resnet8_quarter", "--kd", "epochs=1",
               "--kd", "steps_per_epoch=2", "--kd", "batch_size=16", "--kd", "optimizer=sgd")  # fmt: skip
    line = out.strip().splitlines()[-1]
    assert "-> resnet8_quarter seed 0: KD on 48 real train images" in line
    acc, ratio, teacher = re.search(
        r"images (\d\.\d{4}) \(([\d.]+)% of the teacher's (\d\.\d{4})\)", line
    ).groups()
    assert 0.0 <= float(acc) <= 1.0 and float(teacher) > 0.9  # the shipped teacher on its test split
    assert float(ratio) == pytest.approx(100 * float(acc) / float(teacher), abs=0.06)


def test_unknown_kd_key_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserInputError, match="unknown KD option 'epoch'"):
        _run(monkeypatch, capsys, "--kd", "epoch=1")
