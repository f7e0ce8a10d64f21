"""datafree's own CLI fuzzer: seeded random command lines over every command of the click group.

Commands and their options are discovered from :data:`cli.cli` itself (so a command added later is
fuzzed without touching this file); each option gets values from a pool chosen by its click type
and its name (cards for ``--model``/``--teacher``, datasets for ``--data``, output directories for
``--out``...), including corrupted fixtures of every file type (:func:`make_fuzz_fixtures`),
out-of-range numbers, colliding options (an option given twice, ``--set`` keys that collide with
real options) and taken output directories. Calls run in-process through click's ``CliRunner``.

Outcomes: ``ok`` (exit 0), ``refused`` (exit 2, one ``error:`` line), ``nan`` (exit 3, one line),
``slow`` (stopped by the per-call time limit: not a failure), and failures: ``internal`` (exit 1),
``crash`` (an exception escaped), ``multiline`` / ``bad-exit`` (a refusal of more than one line, an
unexpected exit status). Each distinct failure is reported once with a one-line reproducer
(``$T`` = the fixtures directory).

    PYTHONPATH=. python -m tests.fuzz --calls 1000 --seed 1          # random command lines
    PYTHONPATH=. python -m tests.fuzz --sweep                        # every fixture x every reader
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
FAILURES = ("internal", "crash", "multiline", "bad-exit", "state-leak")

# Options set to something cheap unless the fuzzer picks a value itself (keeps valid runs short).
CHEAP = {
    "--iterations": "1",
    "--epochs": "1",
    "--steps-per-epoch": "1",
    "--num-images": "2",
    "--batch-size": "2",
    "--kd-batch-size": "4",
    "--calib-images": "4",
    "--finetune-epochs": "0",
    "--device": "cpu",
}
CHEAP_FLAGS = ("--quiet", "--no-baseline")

INTS = ["-1", "0", "1", "2", "3", "x", "", "1.5", "2147483648", "99999999999999999999", "1e3", "0x10"]
FLOATS = [
    "-1",
    "0",
    "1e-3",
    "0.1",
    "0.5",
    "0.99",
    "1",
    "2",
    "1e308",
    "-1e308",
    "1e-320",
    "nan",
    "inf",
    "-inf",
    "x",
    "",
]
SET_VALUES = [
    "1",
    "0",
    "-1",
    "2",
    "x",
    "nan",
    "inf",
    "true",
    "0.5",
    "1e38",
    "99999999999999999999",
    "",
    "1,2",
]
EXTRA_SET_KEYS = ["seed", "nope", "batch-size", "optimizer", "calib", "weight_bits", "", "=="]
STUDENTS = [
    "resnet8_half",
    "lenet5",
    "resnet8",
    "wrn16_1",
    "lenet5_half_bn",
    "nosuch",
    "",
    "resnet18",
    "mobilenet_v2",
    "googlenet",
    "inception_v3",
    "vit_b_16",
    "alexnet",
    "squeezenet1_1",
    "torchvision:resnet18",
    "os:getcwd",
]
DEVICES = ["cpu", "cpu", "cuda", "cuda:7", "meta", "tpu", "", "cpu:0", "mps"]
QUANT = ["W8A8", "W4A8", "W4A4", "W2A2", "W9A8", "W8", "x", "", "w4a8"]


class _CallTimeout(BaseException):
    """Raised by the alarm inside a call that runs too long (a slow valid run: not a failure)."""


@dataclass
class Outcome:
    """One call: its arguments, kind of outcome and the line shown."""

    args: list[str]
    kind: str
    exit_code: int | None
    line: str
    seconds: float


@dataclass
class Report:
    """Counts of outcomes and the distinct failures with a reproducer each."""

    calls: int = 0
    kinds: Counter = field(default_factory=Counter)
    failures: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, o: Outcome, t: Path) -> None:  # noqa: D102
        self.calls += 1
        self.kinds[o.kind] += 1
        self.seconds += o.seconds
        if o.kind in FAILURES:
            key = f"{o.kind}: {signature(o.line, t)}"
            self.failures.setdefault(key, o)

    def summary(self, t: Path) -> str:  # noqa: D102
        lines = [
            f"{self.calls} calls in {self.seconds:.0f} s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        ]
        for key, o in self.failures.items():
            lines.append(f"FAIL {key}\n    repro: {reproducer(o.args, t)}")
        return "\n".join(lines)


def signature(line: str, t: Path) -> str:
    """A failure's message with paths and numbers removed: one entry per distinct cause."""
    s = line.replace(str(t), "$T")
    s = re.sub(r"\$T\S*", "PATH", s)
    s = re.sub(r"\d+", "N", s)
    return s[:160]


