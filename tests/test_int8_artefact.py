"""The int8 model on disk: encoding of quantized tensors, bit-identical reload, refused cards and files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from datafree.cards import load_card, load_model
from datafree.errors import UserInputError
from datafree.quant import calibration_images
from datafree.quant.int8 import export_int8
from datafree.quant.int8_artefact import graph_qparams, graph_state, save_int8


def _export(lm, n: int = 8):
    return export_int8(lm.model, calibration_images(lm, "noise", n, seed=0))


@pytest.fixture(scope="module")
def saved(bn_teacher, tmp_path_factory):
    """``(in-memory int8 model, its saved card)`` for the shipped resnet8 teacher."""
    int8 = _export(bn_teacher)
    return int8, save_int8(int8, tmp_path_factory.mktemp("int8"), bn_teacher.card, test_accuracy=0.5)


def _copy(card, tmp_path, **edits):
    """A copy of the artefact whose card has ``edits`` applied (a value ``None`` deletes the key)."""
    dst = tmp_path / "copy"
    shutil.copytree(card.path.parent, dst)
    d = json.loads((dst / "model.json").read_text())
    for key, value in edits.items():
        d.pop(key) if value is None else d.__setitem__(key, value)
    (dst / "model.json").write_text(json.dumps(d))
    return dst / "model.json"


def _same_outputs(a, b, shape) -> bool:
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_int8_graph_state_is_plain_tensors_and_qparams(saved):
    int8, card = saved
    state, qparams = graph_state(int8), graph_qparams(int8)
    assert all(not t.is_quantized for t in state.values())
    assert sum(t.dtype == torch.int8 for t in state.values()) == 9  # the 9 convs; fc stays float
    assert qparams and all(len(v) == 4 and v[0] > 0 and v[2:] == [0, 255] for v in qparams.values())


def test_saved_int8_model_reloads_bit_identical(saved, bn_teacher):
    int8, card = saved
    lm = load_model(card.path)
    assert lm.card.extra["int8"] == {"engine": "x86", "flow": "pt2e", "keep_last_float": True}
    assert lm.card.arch == bn_teacher.card.arch and lm.card.input_shape == bn_teacher.card.input_shape
    assert any("quantized_decomposed" in str(n.target) for n in lm.model.graph.nodes)
    assert _same_outputs(lm.model, int8, card.input_shape)
    assert {p.name for p in card.path.parent.iterdir()} == {
        "model.json",
        "model.safetensors",
    }  # nothing pickled


def test_linear_packed_params_and_pruned_models_reload(plain_teacher, bn_teacher, tmp_path):
    from datafree.prune import prune_model

    # lenet5: quantized linear layers
    int8 = _export(plain_teacher)
    card = save_int8(int8, tmp_path / "lenet", plain_teacher.card)
    assert _same_outputs(load_model(card.path).model, int8, card.input_shape)
    # a pruned model: the card's module_shapes rebuild the float graph before quantization
    prune_model(bn_teacher, 0.5, importance="bn", epochs=0, out_dir=tmp_path / "pruned", latency=False)
    pruned = load_model(tmp_path / "pruned")
    int8 = _export(pruned)
    card = save_int8(int8, tmp_path / "pruned_int8", pruned.card)
    assert load_card(card.path).module_shapes == pruned.card.module_shapes != {}
    assert _same_outputs(load_model(card.path).model, int8, card.input_shape)


def test_tampered_weights_fail_the_sha256_check(saved, run, tmp_path):
    path = _copy(saved[1], tmp_path)
    weights = path.parent / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    r = run("evaluate", "--model", path)
    assert r.exit_code == 2 and "does not match the card" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "edits, msg",
    [
        ({"int8": None}, "has no 'int8' field"),
        ({"int8": True}, "must be an object"),
        (
            {"int8": {"engine": "qnnpack", "flow": "pt2e", "keep_last_float": True}},
            'int8 engine "qnnpack" is not supported',
        ),
        (
            {"int8": {"engine": "x86", "flow": "fx", "keep_last_float": True}},
            "FX flow of an earlier datafree",
        ),
        ({"int8": {"engine": "x86", "flow": "pt2e", "keep_last_float": "yes"}}, 'keep_last_float "yes"'),
        ({"int8": {"engine": "x86", "keep_last_float": True}}, "lacks 'flow'"),
        ({"int8": {"engine": "x86", "flow": "pt2e", "keep_last_float": True, "bits": 4}}, "unknown key"),
        (
            {"int8": {"engine": "x86", "flow": "pt2e", "keep_last_float": False}},
            "does not match the int8 graph",
        ),
        ({"arch": "resnet8_half"}, "does not match the int8 graph of arch 'resnet8_half'"),
    ],
)
def test_cards_with_wrong_int8_fields_are_refused(saved, tmp_path, edits, msg):
    with pytest.raises(UserInputError, match=msg):
        load_model(_copy(saved[1], tmp_path, **edits))


def test_int8_model_is_cpu_only(saved):
    with pytest.raises(UserInputError, match="runs on CPU only"):
        load_model(saved[1].path, device="cuda")


def test_fx_artefact_of_an_earlier_version_gets_one_line(saved, run, tmp_path):
    path = _copy(saved[1], tmp_path, int8={"engine": "x86", "flow": "fx", "keep_last_float": True},
                 quantization={"source": "resnet8_digits"})  # fmt: skip
    r = run("evaluate", "--model", path)
    assert r.exit_code == 2 and "re-create it with datafree quantize --int8 from resnet8_digits" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_the_deprecated_fx_flow_is_gone_from_the_package():
    from pathlib import Path

    import datafree

    root = Path(datafree.__file__).parent
    users = [p for p in root.rglob("*.py") if "quantize_fx" in p.read_text() or "prepare_fx" in p.read_text()]
    assert users == []
