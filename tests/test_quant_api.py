"""quantize() end to end (tiny budgets), the saved card, KD fine-tuning, real int8, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.cards import load_model
from datafree.errors import UserInputError
from datafree.evaluate import evaluate
from datafree.losses import kd_kl_loss
from datafree.quant import (
    QuantConfig,
    QuantizeJob,
    calibrate,
    calibration_images,
    finetune,
    finetune_kd,
    quantize,
    quantize_network,
)


def test_quantize_end_to_end_writes_an_evaluable_model(bn_teacher, tmp_path):
    job = QuantizeJob("zeroq", calib_images=8, synth_options={"iterations": 3, "batch_size": 8})
    rep = quantize(bn_teacher, QuantConfig(4, 6), job, out_dir=tmp_path)
    assert rep["calib_images"] == 8 and rep["weight_bits"] == 4 and rep["act_bits"] == 6
    q = rep["quantized"]
    assert 0.0 <= q["accuracy"] <= 1.0 and q["size_bytes"] < rep["fp32"]["size_bytes"] / 4
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["latency_cpu"]["batch_64"]["fp32"]["cpu_ms"] > 0 and "int8" not in saved
    assert saved["quantized"]["accuracy"] == q["accuracy"]
    # the card rebuilds the quantized network: same accuracy through the ordinary evaluate path
    res = evaluate(tmp_path / "model.json")
    assert res["accuracy"] == pytest.approx(q["accuracy"], abs=1e-4)
    lm = load_model(tmp_path / "model.json")
    assert lm.card.arch == "datafree.quant.qmodel:build_quantized"
    assert lm.card.arch_kwargs["weight_bits"] == 4 and lm.card.arch_kwargs["act_bits"] == 6


def test_reloaded_model_gives_identical_outputs(bn_teacher, tmp_path):
    images = calibration_images(bn_teacher, "noise", 16, seed=1)
    cfg = QuantConfig(3, 5, weight_symmetric=False, act_calib="percentile")
    quantize(bn_teacher, cfg, images=images, out_dir=tmp_path)
    q = calibrate(quantize_network(bn_teacher.model, cfg), images, cfg)
    x = torch.randn(4, *bn_teacher.card.input_shape)
    torch.testing.assert_close(load_model(tmp_path / "model.json").model(x), q(x))


def test_calibration_sources(bn_teacher, plain_teacher, tmp_path):
    digits = calibration_images(bn_teacher, "digits", 10, seed=0)
    noise = calibration_images(bn_teacher, "noise", 10, seed=0)
    assert digits.shape == noise.shape == (10, *bn_teacher.card.input_shape)
    torch.testing.assert_close(noise, calibration_images(bn_teacher, "noise", 10, seed=0))
    with pytest.raises(UserInputError, match="no BatchNorm"):
        calibration_images(plain_teacher, "zeroq", 8)
    with pytest.raises(UserInputError, match="unknown --calib"):
        calibration_images(bn_teacher, "imagenet", 8)
    with pytest.raises(UserInputError, match="not a synthetic dataset"):
        calibration_images(bn_teacher, str(tmp_path), 8)


def test_calibration_from_a_synthetic_dataset_dir(bn_teacher, tmp_path):
    from datafree.synthesis import synthesize_dataset

    ds = synthesize_dataset(bn_teacher, "zeroq", tmp_path / "ds", 12, batch_size=6, iterations=2)
    images = calibration_images(bn_teacher, ds.root, 64)
    assert images.shape == (12, *bn_teacher.card.input_shape)


def test_lenet_without_bn_quantizes_with_noise(plain_teacher):
    rep = quantize(plain_teacher, QuantConfig(8, 8), QuantizeJob("noise", calib_images=16))
    assert rep["quantized"]["accuracy"] > 0.9


def test_kd_finetuning_brings_the_quantized_model_closer_to_the_teacher(bn_teacher):
    images = calibration_images(bn_teacher, "noise", 32, seed=0)
    cfg = QuantConfig(3, 3)
    q = calibrate(quantize_network(bn_teacher.model, cfg), images, cfg)
    with torch.no_grad():
        t = bn_teacher.model(images)
        before = kd_kl_loss(q(images), t, 4.0).item()
    scales = [aq.scale.clone() for aq in q.act_quant.children()]
    finetune(
        q,
        bn_teacher.model,
        images,
        finetune_kd(epochs=2, steps_per_epoch=8, batch_size=32, lr=1e-3, augment=False),
    )
    with torch.no_grad():
        after = kd_kl_loss(q(images), t, 4.0).item()
    assert after < before
    for s, aq in zip(scales, q.act_quant.children(), strict=True):  # the calibrated ranges stay fixed
        torch.testing.assert_close(s, aq.scale)


def test_int8_export_runs_and_agrees_with_fp32(bn_teacher):
    from datafree.data import digits_split
    from datafree.profile import measure_latency
    from datafree.quant.int8 import export_int8

    images = calibration_images(bn_teacher, "noise", 32, seed=0)
    int8 = export_int8(bn_teacher.model, images)
    # PT2E: int8 weight constants behind quantize/dequantize ops (lowered to int8 kernels by inductor / ORT)
    assert any("quantized_decomposed" in str(n.target) for n in int8.graph.nodes)
    assert sum(t.dtype == torch.int8 for t in int8.state_dict().values()) == 9
    pixels, _ = digits_split("test", tuple(bn_teacher.card.input_shape))
    x = bn_teacher.card.normalizer()(pixels[:64])
    with torch.no_grad():
        agree = (int8(x).argmax(1) == bn_teacher.model(x).argmax(1)).float().mean().item()
    assert agree >= 0.95
    lat = measure_latency(
        {"fp32": bn_teacher.model, "int8": int8}, x[:2], repeats=2, warmup=1, min_sample_ms=0
    )
    assert set(lat) == {"fp32", "int8"} and all(
        v[2]["min_ms"] > 0 and v[2]["cpu_ms"] >= 0 for v in lat.values()
    )


def test_cli_quantize_then_evaluate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "q"
    r = runner.invoke(
        cli, ["quantize", "--model", "resnet8_digits", "-w", "4", "-a", "8", "--calib", "noise",
              "--calib-images", "16", "--int8", "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "W4A8 (noise)" in r.output and f"int8 card {(out / 'int8' / 'model.json').resolve()}" in r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["int8"]["accuracy"] > 0.95 and rep["int8"]["engine"] == "x86" and rep["int8"]["flow"] == "pt2e"
    speed = rep["int8"]["speed"]  # int8 is used only where it is faster, and the command says so
    assert speed["note"] in r.output and set(speed["use"].values()) <= {"int8", "fp32"}
    for b, faster in speed["faster_at"].items():
        lat = rep["latency_cpu"][b]
        assert faster == (lat["int8"]["cpu_ms"] < lat["fp32"]["cpu_ms"]) and speed["use"][b] == (
            "int8" if faster else "fp32"
        )
    for bs in ("batch_1", "batch_64"):
        assert set(rep["latency_cpu"][bs]) == {"fp32", "int8"}
    r = runner.invoke(cli, ["evaluate", "--model", str(out / "model.json"), "--json"], catch_exceptions=False)
    assert r.exit_code == 0
    assert json.loads(r.output)["accuracy"] == pytest.approx(rep["quantized"]["accuracy"], abs=1e-4)
    # the real int8 model is an artefact too: its card evaluates to the report's int8 accuracy
    assert rep["int8"]["model_card"] == str((out / "int8" / "model.json").resolve())
    r = runner.invoke(cli, ["evaluate", "--model", rep["int8"]["model_card"]], catch_exceptions=False)
    assert r.exit_code == 0 and f"accuracy {rep['int8']['accuracy']:.4f}" in r.output


def test_cli_rejects_bad_bits_and_zeroq_without_bn(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["quantize", "-w", "9", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "weight-bits" in r.output
    r = runner.invoke(
        cli, ["quantize", "--model", "lenet5_digits", "--calib", "zeroq", "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 2 and "no BatchNorm" in r.output
