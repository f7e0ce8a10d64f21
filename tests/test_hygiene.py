"""Outputs honour the umask, created directories are announced, reruns remove what they replace."""

from __future__ import annotations

import os
import stat

import pytest

from datafree.utils import atomic_write_json, ensure_dir, remove_stale


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_honours_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        plain = tmp_path / "b.json"
        plain.write_text("{}")
    finally:
        os.umask(old)
    got = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert got == 0o666 & ~mask == stat.S_IMODE(plain.stat().st_mode)


def test_created_directories_are_announced(tmp_path, capsys):
    ensure_dir(tmp_path / "a" / "b")
    assert capsys.readouterr().err == f"created directory {tmp_path / 'a'}\n"
    ensure_dir(tmp_path / "a" / "b")  # exists: silent
    atomic_write_json(tmp_path / "c" / "r.json", {})
    assert capsys.readouterr().err == f"created directory {tmp_path / 'c'}\n"


def test_remove_stale(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    remove_stale(tmp_path / "d", "why")
    remove_stale(tmp_path / "missing", "why")  # nothing to remove: silent
    assert not (tmp_path / "d").exists()
    assert capsys.readouterr().err == f"removed stale {tmp_path / 'd'} (why)\n"


def test_quantize_without_int8_removes_a_previous_int8(bn_teacher, tmp_path):
    from datafree.quant import QuantConfig, QuantizeJob, quantize

    (tmp_path / "int8").mkdir()
    (tmp_path / "int8" / "model.json").write_text("{}")
    quantize(bn_teacher, QuantConfig(8, 8), QuantizeJob("noise", 8, latency_repeats=0), out_dir=tmp_path)
    assert (tmp_path / "model.json").is_file() and not (tmp_path / "int8").exists()


def test_compress_rerun_removes_unasked_stages(tmp_path):
    from datafree.pipeline import _STUDENT_FILES, _remove_unasked

    for d in ("baseline", "data", "prune", "quantize"):
        (tmp_path / d).mkdir()
    for f in _STUDENT_FILES:
        (tmp_path / f).write_text("{}")
    _remove_unasked(tmp_path, student=True, baseline=True, online=False, prune=True, quantize=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["baseline", "data", "prune"]
    _remove_unasked(tmp_path, student=False, baseline=True, online=True, prune=True, quantize=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prune"]


def test_synthesize_online_announces_its_generator_dir(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    out = tmp_path / "X"
    args = ["synthesize", "--method", "dafl", "-n", "8", "--out", str(out)]
    args += ["--epochs", "1", "--steps-per-epoch", "1"]
    r = CliRunner().invoke(cli, [*args, "--kd-batch-size", "8", "--set", "batch_size=8", "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"created directory {tmp_path / 'X_generator'}" in r.stderr
    assert f"created directory {out}" in r.stderr  # the dataset directory, created by the dataset writer


def test_the_out_a_user_names_is_not_announced(tmp_path, capsys):
    from datafree.outputs import prepare_out_dir

    prepare_out_dir(tmp_path / "o")
    assert capsys.readouterr().err == ""


def test_set_batch_size_of_an_online_method_is_the_kd_batch_too(bn_teacher):
    """``--set batch_size=16`` arrives as a string; it sets the generator's and the student's batch."""
    from datafree.plan import plan

    p = plan(bn_teacher, method="dafl", method_options={"batch_size": "16"}, kd={"epochs": 1})
    assert p.kd.batch_size == 16 and p.synthesizer is not None and p.synthesizer.config.batch_size == 16
    assert (
        plan(
            bn_teacher, method="dafl", method_options={"batch_size": "16"}, kd={"batch_size": 8}
        ).kd.batch_size
        == 8
    )
