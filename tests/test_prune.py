"""Structured pruning: channels really removed, coupled layers consistent, cards round-trip."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from datafree.cards import build_model, load_card, load_model
from datafree.distill import KDConfig
from datafree.errors import UserInputError
from datafree.models import create_model
from datafree.prune import (
    accumulate_taylor_gradients,
    classifier_layers,
    create_criterion,
    list_criteria,
    prune_channels,
    prune_model,
    prune_stage,
)
from datafree.sources import NoiseSource
from datafree.utils import count_params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher():
    return load_model("resnet8_digits")


def _convs(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _prune(model: nn.Module, ratio: float, importance: str = "l2", **kw) -> nn.Module:
    shape = (1, *kw.pop("input_shape", (1, 16, 16)))
    batches = [torch.randn(16, *shape[1:]) for _ in range(2)]
    return prune_channels(model, torch.zeros(shape), ratio, create_criterion(importance, model),
                          num_classes=10, batches=batches, **kw)  # fmt: skip


@pytest.mark.parametrize("arch", ["resnet8", "resnet20", "lenet5", "lenet5_bn"])
def test_pruning_removes_channels_and_keeps_forward_valid(arch):
    torch.manual_seed(0)
    dense = create_model(arch, 10, 1).eval()
    pruned = _prune(copy.deepcopy(dense), 0.5)
    before, after = _convs(dense), _convs(pruned)
    # every conv lost outputs except none: the input conv keeps its 1 input but loses outputs
    assert all(after[n] < before[n] for n in before), (before, after)
    assert count_params(pruned) < 0.4 * count_params(dense)
    for m in pruned.modules():  # BN sizes follow their conv; residual adds would fail in forward otherwise
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean.shape == (m.num_features,) == m.weight.shape
    out = pruned(torch.randn(3, 1, 16, 16))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    fc = classifier_layers(pruned, 10)[0]
    assert fc.out_features == 10
    if arch.startswith("resnet"):  # the classifier's input follows the last stage's width
        assert fc.in_features == pruned.layer3[-1].bn2.num_features < 64


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "taylor"])
def test_each_importance_runs_and_scores_differently(teacher, importance):
    assert importance in list_criteria()
    pruned = _prune(copy.deepcopy(teacher.model), 0.5, importance)
    assert pruned(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert count_params(pruned) < count_params(teacher.model)
    # the teacher itself is untouched and stays frozen
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert count_params(teacher.model) == 77754


def test_criteria_choose_different_channels(teacher):
    full = teacher.model.layer3[0].bn1.running_mean
    kept = {}
    for imp in ("l2", "bn", "taylor"):
        pruned = _prune(copy.deepcopy(teacher.model), 0.5, imp)
        # which of the 64 channels survived, identified by their running mean
        kept[imp] = {int((full == v).nonzero()[0]) for v in pruned.layer3[0].bn1.running_mean}
        assert len(kept[imp]) == 32
    assert kept["l2"] != kept["bn"] and kept["l2"] != kept["taylor"] and kept["bn"] != kept["taylor"]


def test_taylor_gradients_come_from_the_batches(teacher):
    model = copy.deepcopy(teacher.model)
    n = accumulate_taylor_gradients(model, [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)])
    assert n == 16
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(UserInputError, match="taylor"):
        accumulate_taylor_gradients(copy.deepcopy(teacher.model), [])


def test_bn_importance_needs_batchnorm():
    with pytest.raises(UserInputError, match="BatchNorm"):
        create_criterion("bn", create_model("lenet5", 10, 1))
    with pytest.raises(UserInputError, match="importance"):
        create_criterion("l3")


@pytest.mark.parametrize("global_pruning", [False, True])
def test_classifier_outputs_protected_at_high_ratio(teacher, global_pruning):
    pruned = _prune(copy.deepcopy(teacher.model), 0.7, "l2", global_pruning=global_pruning)
    assert pruned.fc.out_features == 10
    assert pruned(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_global_pruning_is_not_uniform(teacher):
    uniform = _convs(_prune(copy.deepcopy(teacher.model), 0.5, "l2"))
    glob = _convs(_prune(copy.deepcopy(teacher.model), 0.5, "l2", global_pruning=True))
    dense = _convs(teacher.model)
    ratios_u = {round(uniform[n] / dense[n], 1) for n in dense}
    ratios_g = {round(glob[n] / dense[n], 1) for n in dense}
    assert len(ratios_g) > len(ratios_u)


@pytest.mark.parametrize("ratio", [0, 1.0, -0.1, 1.5, True])
def test_bad_ratio_is_a_user_error(teacher, ratio):
    with pytest.raises(UserInputError, match="ratio"):
        prune_model(teacher, ratio, epochs=0, latency=False)


def test_source_rules(teacher, tmp_path):
    with pytest.raises(
        UserInputError, match="exactly one of --data DIR .* or --method"
    ):  # the message of every job
        prune_model(teacher, 0.5, epochs=1, latency=False)
    with pytest.raises(UserInputError, match="exactly one"):
        prune_model(teacher, 0.5, epochs=1, data=tmp_path, method="deepinversion", latency=False)
    with pytest.raises(UserInputError, match="taylor"):
        prune_stage(teacher, 0.5, importance="taylor", latency=False)


def test_saved_pruned_model_loads_from_its_card_alone(teacher, tmp_path):
    out = tmp_path / "pruned"
    report = prune_model(teacher, 0.5, epochs=0, out_dir=out, latency=False)
    card = load_card(out)
    assert card.module_shapes and card.arch == "resnet8"
    assert card.module_shapes["fc"] == {"in_features": report_fc_in(out), "out_features": 10}
    lm = load_model(out)
    assert count_params(lm.model) == report["stages"]["pruned"]["params"] < 0.4 * 77754
    x = torch.randn(4, 1, 16, 16)
    assert lm.model(x).shape == (4, 10)
    # safe formats only: the weights are safetensors, nothing pickled
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.pt"))


def report_fc_in(out: Path) -> int:
    from safetensors.torch import load_file

    return int(load_file(str(out / "model.safetensors"))["fc.weight"].shape[1])


def test_card_module_shapes_rebuild_exactly(teacher, tmp_path):
    prune_model(teacher, 0.3, importance="bn", epochs=0, out_dir=tmp_path, latency=False)
    card = load_card(tmp_path)
    rebuilt = build_model(card)
    lm = load_model(tmp_path)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in lm.model.state_dict().items()
    }
    bad = json.loads((tmp_path / "model.json").read_text())
    bad["module_shapes"]["nope"] = {"out_channels": 3}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UserInputError, match="nope"):
        load_model(tmp_path / "bad.json", check_sha256=False)


@pytest.fixture(scope="module")
def synthetic_dir(teacher, tmp_path_factory):
    from datafree.synthesis import synthesize_dataset

    root = tmp_path_factory.mktemp("synthetic")
    synthesize_dataset(teacher, "deepinversion", root, 128, seed=0, batch_size=64, iterations=25)
    return root


def test_tiny_recovery_on_synthetic_data_beats_the_pruned_model(teacher, synthetic_dir, tmp_path):
    kd = KDConfig(epochs=3, steps_per_epoch=15, batch_size=64, lr=0.05)
    report = prune_model(teacher, 0.5, importance="l2", data=synthetic_dir, epochs=3, out_dir=tmp_path, kd=kd,
                         latency=False)  # fmt: skip
    st = report["stages"]
    assert st["recovered"]["accuracy"] > st["pruned"]["accuracy"] + 0.2, st
    assert report["source"]["data"] == str(synthetic_dir) and report["source"]["num_images"] == 128
    assert len(report["history"]) == 3
    assert load_model(tmp_path).card.test_accuracy == pytest.approx(st["recovered"]["accuracy"], abs=1e-4)


def test_recovery_with_a_backend_by_name_synthesizes_first(teacher, tmp_path):
    kd = KDConfig(epochs=1, steps_per_epoch=2, batch_size=32)
    report = prune_model(
        teacher, 0.3, importance="taylor", method="deepinversion", epochs=1, out_dir=tmp_path, num_images=32,
        kd=kd, method_options={"iterations": 3, "batch_size": 32}, latency=False,
    )  # fmt: skip
    assert (tmp_path / "data" / "manifest.json").is_file()
    budget = report["source"].pop("compute_budget")  # DeepInversion's (session 10): 32 images fit it
    assert not budget["capped"] and budget["settings"]["num_images"] == 32
    assert report["source"] == {"method": "deepinversion", "data": str(tmp_path / "data"),
                                "num_images": 32, "online": False}  # fmt: skip
    assert "recovered" in report["stages"]


def test_taylor_on_synthetic_batches_without_recovery(teacher):
    src = NoiseSource(64, teacher.card, seed=0)
    res = prune_stage(teacher, 0.5, importance="taylor", source=src, recover=False, latency=False)
    assert "recovered" not in res.report["stages"] and res.report["kd"] is None
    assert res.report["params_removed"] > 0.6


def test_pruning_a_user_architecture_saved_elsewhere(custom_teacher, tmp_path):
    out = tmp_path / "elsewhere"
    report = prune_model(custom_teacher, 0.5, importance="bn", epochs=0, out_dir=out, latency=False)
    card = load_card(out)
    # the card's relative net.py:build is made absolute so the card works from its new directory
    assert card.arch.endswith("net.py:build") and Path(card.arch.rpartition(":")[0]).is_absolute()
    lm = load_model(out)
    assert lm.model.head.out_features == 10 and lm.model.head.in_features == 32
    assert count_params(lm.model) == report["stages"]["pruned"]["params"]
    assert lm.model(torch.randn(2, 3, 24, 24)).shape == (2, 10)
