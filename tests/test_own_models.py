"""Bringing your own model: timm and torchvision by name, ``datafree card``, ``compress`` end to end.

``compress`` runs on a timm, a torchvision, a community-zoo and an own ``file.py:callable`` teacher
(tiny settings, 32x32).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.cards import load_model
from datafree.errors import UserInputError
from datafree.models import create_model
from tests.test_checkpoints import community_state_dict, write_card

TINY_COMPRESS = ["-n", "8", "--iterations", "1", "--set", "batch_size=8", "--set", "warmup=1"]
TINY_COMPRESS += ["--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "8", "--no-baseline", "-q"]


def _ok(*args) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout


def _error(*args) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def test_timm_by_name():
    pytest.importorskip("timm")
    m = create_model("timm:resnet18", 7, 1).eval()
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 7)


def test_timm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(UserInputError, match=r"needs timm.*pip install 'datafree\[timm\]'"):
        create_model("timm:resnet18", 10)


def test_unknown_timm_model_is_one_line():
    pytest.importorskip("timm")
    assert "timm has no model 'resnet_nope'" in _error(
        "card", "timm:resnet_nope", "--preset", "cifar10", "--out", "x.json"
    )


def test_card_presets_and_num_classes(tmp_path):
    _ok("card", "wrn16_1", "--preset", "cifar100", "--out", tmp_path / "c100.json")
    c = json.loads((tmp_path / "c100.json").read_text())
    assert (
        c["num_classes"] == 100
        and len(c["classes"]) == 100
        and c["classes"][:2] == ["apple", "aquarium_fish"]
    )
    assert c["input_shape"] == [3, 32, 32] and c["trained_on"] == "cifar100" and c["std"][0] == 0.2675
    _ok("card", "resnet8", "--preset", "digits", "--num-classes", "4", "--out", tmp_path / "d")
    d = json.loads((tmp_path / "d" / "model.json").read_text())
    assert d["num_classes"] == 4 and d["input_shape"] == [1, 16, 16] and "classes" not in d
    assert load_model(tmp_path / "d").model(torch.zeros(1, 1, 16, 16)).shape == (1, 4)


def test_card_with_a_community_checkpoint(tmp_path):
    module = {f"module.{k}": v for k, v in community_state_dict("wrn40_2").items()}
    torch.save({"state_dict": module, "best_acc": 94.9},
               tmp_path / "wrn40_2.pth")  # fmt: skip
    out = _ok(
        "card",
        "wrn40_2",
        "--weights",
        tmp_path / "wrn40_2.pth",
        "--preset",
        "cifar10",
        "--out",
        tmp_path / "t.json",
    )
    assert "checked with one forward pass" in out
    c = json.loads((tmp_path / "t.json").read_text())
    assert c["weights"] == "wrn40_2.pth" and len(c["sha256"]) == 64 and c["classes"][0] == "airplane"


def test_card_needs_a_preset_for_a_bare_arch(tmp_path):
    assert "give --preset" in _error("card", "wrn16_1", "--out", tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_card_with_weights_of_another_arch_writes_nothing(tmp_path):
    torch.save(create_model("wrn16_1", 10).state_dict(), tmp_path / "w.pth")
    msg = _error(
        "card",
        "wrn40_2",
        "--weights",
        tmp_path / "w.pth",
        "--preset",
        "cifar10",
        "--out",
        tmp_path / "c.json",
    )
    assert "do not match arch 'wrn40_2'" in msg and not (tmp_path / "c.json").exists()


def test_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    card = tmp_path / "tv" / "model.json"
    msg = _error("card", "torchvision:resnet18", "--weights", "torchvision:IMAGENET1K_V1", "--out", card)
    need = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"put https://download.pytorch.org/models/resnet18-f37072fd.pth at {need}" in msg
    assert "not in the torch hub cache" in msg and not card.exists()
    need.parent.mkdir(parents=True)
    torch.save(create_model("torchvision:resnet18", 1000).state_dict(), need)  # a fake cached file
    _ok("card", "torchvision:resnet18", "--weights", "torchvision:IMAGENET1K_V1", "--out", card)
    c = json.loads(card.read_text())
    assert (
        c["weights"] == "torchvision:IMAGENET1K_V1"
        and c["num_classes"] == 1000
        and c["input_shape"] == [3, 224, 224]
    )
    assert c["classes"][0] == "tench" and c["resize_size"] == 256 and c["trained_on"] == "imagenet"
    assert c["mean"] == [0.485, 0.456, 0.406]
    assert load_model(card).card.weights == "torchvision:IMAGENET1K_V1"
    assert "has no weights 'IMAGENET9K'" in _error(
        "evaluate", "--model", _with(card, weights="torchvision:IMAGENET9K")
    )


def _with(card, **fields):
    d = json.loads(card.read_text())
    d.update(fields)
    d.pop("sha256", None)
    p = card.parent / "edited.json"
    p.write_text(json.dumps(d))
    return p


# --- compress end to end on each kind of teacher (tiny settings, 32x32) ------------------------------------


def _compress(card, out) -> dict:
    import numpy as np

    eval_data = out.parent / "eval.npz"  # 20 labelled 32x32 RGB images: the user's data, in small
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.savez(eval_data, images=images, labels=np.arange(20) % 10)
    _ok("compress", "--teacher", card, "--out", out, "--eval-data", eval_data, *TINY_COMPRESS)
    rep = json.loads((out / "report.json").read_text())
    assert 0.0 <= rep["student"]["accuracy"] <= 1.0 and (out / "model.json").is_file()
    return rep


def test_compress_timm_resnet18(tmp_path):
    pytest.importorskip("timm")
    _ok("card", "timm:resnet18", "--preset", "cifar10", "--out", tmp_path / "t" / "model.json")
    rep = _compress(tmp_path / "t" / "model.json", tmp_path / "run")
    assert rep["teacher"]["arch"] == "timm:resnet18"


def test_compress_torchvision_resnet18(tmp_path):
    _ok("card", "torchvision:resnet18", "--preset", "cifar10", "--out", tmp_path / "t" / "model.json")
    rep = _compress(tmp_path / "t" / "model.json", tmp_path / "run")
    assert rep["teacher"]["arch"] == "torchvision:resnet18"


def test_compress_community_wrn_checkpoint(tmp_path):
    (tmp_path / "t").mkdir()
    sd = create_model("wrn16_1", 10).state_dict()  # community keys (tests/test_zoo.py checks them)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_acc": 91.0, "epoch": 199},
               tmp_path / "t" / "wrn16_1.pth")  # fmt: skip
    card = write_card(tmp_path / "t", "wrn16_1", "wrn16_1.pth")
    rep = _compress(card, tmp_path / "run")
    assert rep["teacher"]["arch"] == "wrn16_1" and rep["student"]["arch"] == "resnet8"


def test_compress_own_file_teacher_returning_logits_and_features(tmp_path):
    from tests.test_checkpoints import _net_card

    (tmp_path / "t").mkdir()
    card = _net_card(tmp_path / "t", "tuple")
    rep = _compress(card, tmp_path / "run")
    assert rep["teacher"]["arch"] == "net.py:build"
