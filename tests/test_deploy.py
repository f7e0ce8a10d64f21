"""Datafree deploy: ONNX (fp32, pruned, QDQ int8) verified in ONNX Runtime, .pt2.

Also evaluate on the deployed file.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.cards import load_card, load_model
from datafree.errors import UserInputError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "resnet8.onnx"
    r = _run("deploy", "--model", "resnet8_digits", "--out", out)
    assert r.exit_code == 0, r.output
    return out, r.output


@pytest.fixture(scope="module")
def w8a8_onnx(tmp_path_factory):
    from datafree.quant import QuantConfig, QuantizeJob, quantize

    d = tmp_path_factory.mktemp("q")
    rep = quantize(
        "resnet8_digits",
        QuantConfig(8, 8),
        QuantizeJob("noise", calib_images=16, latency_repeats=0),
        out_dir=d / "q",
    )
    r = _run("deploy", "--model", d / "q", "--out", d / "q.onnx")
    assert r.exit_code == 0, r.output
    return d / "q.onnx", rep, r.output


def _accuracy(model: str) -> float:
    r = _run("evaluate", "--model", model, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["accuracy"]


def test_fp32_onnx_matches_pytorch_and_evaluates(fp32_onnx):
    path, output = fp32_onnx
    assert "top-1 agreement 1.0000" in output and f"card {path}.json" in output
    card = load_card(path)  # the .onnx resolves to the card beside it
    assert (
        card.extra["format"] == "onnx"
        and card.input_shape == [1, 16, 16]
        and card.extra["deploy"]["opset"] == 18
    )
    assert card.extra["source"]["arch"] == "resnet8"
    # the deployed accuracy, through the same command, equals PyTorch's
    assert abs(_accuracy(str(path)) - _accuracy("resnet8_digits")) <= 0.003
    # dynamic batch axis: any batch size runs
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        assert sess.run(None, {"input": np.zeros((n, 1, 16, 16), np.float32)})[0].shape == (n, 10)


def test_w8a8_exports_as_qdq_that_ort_runs_with_int8_kernels(w8a8_onnx, tmp_path):
    path, rep, output = w8a8_onnx
    assert "(int8 QDQ)" in output
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] >= 10 and ops["DequantizeLinear"] >= 20
    inits = {t.name: t for t in graph.initializer}
    int8_weights = [t for t in inits.values() if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 9  # every conv weight stored as int8
    # per-channel: a DequantizeLinear of a 4-D int8 weight has one scale per output channel
    per_channel = [
        n
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
        and len(inits[n.input[0]].dims) == 4
    ]
    assert per_channel and all(
        onnx.numpy_helper.to_array(inits[n.input[1]]).shape == (inits[n.input[0]].dims[0],)
        for n in per_channel
        if n.input[1] in inits
    )
    # ONNX Runtime fuses the QDQ pairs into integer kernels
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert fused["QLinearConv"] == 9 and fused["Conv"] == 0
    # and the ORT accuracy is the simulated W8A8 accuracy
    assert abs(_accuracy(str(path)) - rep["quantized"]["accuracy"]) <= 0.003


@pytest.mark.slow  # another ONNX export: ~20 s on 2 busy cores
def test_pruned_model_deploys(tmp_path, bn_teacher):
    from datafree.prune import prune_model

    prune_model(bn_teacher, 0.5, importance="l2", epochs=0, out_dir=tmp_path / "p", latency=False)
    r = _run("deploy", "--model", tmp_path / "p", "--out", tmp_path / "p.onnx")
    assert r.exit_code == 0, r.output
    assert abs(_accuracy(str(tmp_path / "p.onnx")) - _accuracy(str(tmp_path / "p"))) <= 0.003
    assert load_card(tmp_path / "p.onnx").extra["source"]["module_shapes"]


@pytest.mark.slow  # another ONNX export: ~20 s on 2 busy cores
def test_mismatch_beyond_tolerance_exits_1_with_one_line(w8a8_onnx, tmp_path):
    q_dir = w8a8_onnx[0].parent / "q"
    r = _run("deploy", "--model", q_dir, "--out", tmp_path / "x.onnx", "--atol", "1e-12")
    assert (
        r.exit_code == 1 and "disagrees with PyTorch" in r.output and len(r.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.onnx.json").exists()


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--out", "model.txt"], "unknown deploy format"),
        (["--format", "onnx", "--out", "model.pt2"], "must end in .onnx"),
        (["--out", "m.onnx", "--opset", "11"], "--opset must be from 18"),
    ],
)
def test_bad_deploy_arguments_exit_2(tmp_path, extra, msg):
    args = [a if not a.startswith("m") or "." not in a else str(tmp_path / a) for a in extra]
    r = _run("deploy", "--model", "resnet8_digits", *args)
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_low_bit_models_are_refused_for_qdq(tmp_path):
    from datafree.deploy import deploy
    from datafree.quant import QuantConfig, QuantizeJob, quantize

    quantize(
        "resnet8_digits",
        QuantConfig(4, 8),
        QuantizeJob("noise", calib_images=8, latency_repeats=0),
        out_dir=tmp_path / "q4",
    )
    with pytest.raises(UserInputError, match="needs 8-bit weights"):
        deploy(tmp_path / "q4", tmp_path / "q4.onnx")


def test_missing_onnx_extra_is_one_line(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    from datafree.deploy import require_onnx

    with pytest.raises(UserInputError, match=r"datafree\[onnx\]"):
        require_onnx()


def test_onnx_file_without_card_is_refused(fp32_onnx, tmp_path):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(fp32_onnx[0].read_bytes())
    r = _run("evaluate", "--model", lone)
    assert r.exit_code == 2 and "no card beside it" in r.output


def test_pt2_needs_trust_to_load(tmp_path):
    from datafree.deploy import deploy

    rep = deploy("lenet5_digits", tmp_path / "l.pt2")
    assert rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] == 0.0
    with pytest.raises(UserInputError, match="pickled parts"):
        load_model(tmp_path / "l.pt2")
    lm = load_model(tmp_path / "l.pt2", trust_checkpoint=True)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(x), load_model("lenet5_digits").model(x))
