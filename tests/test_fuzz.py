"""Our own CLI fuzzer (tests/fuzz.py) in the test suite.

The default suite runs a short seeded run (``DATAFREE_FUZZ_CALLS``, default 40 command lines) over
every command of the click group; ``-m slow`` runs the long one: 1,000 calls for each of two seeds
and every corrupted fixture against every command that reads it. A failure names each distinct
cause once with a one-line reproducer (``$T`` = the fixtures directory).
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz import commands, make_fuzz_fixtures, random_run, sweep_run

SHORT_CALLS = int(os.environ.get("DATAFREE_FUZZ_CALLS", "40"))
LONG_CALLS = int(os.environ.get("DATAFREE_FUZZ_LONG_CALLS", "1000"))
SEED = int(os.environ.get("DATAFREE_FUZZ_SEED", "20261201"))


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    t = tmp_path_factory.mktemp("fuzz")
    make_fuzz_fixtures(t)
    cwd = os.getcwd()
    os.chdir(t)  # compress's default --out (runs/compress) lands here
    yield t
    os.chdir(cwd)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    t = tmp_path_factory.mktemp("fuzzfull")
    make_fuzz_fixtures(t, artefacts=True)
    cwd = os.getcwd()
    os.chdir(t)
    yield t
    os.chdir(cwd)


def test_every_command_is_discovered():
    names = set(commands())
    assert {"synthesize", "distill", "compress", "prune", "quantize", "export", "evaluate"} <= names


def test_short_fuzz_run_has_no_internal_error(light):
    rep = random_run(light, SEED, SHORT_CALLS, limit_s=10.0)
    assert rep.calls == SHORT_CALLS
    assert not rep.failures, rep.summary(light)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_long_fuzz_run_has_no_internal_error(full, seed):
    rep = random_run(full, seed, LONG_CALLS, limit_s=20.0)
    print(f"seed {seed}: {rep.summary(full)}")
    assert not rep.failures, rep.summary(full)


@pytest.mark.slow
def test_every_corrupted_fixture_against_every_reader(full):
    rep = sweep_run(full, limit_s=30.0)
    print(f"sweep: {rep.summary(full)}")
    assert not rep.failures, rep.summary(full)
