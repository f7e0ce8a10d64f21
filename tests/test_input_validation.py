"""Regression tests of issue 17: every class the fuzzer and the hand-run audit found.

Each internal error and each silent misbehaviour is now a one-line refusal (exit 2), a NaN stop
(exit 3) or a working run. Every refusal also checks that the output it names was not created.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.errors import UserInputError

KD1 = ["--epochs", "1", "--steps-per-epoch", "1", "--kd-batch-size", "4", "-q", "--device", "cpu"]
PRUNE_HALF = ["prune", "--model", "resnet8_digits", "--ratio", "0.5"]  # prune half the teacher's channels


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from tests.fuzz import make_fuzz_fixtures

    t = tmp_path_factory.mktemp("v")
    make_fuzz_fixtures(t)
    return t


def _refused(args: list[str], expected: str, code: int = 2) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


# -- option values outside what the machine holds ------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["synthesize", "-n", "2", "--threads", "99999999999999999999"],
        ["synthesize", "-n", "99999999999999999999"],
        ["synthesize", "-n", "2147483648"],
        ["distill", "--method", "fast", "--epochs", "2147483648"],
        [*PRUNE_HALF, "--epochs", "99999999999999999999"],
        ["quantize", "--finetune-epochs", "2147483648"],
    ],
)
def test_huge_ints_are_refused(tmp_path, args):
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 2 and ("must be at most" in r.stderr or "not in the range" in r.stderr), r.output
    assert not out.exists()


def test_huge_int_in_a_set_option_is_refused(tmp_path):
    _refused(
        ["synthesize", "-n", "2", "--out", tmp_path / "o", "--set", "iterations=99999999999999999999"],
        "at most",
    )
    assert not (tmp_path / "o").exists()


# -- card and JSON contents ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "card, expected",
    [
        ("huge_int", "invalid model card"),
        ("big_int", "is too large"),
        ("many_classes", "num_classes must be in"),
        ("big_shape", "input_shape height/width must be in"),
        ("deep", "nested too deeply"),
        ("deep_kwargs", "nested too deeply"),
        ("shapes_int", "module_shapes['conv1'] must be an object"),
        ("shapes_list", "module_shapes['conv1'] must be an object"),
        ("shapes_huge", "module_shapes['conv1']['out_channels'] must be in"),
        ("shapes_neg", "module_shapes['conv1']['out_channels'] must be in"),
        ("kwargs_list", "field 'arch_kwargs' must be dict"),
        ("int8_int", "field 'int8' must be an object"),
        ("int8_list", "field 'int8' must be an object"),
        ("nan_mean", "invalid model card"),
        ("sha_int", "field 'sha256' must be str"),
        ("test_acc_str", "field 'test_accuracy' must be a number"),
        ("fixed_small", "input_shape [1, 4, 4] failed"),
        ("fixed_wide", "input_shape [1, 20, 20] failed"),
    ],
)
def test_bad_card_contents_are_one_line(fx, card, expected):
    _refused(["evaluate", "--model", fx / "cards" / f"{card}.json"], expected)


def test_huge_int_and_deep_nesting_in_a_manifest(fx, tmp_path):
    for name, expected in (
        ("manifest_deep", "nested too deeply"),
        ("manifest_nan", "unreadable manifest"),
        ("huge_count", "too large"),
        ("huge_shard_size", "shard_size"),
        ("shards_wrong_type", "shards must be list"),
    ):
        _refused(["distill", "--data", fx / "ds" / name, "--out", tmp_path / name, *KD1], expected)
        assert not (tmp_path / name).exists()


# -- checkpoints and resume state ---------------------------------------------------------------
def _good_run(fx, out):
    r = CliRunner().invoke(cli, ["distill", "--data", str(fx / "ds" / "good"), "--out", str(out), *KD1])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "edit",
    [
        {"rng": {"cuda": []}},
        {"rng": {"cpu": torch.zeros(3)}},
        {"rng": 5},
        {"rng_ranks": [5]},
        {"epoch": "one"},
        {"epoch": 10**12},
        {"history": 5},
    ],
    ids=["no-cpu-key", "float-state", "int", "ranks", "epoch-str", "epoch-huge", "history-int"],
)
def test_damaged_checkpoint_is_refused(fx, tmp_path, edit):
    out = tmp_path / "run"
    _good_run(fx, out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state.update(edit)
    torch.save(state, out / "checkpoint.pt")
    _refused(["distill", "--data", fx / "ds" / "good", "--out", out, *KD1], "checkpoint")


def test_resume_refuses_another_data_source(fx, tmp_path):
    other = tmp_path / "B"
    shutil.copytree(fx / "ds" / "good", other)
    from safetensors.torch import load_file, save_file

    p = other / "shard-00000.safetensors"
    sh = load_file(str(p))
    sh["images"] = sh["images"].flip(-1).contiguous()  # same manifest, other pixels
    save_file(sh, str(p))
    out = tmp_path / "run"
    _good_run(fx, out)
    before = (out / "checkpoint.pt").read_bytes()
    _refused(["distill", "--data", other, "--out", out, *KD1], "differs in: data source")
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_another_teacher_or_student(fx, tmp_path):
    out = tmp_path / "run"
    _good_run(fx, out)
    _refused(
        ["distill", "--data", fx / "ds" / "good", "--out", out, "--student", "lenet5_half_bn", *KD1],
        "differs in: student",
    )


# -- data -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("str_labels", "labels must be a 1-D integer array"),
        ("float_labels", "labels must be a 1-D integer array"),
        ("labels_2d", "labels must be a 1-D integer array"),
        ("neg_labels", "labels must lie in [0, 10)"),
        ("big_labels", "labels must lie in [0, 10)"),
        ("images_1d", "images must be"),
        ("images_5d", "images must be"),
        ("images_nan", "NaN"),
        ("images_str", "images must be"),
        ("images_c7", "cannot map 7-channel images"),
        ("empty", "N > 0"),
        ("scalar", "images must be"),
        ("object", "not a readable .npz"),
        ("no_labels", "needs arrays"),
        ("not_npz", "not a readable .npz"),
    ],
)
def test_bad_npz_is_one_line(fx, name, expected):
    _refused(["evaluate", "--model", "resnet8_digits", "--data", fx / "npz" / f"{name}.npz"], expected)


# mixed image sizes are valid data since issue 12 (resized to the card), so not in this list
@pytest.mark.parametrize("name", ["empty_class", "corrupt_png", "no_classes", "txt_only"])
def test_bad_image_folder_is_one_line(fx, name):
    _refused(
        ["evaluate", "--model", "resnet8_digits", "--data", fx / "folders" / name], str(fx / "folders" / name)
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing_shard", "is incomplete: 4 of 8 images on disk (missing shard-00001"),
        ("counts_more", "is incomplete: 8 of 12 images"),
    ],
)
def test_incomplete_dataset_is_refused_by_every_reader(fx, tmp_path, name, expected):
    data = fx / "ds" / name
    _refused(["distill", "--data", data, "--out", tmp_path / "d", *KD1], expected)
    _refused(["export", data, "--format", "imagefolder", "--out", tmp_path / "e"], expected)
    _refused(["export", data, "--format", "npz", "--out", tmp_path / "e.npz"], expected)
    _refused(
        [
            *PRUNE_HALF,
            "--data",
            data,
            "--out",
            tmp_path / "p",
            *KD1,
        ],
        expected,
    )
    _refused(["quantize", "--calib", data, "--calib-images", "4", "--out", tmp_path / "q", "-q"], expected)
    assert not any((tmp_path / n).exists() for n in ("d", "e", "e.npz", "p", "q"))


# -- options that collide, --set never ignored -------------------------------------------------------
def test_set_seed_is_refused_and_not_listed(tmp_path):
    _refused(
        ["synthesize", "-n", "2", "--set", "seed=3", "--out", tmp_path / "o"], "seed is set with --seed N"
    )
    _refused(["synthesize", "-m", "dafl", "-n", "2", "--set", "seed=3", "--out", tmp_path / "o"], "--seed N")
    _refused(["quantize", "--set", "seed=3", "--out", tmp_path / "o"], "--seed N")
    line = _refused(["synthesize", "-n", "2", "--set", "nosuch=3", "--out", tmp_path / "o"], "unknown option")
    assert " seed" not in line.split("valid:")[1]
    _refused(
        ["synthesize", "-n", "2", "--set", "lr=1", "--set", "lr=2", "--out", tmp_path / "o"], "lr given twice"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("calib", ["noise", "digits", "DIR"])
def test_quantize_set_with_a_calib_that_synthesises_nothing_is_refused(fx, tmp_path, calib):
    calib = str(fx / "ds" / "good") if calib == "DIR" else calib
    _refused(
        ["quantize", "--calib", calib, "--set", "iterations=3", "--out", tmp_path / "q"],
        "synthesises nothing",
    )
    _refused(
        ["quantize", "--calib", "zeroq", "--set", "nosuch=3", "--out", tmp_path / "q"],
        "unknown option 'nosuch'",
    )
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "oh_weight=1"], "with --generator the generator's own settings are used"),
        (["--student", "lenet5"], "with --generator they do not apply"),
    ],
)
def test_synthesize_generator_refuses_training_options(fx, tmp_path, extra, message):
    sample = ["synthesize", "-m", "dafl", "--generator", fx / "gen" / "garbage.safetensors", "-n", "2"]
    _refused([*sample, *extra, "--out", tmp_path / "s"], message)


def test_prune_data_refuses_set(fx, tmp_path):
    _refused(
        [
            *PRUNE_HALF,
            "--data",
            fx / "ds" / "good",
            "--set",
            "lr=1",
            "--out",
            tmp_path / "p",
            *KD1,
        ],
        "needs --method, not --data",
    )
    assert not (tmp_path / "p").exists()


# -- paths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["npz", "imagefolder"])
def test_export_to_root_or_a_symlink_loop(fx, fmt):
    _refused(["export", fx / "ds" / "good", "--format", fmt, "--out", "/"], "filesystem root")
    _refused(["export", fx / "ds" / "good", "--format", fmt, "--out", fx / "out" / "loop"], "cannot resolve")


def test_recursive_out_path_is_refused(fx):
    _refused(["synthesize", "-n", "2", "--out", fx / "out" / "loop" / "x"], "")
    _refused(["distill", "--data", fx / "ds" / "good", "--out", fx / "out" / "loop", *KD1], "")


# -- numerics ---------------------------------------------------------------------------------------
def test_generator_whose_loss_has_no_term_is_refused(tmp_path):
    _refused(
        [
            "synthesize",
            "-m",
            "dafl",
            "-n",
            "2",
            *KD1,
            "--out",
            tmp_path / "s",
            "--set",
            "oh_weight=0",
            "--set",
            "ie_weight=0",
            "--set",
            "activation_weight=0",
            "--set",
            "bn_weight=0",
        ],
        "all loss weights are zero",
    )
    assert not (tmp_path / "s").exists() and not (tmp_path / "s_generator").exists()


def test_diverging_synthesis_exits_3_and_writes_nothing(tmp_path):
    args = [
        "synthesize",
        "-n",
        "4",
        "--batch-size",
        "2",
        "--iterations",
        "2",
        "--set",
        "bn_weight=1e38",
        "--set",
        "bn_ce_max_ratio=0",  # the BN/CE balance (issue 11) would otherwise tame the huge weight
        "-q",
        "--out",
        tmp_path / "s",
    ]
    for _ in range(2):  # the rerun fails the same way, not on a poisoned shard
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 3, r.output
        # one error line (after the announcement of the directory it then removed)
        errors = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("created directory")]
        assert len(errors) == 1 and errors[0].startswith("error: synthesis diverged in shard 0"), r.stderr
        assert not (tmp_path / "s").exists()


# -- validation before the first write ---------------------------------------------------------------
def test_online_synthesize_checks_out_before_training(fx, tmp_path):
    out = tmp_path / "foreign"
    shutil.copytree(fx / "out" / "foreign", out)
    _refused(["synthesize", "-m", "dafl", "-n", "2", *KD1, "--out", out], "not empty and holds no dataset")
    assert not (tmp_path / "foreign_generator").exists()


def test_distill_method_into_another_runs_out_writes_nothing(fx, tmp_path):
    out = tmp_path / "run"
    _good_run(fx, out)
    before = sorted(p.name for p in out.iterdir())
    _refused(
        ["distill", "--method", "fast", "-n", "2", "--set", "iterations=1", "--out", out, *KD1],
        "did not synthesise",
    )
    _refused(["distill", "--method", "dafl", "--out", out, *KD1], "holds the checkpoint of another run")
    _refused(
        ["compress", "-m", "fast", "-n", "2", "--iterations", "1", "--no-baseline", "--out", out, *KD1],
        "did not synthesise",
    )
    assert sorted(p.name for p in out.iterdir()) == before


def test_prune_unknown_method_leaves_no_out(tmp_path):
    _refused(
        [
            *PRUNE_HALF,
            "--method",
            "nosuch",
            "--out",
            tmp_path / "p",
        ],
        "unknown method 'nosuch'",
    )
    assert not (tmp_path / "p").exists()


# -- our own outputs ----------------------------------------------------------------------------------
def _as(card_fields: dict) -> object:
    from datafree.cards import load_model

    lm = load_model("resnet8_digits")
    card = dataclasses.replace(lm.card, **card_fields)
    return dataclasses.replace(lm, card=card)


def test_int8_or_quantized_models_are_refused_where_they_cannot_work():
    from datafree.prune.stage import _check_prunable
    from datafree.quant.api import QUANTIZED_ARCH, check_quantize_args
    from generators import create_synthesizer

    int8 = _as({"extra": {"int8": {"engine": "x86"}}})
    fake = _as({"arch": QUANTIZED_ARCH})
    for lm, expected in ((int8, "already a real int8 model"), (fake, "already quantized")):
        with pytest.raises(UserInputError, match=expected):
            check_quantize_args(lm, "noise")
    for lm in (int8, fake):
        with pytest.raises(UserInputError, match="cannot be pruned"):
            _check_prunable(lm)
    for method in ("dafl", "zskt", "dfad", "deepinversion"):
        with pytest.raises(UserInputError, match="real int8 model: synthesis needs gradients"):
            create_synthesizer(method, int8.model, int8.card)


@pytest.mark.slow
def test_int8_and_w4a4_cards_through_the_cli(tmp_path):
    q = ["--calib", "noise", "--calib-images", "4", "-q", "--device", "cpu"]
    assert CliRunner().invoke(cli, ["quantize", *q, "--int8", "--out", str(tmp_path / "q8")]).exit_code == 0
    assert (
        CliRunner()
        .invoke(cli, ["quantize", *q, "-w", "4", "-a", "4", "--out", str(tmp_path / "w4")])
        .exit_code
        == 0
    )
    int8 = tmp_path / "q8" / "int8" / "model.json"
    _refused(["quantize", "--model", int8, *q, "--out", tmp_path / "x"], "already a real int8 model")
    _refused(["quantize", "--model", tmp_path / "w4", *q, "--out", tmp_path / "x"], "already quantized")
    for m in ("dafl", "zskt", "dfad"):
        _refused(
            ["synthesize", "-t", int8, "-m", m, "-n", "2", *KD1, "--out", tmp_path / "x"], "real int8 model"
        )
    _refused(
        ["prune", "--model", tmp_path / "w4", "--ratio", "0.5", "--epochs", "0", "--out", tmp_path / "x"],
        "cannot be pruned",
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "student, ok",
    [
        ("alexnet", False),
        ("squeezenet1_1", False),
        ("vit_b_16", False),
        ("inception_v3", False),
        ("googlenet", True),
    ],
)
def test_torchvision_students_work_or_are_refused_clearly(fx, tmp_path, student, ok):
    args = ["distill", "--data", fx / "ds" / "good", "--student", student, "--out", tmp_path / "o", *KD1]
    if ok:
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    else:
        _refused(
            args, f"student {student!r}: a forward pass of a zero batch of input_shape [1, 16, 16] failed"
        )
        assert not (tmp_path / "o").exists()


def test_json_helpers():
    from datafree.validate import check_int, parse_json

    with pytest.raises(UserInputError, match="nested too deeply"):
        parse_json("[" * 50 + "]" * 50, "x")
    with pytest.raises(UserInputError, match="too large"):
        parse_json(json.dumps({"a": 2**70}), "x")
    with pytest.raises(UserInputError, match="must be an integer"):
        check_int(True, "n")
    assert parse_json('{"a": [1, 2.5, "x"]}', "x") == {"a": [1, 2.5, "x"]}
    assert np.isfinite(parse_json("1e308", "x"))


# -- found by the long fuzz runs after the merge of issues 11-16 -------------------------------------
def test_out_of_range_kd_numbers_are_one_line(tmp_path):
    """Torch's own ``Invalid momentum value`` was an internal error."""
    args = ["distill", "--method", "deepinversion", "--num-images", "2", *KD1, "--out", tmp_path / "o"]
    _refused([*args, "--momentum", "-1e308"], "momentum must be a number >= 0")
    _refused([*args, "--weight-decay", "inf"], "weight_decay must be a number >= 0")
    assert not (tmp_path / "o").exists()


def test_a_refusal_after_a_student_size_warning_is_still_one_line(fx, tmp_path):
    """The early --student check keeps quiet; the size warning comes once the student is built."""
    args = ["distill", "--data", fx / "ds" / "good", "--student", "resnet20", *KD1, "--out", tmp_path / "o"]
    _refused([*args, "--eval-data", tmp_path / "missing.npz"], "missing.npz")
