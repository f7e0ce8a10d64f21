"""Bad input through the CLI: one line on stderr, exit status 2, no traceback, outputs untouched.

Every case of :data:`tests.cli_cases.CASES` runs in-process (click's CliRunner: the same code as
``python cli.py``); a few also run as a real subprocess. A property-based test feeds random
arguments and random card contents and checks that nothing ends in an unhandled exception.

Allowed exit codes (docs/failures.md): 0 done, 2 bad input / usage error / unreadable or
unwritable file, 3 numerical blow-up (NaN/inf loss). 1 means an internal error (a bug) and fails
these tests; 130 is an interrupt.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import cli
from tests.cli_cases import CASES, LENET_CARD, fill, make_fixtures

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {0, 2, 3}
FUZZ_EXAMPLES = int(os.environ.get("DATAFREE_FUZZ_EXAMPLES", "40"))  # more for a bug hunt


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    t = tmp_path_factory.mktemp("bad")
    make_fixtures(t)
    return t


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in root.rglob("*")
    }


@pytest.mark.parametrize("what, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(fx, what, args, expected):
    before = _snapshot(fx)
    r = CliRunner().invoke(cli, fill(args, fx))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expected in lines[0]
    assert "Traceback" not in r.output
    assert _snapshot(fx) == before


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True
    )


def test_real_processes_print_one_line_and_no_traceback(fx):
    before = _snapshot(fx)
    # one real process (a python start costs seconds); CliRunner covers every case above
    for args, expected in (
        (
            [
                "distill",
                "--teacher",
                f"{fx}/cards/pickled.json",
                "--data",
                f"{fx}/ds/good",
                "--out",
                f"{fx}/out/corrupt_ckpt",
            ],
            "Pass --trust-checkpoint if you trust its source",
        ),
    ):
        r = _run_cli(*args)
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert expected in r.stderr
    assert _snapshot(fx) == before


def test_trust_checkpoint_loads_a_pickled_model(fx):
    # a hand-written card names no data (no "trained_on"): the digits it was trained on are given explicitly
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            f"{fx}/cards/pickled.json",
            "--trust-checkpoint",
            "--json",
            "--data",
            "digits",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["num_samples"] == 360


# -- property-based: random arguments and random cards never end in an unhandled exception --------

_INTS = st.sampled_from(["-1", "0", "1", "2", "3", "x", "", "1.5", "99999999999999999999999"])
_FLOATS = st.sampled_from(["-1", "0", "1e-3", "0.1", "1e30", "nan", "inf", "x", ""])
_WORDS = st.sampled_from(
    ["", "x", "resnet8_digits", "lenet5_digits", "deepinversion", "lenet5", "a:b", "..", "/"]
)
_SET_KEYS = st.sampled_from(
    ["bn_weight", "iterations", "batch_size", "lr", "jitter", "flip", "beta1", "warmup", "nope"]
)
_OPTIONS = {
    "--num-images": st.sampled_from(["-1", "0", "1", "2", "3", "x"]),
    "--batch-size": _INTS,
    "--iterations": st.sampled_from(["-1", "0", "1", "2"]),
    "--epochs": st.sampled_from(["-1", "0", "1", "2"]),
    "--steps-per-epoch": st.sampled_from(["-1", "0", "1", "2"]),
    "--kd-batch-size": st.sampled_from(["-1", "0", "1", "2", "8"]),
    "--lr": _FLOATS,
    "--temperature": _FLOATS,
    "--seed": _INTS,
    "--threads": _INTS,
    "--teacher": _WORDS,
    "--student": _WORDS,
    "--method": _WORDS,
    "--device": st.sampled_from(["cpu", "cuda", "cuda:7", "tpu", "", "meta"]),
    "--set": st.builds(
        lambda k, v: f"{k}={v}", _SET_KEYS, st.sampled_from(["1", "0", "-1", "x", "nan", "true", "0.5"])
    ),
    "--format": st.sampled_from(["npz", "imagefolder", "tiff"]),
}
_counter = itertools.count()


@st.composite
def _command_lines(draw):
    cmd = draw(st.sampled_from(["synthesize", "distill", "compress", "evaluate", "export"]))
    opts = draw(st.lists(st.sampled_from(sorted(_OPTIONS)), max_size=5))
    args = [tok for o in opts for tok in (o, draw(_OPTIONS[o]))]
    return cmd, args


@given(line=_command_lines(), out_kind=st.sampled_from(["new", "dataset", "foreign"]))
@settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_command_lines_never_crash(fx, line, out_kind):
    cmd, args = line
    out = {
        "new": fx / "fuzz" / str(next(_counter)),
        "dataset": fx / "ds" / "good",
        "foreign": fx / "out" / "foreign",
    }
    base = {
        "synthesize": ["--out", str(out[out_kind]), "-n", "2", "--iterations", "1", "--batch-size", "2"],
        "distill": [
            "--out",
            str(out[out_kind]),
            "--data",
            str(fx / "ds" / "good"),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
        ],
        "compress": [
            "--out",
            str(out[out_kind]),
            "-n",
            "2",
            "--iterations",
            "1",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--no-baseline",
            "--kd-batch-size",
            "4",
        ],  # fmt: skip
        "evaluate": ["--model", "resnet8_digits"],
        "export": [str(fx / "ds" / "good"), "--out", str(out["new"]) + ".npz", "--format", "npz"],
    }[cmd]
    if cmd == "export":
        args = [a for a in args if a not in _OPTIONS or a == "--format"]
    r = CliRunner().invoke(
        cli, [cmd, *base, "-q", *args] if cmd not in ("evaluate", "export") else [cmd, *base, *args]
    )
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception), r.output)
    assert r.exit_code in ALLOWED, (cmd, args, r.output)
    assert "Traceback" not in r.output
    if r.exit_code != 0:
        assert len(r.stderr.strip().splitlines()) == 1, (cmd, args, r.stderr)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_CARD_VALUES = {
    "arch": st.sampled_from(
        ["lenet5", "resnet8", "nosuch", "os:getcwd", "json:loads", "raises.py:build", "x.py:f", ":"]
    ),
    "weights": st.sampled_from(
        ["lenet5.pt", "resnet8.pt", "truncated.pt", "pickled.pt", "garbage.safetensors", "", "."]
    ),
    "num_classes": st.sampled_from([10, 0, -1, 3, True, "10", 10.0]),
    "input_shape": st.sampled_from(
        [[1, 16, 16], [1, 16], [0, 16, 16], [3, 32, 32], [1, 16, True], "1,16,16"]
    ),
    "mean": st.sampled_from([[0.3], [], [0.3, 0.3], ["a"], [float("nan")]]),
    "std": st.sampled_from([[0.3], [0.0], [-1.0], [float("inf")]]),
    "arch_kwargs": st.sampled_from([{}, {"width": 2}, [], {"num_classes": 3}]),
    "sha256": st.sampled_from([None, "0" * 64, 5]),
}


@given(
    changes=st.dictionaries(st.sampled_from(sorted(_CARD_VALUES)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: _CARD_VALUES[k] for k in keys})
    ),
    drop=st.lists(st.sampled_from(sorted(LENET_CARD)), max_size=2),
    junk=st.dictionaries(st.text(min_size=1, max_size=5), _JSON, max_size=2),
    command=st.sampled_from(["evaluate", "synthesize"]),
)
@settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_cards_never_crash(fx, changes, drop, junk, command):
    card = {**LENET_CARD, **junk, **changes}
    for k in drop:
        card.pop(k, None)
    path = fx / "cards" / f"fuzz-{next(_counter)}.json"
    path.write_text(json.dumps(card))
    if command == "evaluate":
        args = ["evaluate", "--model", str(path)]
    else:
        args = [
            "synthesize",
            "--teacher",
            str(path),
            "-n",
            "1",
            "--iterations",
            "1",
            "--out",
            str(fx / "fuzz" / path.stem),
        ]
    r = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert r.exception is None or isinstance(r.exception, SystemExit), (card, repr(r.exception), r.output)
    assert r.exit_code in ALLOWED, (card, r.output)
    if r.exit_code != 0:
        assert len(r.stderr.strip().splitlines()) == 1, (card, r.stderr)