def reproducer(args: list[str], t: Path) -> str:
    """The one-line shell command that reproduces a call (``T`` = the fixtures directory)."""
    return "datafree " + shlex.join(args).replace(str(t), "$T")


# -- fixtures -------------------------------------------------------------------------------------
def _invoke(args: list[str]) -> Any:
    from click.testing import CliRunner

    from cli import cli

    return CliRunner().invoke(cli, args)


def make_fuzz_fixtures(t: Path, artefacts: bool = False) -> None:
    """The fixtures of ``tests/cli_cases.py`` plus more broken inputs of every file type under ``t``.

    Args:
        t: an empty directory.
        artefacts: also build datafree's own outputs with the CLI (a distill run with its
            checkpoint, int8 and W4A4 cards, a pruned card, a trained generator) and corrupted
            copies of them (about a minute of CPU; the long run uses them).
    """
    from safetensors.torch import load_file, save_file

    from tests.cli_cases import make_fixtures, write_card

    make_fixtures(t)
    c = t / "cards"
    write_card(c / "huge_int.json")
    (c / "huge_int.json").write_text(
        (c / "huge_int.json").read_text().replace('"num_classes": 10', '"num_classes": ' + "9" * 5000)
    )
    write_card(c / "big_int.json", num_classes=10**30)
    write_card(c / "big_shape.json", input_shape=[1, 10**9, 10**9])
    write_card(c / "many_classes.json", num_classes=10**12)
    (c / "deep.json").write_text('{"arch": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write_card(c / "deep_kwargs.json")
    (c / "deep_kwargs.json").write_text(
        (c / "deep_kwargs.json").read_text()[:-1] + ', "arch_kwargs": {"a": ' + "[" * 40 + "]" * 40 + "}}"
    )
    write_card(c / "shapes_int.json", module_shapes={"conv1": 1})
    write_card(c / "shapes_list.json", module_shapes={"conv1": [1, 2]})
    write_card(c / "shapes_bad_name.json", module_shapes={"nosuch": {"out_channels": 3}})
    write_card(c / "shapes_huge.json", module_shapes={"conv1": {"out_channels": 10**12}})
    write_card(c / "shapes_neg.json", module_shapes={"conv1": {"out_channels": -3}})
    write_card(c / "kwargs_list.json", arch_kwargs=[1, 2])
    write_card(c / "int8_int.json", int8=5)
    write_card(c / "int8_list.json", int8=[1])
    write_card(c / "int8_dict.json", int8={"engine": 3})
    (c / "nan_mean.json").write_text((c / "ok.json").read_text().replace("[0.3]", "[NaN]", 1))
    write_card(c / "small_input.json", arch="resnet8", weights="resnet8.pt", input_shape=[1, 2, 2])
    write_card(c / "tiny_lenet.json", input_shape=[1, 4, 4])
    write_card(c / "wide_lenet.json", input_shape=[1, 24, 24])
    (c / "fixed.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten(), nn.Linear(4 * 12 * 12, num_classes))\n"
    )
    torch.manual_seed(0)
    fixed = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5), torch.nn.Flatten(), torch.nn.Linear(4 * 12 * 12, 10)
    )
    torch.save(fixed.state_dict(), c / "fixed.pt")
    write_card(c / "fixed_ok.json", arch="fixed.py:build", weights="fixed.pt")
    write_card(c / "fixed_small.json", arch="fixed.py:build", weights="fixed.pt", input_shape=[1, 4, 4])
    write_card(c / "fixed_wide.json", arch="fixed.py:build", weights="fixed.pt", input_shape=[1, 20, 20])
    write_card(c / "three_channel.json", input_shape=[3, 16, 16], mean=[0.3] * 3, std=[0.3] * 3)
    write_card(c / "sha_int.json", sha256=5)
    write_card(c / "test_acc_str.json", test_accuracy="high")
    write_card(c / "name_list.json", name=["a"])

    ds = t / "ds"
    for name in (
        "missing_shard",
        "counts_more",
        "shards_wrong_type",
        "huge_count",
        "huge_shard_size",
        "inf_logits",
        "float_labels",
        "extra_shard",
        "manifest_deep",
        "manifest_nan",
        "ones_images",
    ):
        shutil.copytree(ds / "good", ds / name)
    (ds / "missing_shard" / "shard-00001.safetensors").unlink()

    def edit(name: str, **fields: Any) -> None:
        m = json.loads((ds / name / "manifest.json").read_text())
        m.update(fields)
        (ds / name / "manifest.json").write_text(json.dumps(m))

    edit("counts_more", num_images=12, num_shards=3)
    edit("shards_wrong_type", shards=5)
    edit("huge_count", num_images=10**30)
    edit("huge_shard_size", shard_size=2**40)
    (ds / "manifest_deep" / "manifest.json").write_text(
        (ds / "manifest_deep" / "manifest.json")
        .read_text()
        .replace('"config": {}', '"config": ' + "[" * 5000 + "]" * 5000)
    )
    (ds / "manifest_nan" / "manifest.json").write_text(
        (ds / "manifest_nan" / "manifest.json").read_text().replace('"seed": 0', '"seed": NaN')
    )
    p = ds / "inf_logits" / "shard-00000.safetensors"
    sh = load_file(str(p))
    sh["teacher_logits"][0, 0] = float("inf")
    save_file(sh, str(p))
    p = ds / "float_labels" / "shard-00000.safetensors"
    sh = load_file(str(p))
    sh["labels"] = sh["labels"].float()
    save_file(sh, str(p))
    shutil.copy(ds / "good" / "shard-00000.safetensors", ds / "extra_shard" / "shard-00007.safetensors")

    n = t / "npz"
    n.mkdir()
    x = (np.random.default_rng(0).random((6, 16, 16)) * 255).astype(np.uint8)
    np.savez(n / "good.npz", images=x, labels=np.arange(6) % 10)
    np.savez(n / "str_labels.npz", images=x, labels=np.array(["a", "b", "c", "d", "e", "f"]))
    np.savez(n / "float_labels.npz", images=x, labels=np.linspace(0, 1, 6))
    np.savez(n / "neg_labels.npz", images=x, labels=-np.ones(6, dtype=np.int64))
    np.savez(n / "big_labels.npz", images=x, labels=np.full(6, 10**12, dtype=np.int64))
    np.savez(n / "labels_2d.npz", images=x, labels=np.zeros((6, 2), dtype=np.int64))
    np.savez(n / "images_1d.npz", images=np.zeros(6), labels=np.zeros(6, dtype=np.int64))
    np.savez(n / "images_5d.npz", images=np.zeros((6, 1, 1, 16, 16)), labels=np.zeros(6, dtype=np.int64))
    np.savez(
        n / "images_nan.npz",
        images=np.full((6, 16, 16), np.nan, dtype=np.float32),
        labels=np.zeros(6, dtype=np.int64),
    )
    np.savez(n / "images_str.npz", images=np.array(["x"] * 6), labels=np.zeros(6, dtype=np.int64))
    np.savez(
        n / "images_bool.npz", images=np.zeros((6, 16, 16), dtype=bool), labels=np.zeros(6, dtype=np.int64)
    )
    np.savez(
        n / "images_c7.npz",
        images=np.zeros((6, 16, 16, 7), dtype=np.uint8),
        labels=np.zeros(6, dtype=np.int64),
    )
    np.savez(
        n / "empty.npz", images=np.zeros((0, 16, 16), dtype=np.uint8), labels=np.zeros(0, dtype=np.int64)
    )
    np.savez(n / "scalar.npz", images=np.float32(3), labels=np.int64(1))
    np.savez(n / "object.npz", images=np.array([{}], dtype=object), labels=np.zeros(1))
    np.savez(n / "no_labels.npz", images=x)
    (n / "not_npz.npz").write_bytes(b"PK\x03\x04garbage")
    f = t / "folders"
    for name in ("good", "empty_class", "corrupt_png", "mixed_sizes", "no_classes", "txt_only"):
        (f / name).mkdir(parents=True)
    from PIL import Image

    for cls in ("0", "1"):
        (f / "good" / cls).mkdir()
        Image.fromarray(x[0]).save(f / "good" / cls / "a.png")
    (f / "empty_class" / "0").mkdir()
    (f / "corrupt_png" / "0").mkdir()
    (f / "corrupt_png" / "0" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (f / "mixed_sizes" / "0").mkdir()
    Image.fromarray(x[0]).save(f / "mixed_sizes" / "0" / "a.png")
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(f / "mixed_sizes" / "0" / "b.png")
    (f / "txt_only" / "0").mkdir()
    (f / "txt_only" / "0" / "a.png.txt").write_text("x")
    (f / "no_classes" / "a.png").write_bytes(b"")

    (t / "fuzz").mkdir()
    (t / "sweep").mkdir()
    o = t / "out"
    (o / "loop").symlink_to(o / "loop")
    (o / "empty").mkdir()
    g = t / "gen"
    g.mkdir()
    (g / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    save_file({"x": torch.zeros(2)}, str(g / "foreign.safetensors"))
    if artefacts:
        _make_artefacts(t)


def _make_artefacts(t: Path) -> None:
    """Our own outputs (and corrupted copies), made with the CLI itself."""
    from safetensors.torch import load_file, save_file

    a = t / "runs"
    cpu = ["-q", "--device", "cpu"]
    kd = ["--epochs", "1", "--steps-per-epoch", "1", "--kd-batch-size", "4", *cpu]
    quantize = ["quantize", "--model", "resnet8_digits", "--calib", "noise", "--calib-images", "4"]
    steps = [
        ["distill", "--data", f"{t}/ds/good", "--out", f"{a}/distill", *kd],
        [*quantize, "--int8", "--out", f"{a}/q8", *cpu],
        [*quantize, "-w", "4", "-a", "4", "--out", f"{a}/w4a4", *cpu],
        ["prune", "--model", "resnet8_digits", "--ratio", "0.5", "--epochs", "0", "--importance", "l1",
         "--out", f"{a}/pruned", *cpu],
        ["synthesize", "-m", "dafl", "-n", "2", *kd[:6], "--out", f"{a}/gen_ds", *cpu],
    ]  # fmt: skip
    for args in steps:
        r = _invoke(args)
        if r.exit_code != 0:
            print(
                f"fixture step failed ({r.exit_code}): {' '.join(args)}: {r.output.strip()[-300:]}",
                file=sys.stderr,
            )
    ck = a / "distill" / "checkpoint.pt"
    if ck.is_file():
        for name, edit in {
            "rng_no_cpu": lambda s: s.update(rng={"cuda": []}),
            "rng_float": lambda s: s.update(rng={"cpu": torch.zeros(3)}),
            "rng_int": lambda s: s.update(rng=5),
            "epoch_str": lambda s: s.update(epoch="one"),
            "epoch_huge": lambda s: s.update(epoch=10**12),
            "history_int": lambda s: s.update(history=5),
            "source_list": lambda s: s.update(source=[1]),
            "ranks_bad": lambda s: s.update(rng_ranks=[5]),
        }.items():
            d = a / f"ckpt_{name}"
            shutil.copytree(a / "distill", d)
            s = torch.load(d / "checkpoint.pt", weights_only=True)
            edit(s)
            torch.save(s, d / "checkpoint.pt")
    gdir = a / "gen_ds_generator"
    gfile = next(iter(sorted(gdir.glob("*.safetensors"))), None) if gdir.is_dir() else None
    if gfile is not None:
        g = t / "gen"
        shutil.copy(gfile, g / "ok.safetensors")
        for meta in gdir.glob("*.json"):
            shutil.copy(meta, g / meta.name)
        w = load_file(str(gfile))
        k = next(iter(w))
        w[k] = w[k].flatten()[:1].clone()
        save_file(w, str(g / "reshaped.safetensors"))
        w = load_file(str(gfile))
        w[k] = torch.full_like(w[k], float("nan"))
        save_file(w, str(g / "nan.safetensors"))


def pools(t: Path) -> dict[str, list[str]]:
    """The values of the options that name files, by kind (paths as strings)."""
    cards = sorted(str(p) for p in (t / "cards").glob("*.json"))
    cards += [str(p / "model.json") for p in sorted((t / "runs").glob("*")) if (p / "model.json").is_file()]
    cards += [str(p) for p in sorted((t / "runs").glob("*/int8/model.json"))]
    cards += ["resnet8_digits", "lenet5_digits", "nosuch_teacher", "", str(t / "ds" / "good"), "/"]
    datasets = sorted(str(p) for p in (t / "ds").iterdir() if p.is_dir()) + [
        str(t / "nope"),
        str(t / "cards" / "ok.json"),
    ]
    labelled = sorted(str(p) for p in (t / "npz").iterdir()) + sorted(
        str(p) for p in (t / "folders").iterdir()
    )
    gens = sorted(str(p) for p in (t / "gen").iterdir()) + [
        str(t / "nope.safetensors"),
        str(t / "ds" / "good"),
    ]
    return {"card": cards, "dataset": datasets, "labelled": labelled, "generator": gens}


# -- command discovery and random arguments ---------------------------------------------------------
def commands() -> dict[str, click.Command]:
    """Every command of the ``datafree`` click group (discovered, not listed)."""
    from cli import cli

    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}  # type: ignore[misc]


def _flag(p: click.Parameter) -> bool:
    return isinstance(p, click.Option) and p.is_flag


def _opt_name(p: click.Parameter) -> str:
    return max(p.opts, key=len)


def set_keys() -> list[str]:
    """``--set`` keys: every backend's config fields, plus keys that collide or do not exist."""
    import dataclasses

    from generators import GENERATORS, method_class

    keys = {f.name for n in GENERATORS.names() for f in dataclasses.fields(method_class(n).Config)}
    return sorted(keys) + EXTRA_SET_KEYS


class Fuzzer:
    """Draws random command lines for the commands of the click group; one ``random.Random(seed)``."""

    def __init__(self, t: Path, seed: int) -> None:
        self.t = t
        self.rng = random.Random(seed)
        self.cmds = commands()
        self.pools = pools(t)
        self.keys = set_keys()
        self.n = 0

    def out_path(self) -> str:
        """A fresh output path, or a taken one (a copy of a fixture, so fixtures stay as they are)."""
        self.n += 1
        r, t = self.rng.random(), self.t
        fresh = t / "fuzz" / f"o{self.n}"
        if r < 0.6:
            return str(fresh)
        kinds = [
            t / "out" / "foreign",
            t / "ds" / "good",
            t / "ds" / "missing_shard",
            t / "out" / "corrupt_ckpt",
        ]
        kinds += sorted((t / "runs").glob("*")) if (t / "runs").is_dir() else []
        src = self.rng.choice(kinds)
        if r < 0.9 and src.is_dir():
            shutil.copytree(src, fresh, symlinks=True)
            return str(fresh)
        return self.rng.choice(
            [
                str(t / "out" / "a_file"),
                "/",
                str(t / "out" / "loop"),
                str(t / "out" / "loop" / "x"),
                "/proc/datafree-x",
                str(t / "out" / "a_file" / "sub"),
                str(fresh) + ".npz",
            ]
        )

    def value(self, cmd: str, p: click.Parameter) -> str:
        """A value for parameter ``p`` of command ``cmd``, by name, then by click type."""
        name = (p.name or "").replace("_", "-")
        rng, pl = self.rng, self.pools
        if name == "out":
            return self.out_path()
        if name in ("teacher", "model"):
            return rng.choice(pl["card"])
        if name in ("data", "dataset"):
            pool = pl["dataset"] + (pl["labelled"] if cmd == "evaluate" or rng.random() < 0.1 else [])
            return rng.choice(pool)
        if name == "calib":
            return rng.choice(
                [
                    "zeroq",
                    "deepinversion",
                    "noise",
                    "digits",
                    "nosuch",
                    "",
                    *pl["dataset"][:4],
                    *pl["labelled"][:2],
                ]
            )
        if name in ("generator-path", "generator"):
            return rng.choice(pl["generator"])
        if name == "method":
            from generators import GENERATORS

            return rng.choice([*GENERATORS.names(), "nosuch", "", "DeepInversion"])
        if name == "student":
            return rng.choice(STUDENTS)
        if name == "device":
            return rng.choice(DEVICES)
        if name == "options":
            key = rng.choice(self.keys)
            return f"{key}={rng.choice(SET_VALUES)}" if rng.random() < 0.95 else key
        if name == "quantize":
            return rng.choice(QUANT)
        return self.by_type(p)

    def by_type(self, p: click.Parameter) -> str:
        """A value for ``p`` from its click type."""
        rng, pl = self.rng, self.pools
        ty = p.type
        if isinstance(ty, click.Choice):
            return rng.choice([*ty.choices, "nosuch"])
        if isinstance(ty, click.IntRange):
            lo = ty.min if ty.min is not None else -5
            hi = ty.max if ty.max is not None else lo + 5
            return rng.choice(
                [str(lo), str(lo + 1), str(min(hi, lo + 2)), str(lo - 1), str(hi + 1), *INTS[:6]]
            )
        if isinstance(ty, click.types.IntParamType):
            return rng.choice(INTS)
        if isinstance(ty, click.types.FloatParamType):
            return rng.choice(FLOATS)
        if isinstance(ty, click.Path):
            return rng.choice([*pl["dataset"], *pl["card"][:5], str(self.t / "fuzz" / f"p{self.n}")])
        return rng.choice(["", "x", "1", "/", "..", *pl["card"][:3]])

    def draw(self) -> list[str]:
        """One random command line."""
        rng = self.rng
        name = rng.choice(sorted(self.cmds))
        cmd = self.cmds[name]
        args: list[str] = [name]
        chosen: dict[str, list[str]] = {}
        options = [
            p
            for p in cmd.params
            if isinstance(p, click.Option) and _opt_name(p) not in ("--help", "--version")
        ]
        for p in options:
            if p.required:
                chosen[_opt_name(p)] = [_opt_name(p), self.value(name, p)]
        for p in rng.sample(options, k=min(len(options), rng.randint(0, 4))) if options else []:
            o = _opt_name(p)
            if _flag(p):
                chosen[o] = [o]
            else:
                chosen.setdefault(o, [])
                reps = 2 if rng.random() < 0.15 or getattr(p, "multiple", False) and rng.random() < 0.5 else 1
                for _ in range(reps):  # an option given twice: a collision
                    chosen[o] += [o, self.value(name, p)]
        for p in options:  # cheap values for what the fuzzer did not pick
            o = _opt_name(p)
            if o in CHEAP and o not in chosen:
                chosen[o] = [o, CHEAP[o]]
            if o in CHEAP_FLAGS and o not in chosen and rng.random() < 0.95:
                chosen[o] = [o]
        for toks in chosen.values():
            args += toks
        for p in cmd.params:
            if isinstance(p, click.Argument):
                args.append(self.value(name, p))
        return args


# -- running ------------------------------------------------------------------------------------------
def run_call(args: list[str], limit_s: float) -> Outcome:
    """Run one command line in-process and classify what happened."""
    from click.testing import CliRunner

    from cli import cli

    def alarm(signum: int, frame: Any) -> None:
        raise _CallTimeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    t0 = time.perf_counter()
    try:
        r = CliRunner().invoke(cli, args, prog_name="datafree")
    except _CallTimeout:
        # A call cut in-process can leave torch's grad mode off (a killed process would just end):
        # restore it so that the next call starts as a fresh process would.
        torch.set_grad_enabled(True)
        return Outcome(args, "slow", None, "", time.perf_counter() - t0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        torch.set_num_threads(1)  # a valid --threads N lasts beyond the call
        from datafree.progress import set_quiet

        set_quiet(False)
    dt = time.perf_counter() - t0
    if not torch.is_grad_enabled():  # a finished call must not leave grad mode off: a real bug
        torch.set_grad_enabled(True)
        return Outcome(args, "state-leak", r.exit_code, "the call left torch grad mode disabled", dt)
    err = r.stderr.strip()
    lines = err.splitlines()
    first = lines[0] if lines else ""
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return Outcome(args, "crash", r.exit_code, f"{type(r.exception).__name__}: {r.exception}"[:300], dt)
    code = r.exit_code
    if code == 0:
        return Outcome(args, "ok", 0, "", dt)
    # exit 1 with one "error:" line is a deploy export that failed its own verification (documented)
    verified_export_failure = code == 1 and len(lines) == 1 and first.startswith("error: ")
    if first.startswith("internal error") or (code == 1 and not verified_export_failure):
        return Outcome(args, "internal", code, first, dt)
    if code in (2, 3):
        if len(lines) != 1 or not first.startswith("error: ") or "Traceback" in r.output:
            return Outcome(args, "multiline", code, " | ".join(lines)[:300], dt)
        return Outcome(args, "refused" if code == 2 else "nan", code, first, dt)
    return Outcome(args, "bad-exit", code, first or r.output[-200:], dt)


def random_run(t: Path, seed: int, calls: int, limit_s: float = 20.0, log: Any = None) -> Report:
    """``calls`` random command lines from ``seed``; returns the report."""
    fz = Fuzzer(t, seed)
    return _run_calls(t, (fz.draw() for _ in range(calls)), limit_s, log)


def _run_calls(t: Path, calls: Iterator[list[str]], limit_s: float, log: Any) -> Report:
    """Run each command line (drawn one at a time), logging one line a call to ``log``; the report."""
    rep = Report()
    for args in calls:
        o = run_call(args, limit_s)
        rep.add(o, t)
        if log is not None:
            print(
                f"{o.kind:9s} {o.seconds:6.2f}s {reproducer(args, t)}  -> {o.line[:160]}",
                file=log,
                flush=True,
            )
    return rep


def sweep_calls(t: Path) -> Iterator[list[str]]:
    """Every corrupted fixture against every command that reads that kind of file."""
    pl = pools(t)
    kd = ["--epochs", "1", "--steps-per-epoch", "1", "--kd-batch-size", "4", "-q", "--device", "cpu"]
    n = iter(range(10**9))

    def out() -> str:
        return str(t / "sweep" / f"o{next(n)}")

    cpu = ["-q", "--device", "cpu"]

    def quantize(model: str, calib: str) -> list[str]:
        return ["quantize", "--model", model, "--calib", calib, "--calib-images", "4", *cpu, "--out", out()]

    for card in pl["card"]:
        fast = ["--teacher", card, "-m", "fast", "-n", "2"]
        yield ["evaluate", "--model", card, "--device", "cpu"]
        yield ["synthesize", *fast, "--batch-size", "2", "--iterations", "1", *cpu, "--out", out()]
        yield ["synthesize", "--teacher", card, "-m", "dafl", "-n", "2", *kd, "--out", out()]
        yield ["distill", "--teacher", card, "--data", f"{t}/ds/good", *kd, "--out", out()]
        yield [
            "prune",
            "--model",
            card,
            "--ratio",
            "0.5",
            "--epochs",
            "0",
            "--importance",
            "l1",
            "--data",
            f"{t}/ds/good",
            "-q",
            "--device",
            "cpu",
            "--out",
            out(),
        ]
        yield quantize(card, "noise")
        yield ["compress", *fast, "--iterations", "1", *kd, "--no-baseline", "--out", out()]
    for data in pl["dataset"]:
        yield ["distill", "--data", data, *kd, "--out", out()]
        yield ["export", data, "--format", "npz", "--out", out() + ".npz"]
        yield ["export", data, "--format", "imagefolder", "--out", out()]
        yield [
            "prune",
            "--model",
            "resnet8_digits",
            "--ratio",
            "0.5",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--data",
            data,
            "-q",
            "--device",
            "cpu",
            "--out",
            out(),
        ]
        yield quantize("resnet8_digits", data)
        yield ["evaluate", "--model", "resnet8_digits", "--data", data, "--device", "cpu"]
    for data in pl["labelled"]:
        yield ["evaluate", "--model", "resnet8_digits", "--data", data, "--device", "cpu"]
        yield quantize("resnet8_digits", data)
    for gen in pl["generator"]:
        yield [
            "synthesize",
            "-m",
            "dafl",
            "--generator",
            gen,
            "-n",
            "2",
            "-q",
            "--device",
            "cpu",
            "--out",
            out(),
        ]
    runs = sorted((t / "runs").glob("ckpt_*")) if (t / "runs").is_dir() else []
    for d in [*runs, t / "out" / "corrupt_ckpt", t / "out" / "foreign_ckpt"]:
        copy = Path(out())
        shutil.copytree(d, copy)
        yield ["distill", "--data", f"{t}/ds/good", *kd, "--out", str(copy)]
    for o in ["/", str(t / "out" / "loop"), str(t / "out" / "loop" / "x"), str(t / "out" / "a_file")]:
        yield ["export", f"{t}/ds/good", "--format", "npz", "--out", o]
        yield ["export", f"{t}/ds/good", "--format", "imagefolder", "--out", o]
        yield ["distill", "--data", f"{t}/ds/good", *kd, "--out", o]
        yield ["synthesize", "-n", "2", "--iterations", "1", "-q", "--out", o]


def sweep_run(t: Path, limit_s: float = 30.0, log: Any = None) -> Report:
    """Run :func:`sweep_calls`; returns the report."""
    return _run_calls(t, sweep_calls(t), limit_s, log)


def main() -> None:
    """Command line: ``python -m tests.fuzz [--calls N] [--seed S] [--sweep] [--artefacts]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seed", type=int, action="append", default=None)
    ap.add_argument(
        "--sweep", action="store_true", help="every corrupted fixture against every command reading it"
    )
    ap.add_argument(
        "--artefacts", action="store_true", help="also fuzz with datafree's own outputs (slower setup)"
    )
    ap.add_argument("--limit", type=float, default=20.0, help="seconds per call before it counts as slow")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = Path(tempfile.mkdtemp(prefix="datafree-fuzz-"))
    os.chdir(t)  # default output paths (runs/compress) land in the scratch directory
    make_fuzz_fixtures(t, artefacts=a.artefacts or a.sweep)
    log = sys.stderr if a.verbose else None
    results = []
    for seed in a.seed or [0]:
        rep = random_run(t, seed, a.calls, a.limit, log)
        print(f"seed {seed}: " + rep.summary(t), flush=True)
        results.append(
            {
                "run": f"random seed {seed}",
                "calls": rep.calls,
                "outcomes": dict(rep.kinds),
                "failures": {k: reproducer(o.args, t) for k, o in rep.failures.items()},
            }
        )
    if a.sweep:
        rep = sweep_run(t, max(a.limit, 30.0), log)
        print("sweep: " + rep.summary(t), flush=True)
        results.append(
            {
                "run": "sweep",
                "calls": rep.calls,
                "outcomes": dict(rep.kinds),
                "failures": {k: reproducer(o.args, t) for k, o in rep.failures.items()},
            }
        )
    if a.json is not None:
        a.json.write_text(
            json.dumps(
                {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}, indent=2
            )
            + "\n"
        )
    shutil.rmtree(t, ignore_errors=True)
    if any(r["failures"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
