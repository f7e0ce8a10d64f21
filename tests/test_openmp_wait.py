"""cli.openmp_wait_policy: OpenMP's wait policy chosen from the machine's load, the user's setting wins."""

from __future__ import annotations

import os

import pytest

import cli


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", cli.OMP_WAIT_ENV):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_user_setting_is_left_alone(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GOMP_SPINCOUNT", "1000")
    clean_env.setattr(cli, "_cpus_busy_elsewhere", lambda: pytest.fail("must not sample the load"))
    assert cli.openmp_wait_policy(2) == "user"
    assert "OMP_WAIT_POLICY" not in os.environ and cli.OMP_WAIT_ENV not in os.environ
    clean_env.delenv("GOMP_SPINCOUNT")
    clean_env.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert cli.openmp_wait_policy(2) == "user"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("forced", ["spin", "passive"])
def test_forced_mode(clean_env: pytest.MonkeyPatch, forced: str) -> None:
    clean_env.setenv(cli.OMP_WAIT_ENV, forced)
    clean_env.setattr(cli, "_cpus_busy_elsewhere", lambda: pytest.fail("must not sample the load"))
    assert cli.openmp_wait_policy(2) == forced
    assert os.environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if forced == "passive" else None)


def test_auto_spins_only_on_free_cores(clean_env: pytest.MonkeyPatch) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cases = [(0, None, "spin"), (1, None, "passive"), (-1, 1, "passive"), (cpus - 1, 1, "spin"),
             (cpus, 1, "passive")]  # fmt: skip
    for others, threads, expected in cases:
        for var in ("OMP_WAIT_POLICY", cli.OMP_WAIT_ENV):
            clean_env.delenv(var, raising=False)
        clean_env.setattr(cli, "_cpus_busy_elsewhere", lambda o=others: o)
        assert cli.openmp_wait_policy(threads) == expected, (others, threads)
        # the choice is exported, so child processes (and a second call) make the same one
        assert os.environ[cli.OMP_WAIT_ENV] == expected
        assert os.environ.get("OMP_WAIT_POLICY") == ("PASSIVE" if expected == "passive" else None)


def test_threads_in_argv() -> None:
    assert cli._threads_in_argv(["datafree", "synthesize", "--threads", "3", "-n", "8"]) == 3
    assert cli._threads_in_argv(["datafree", "distill", "--threads=4"]) == 4
    assert cli._threads_in_argv(["datafree", "distill", "--threads", "x"]) is None
    assert cli._threads_in_argv(["datafree", "teachers"]) is None


def test_busy_sample_reads_loadavg() -> None:
    n = cli._cpus_busy_elsewhere(samples=2)
    assert n >= 0 if os.path.exists("/proc/loadavg") else n == -1
