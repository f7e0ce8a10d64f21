"""Community-format checkpoints load strictly through cards; mismatches and bad cards are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datafree.cards import load_model
from datafree.models import create_model
from tests.test_zoo import community_resnet_keys, community_wrn_keys

COMMUNITY_KEYS = {"resnet34_cifar": community_resnet_keys((3, 4, 6, 3)), "wrn40_2": community_wrn_keys(40, 2)}


def community_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the community's key names (shapes of the architecture)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in create_model(arch, 10).state_dict().items()}
    out = {}
    for k in COMMUNITY_KEYS[arch]:
        shape, dtype = shapes[k]
        out[k] = (
            torch.randint(0, 5, shape, generator=g)
            if dtype == torch.long
            else torch.rand(shape, generator=g) + 0.5
        )
    return out


def write_card(root, arch: str, weights: str, **fields) -> str:
    d = {"arch": arch, "weights": weights, "num_classes": 10, "input_shape": [3, 32, 32],
         "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010], **fields}  # fmt: skip
    (root / "model.json").write_text(json.dumps(d))
    return str(root / "model.json")


def _variants(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    module = {f"module.{k}": v for k, v in sd.items()}
    return {
        "bare": sd,
        "state_dict+best_acc+epoch": {"state_dict": sd, "best_acc": 94.87, "epoch": 199},
        "module.": {"state_dict": module, "best_acc": 94.87, "epoch": 199},
        "bare module.": module,
        "model": {"model": sd, "epoch": 3},
        "model_state_dict": {
            "model_state_dict": sd,
            "optimizer_state_dict": {"state": {}, "param_groups": []},
        },
        "state_dict_ema": {"state_dict_ema": sd, "epoch": 3},
        "net": {"net": sd, "acc": 0.9},
        "_orig_mod.": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "ddp+compile": {"model": {f"_orig_mod.module.{k}": v for k, v in sd.items()}},
        "numpy best_acc": {"state_dict": sd, "best_acc": np.float64(0.95), "epoch": np.int64(3)},
    }


@pytest.mark.parametrize(
    ("arch", "variant"),
    [("wrn40_2", v) for v in _variants({})]
    + [("resnet34_cifar", v) for v in ("state_dict+best_acc+epoch", "module.")],
)
def test_community_checkpoint_variants_load_strictly(tmp_path, arch, variant):
    sd = community_state_dict(arch)
    torch.save(_variants(sd)[variant], tmp_path / f"{arch}.pth")
    lm = load_model(write_card(tmp_path, arch, f"{arch}.pth"))
    loaded = lm.model.state_dict()
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert lm.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path):
    sd = {k: v for k, v in community_state_dict("wrn40_2").items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    assert load_model(write_card(tmp_path, "wrn40_2", "w.pth")) is not None


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth rebuilt"])
def test_module_that_reads_its_version_loads_from_every_format(tmp_path, fmt):
    """Torchvision's MNASNet raises on a state dict without module versions (safetensors keeps none)."""
    import torchvision

    from datafree.cards import save_model

    torch.manual_seed(0)
    m = torchvision.models.mnasnet0_5(num_classes=10).eval()
    save_model(m, tmp_path, arch="mnasnet0_5", num_classes=10, input_shape=[3, 32, 32], mean=[0.5] * 3,
               std=[0.5] * 3)  # fmt: skip
    if fmt != "safetensors":  # torch.save keeps the versions of state_dict(); a dict rebuilt from it does not
        sd = m.state_dict() if fmt == "pth" else {"model": dict(m.state_dict())}
        torch.save(sd, tmp_path / "w.pth")
        card = json.loads((tmp_path / "model.json").read_text())
        (tmp_path / "model.json").write_text(json.dumps({**card, "weights": "w.pth", "sha256": None}))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "model.json")).model(x), m(x))


def test_googlenet_trained_with_its_auxiliary_classifiers_loads_without_them(tmp_path):
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=False).eval()
    assert any(k.startswith("aux1.") for k in m.state_dict())  # torchvision's default, saved with the model
    torch.save({"state_dict": m.state_dict(), "epoch": 90}, tmp_path / "w.pth")
    lm = load_model(write_card(tmp_path, "googlenet", "w.pth", input_shape=[3, 64, 64]))
    assert not any(k.startswith("aux") for k in lm.model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(lm.model(x), m(x))


def _cli_error(*args: str) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def test_other_layout_names_missing_and_unexpected_keys(tmp_path):
    torch.save({"state_dict": create_model("wrn40_2_post", 10).state_dict(), "epoch": 1}, tmp_path / "w.pth")
    msg = _cli_error("evaluate", "--model", write_card(tmp_path, "wrn40_2", "w.pth"))
    assert "do not match arch 'wrn40_2'" in msg and "missing keys block1.layer.0.bn1.weight" in msg
    assert "unexpected keys" in msg and "layer1.0.conv1.weight" in msg and "check that the card's arch" in msg


def test_other_class_count_names_the_shapes(tmp_path):
    torch.save(create_model("wrn16_1", 100).state_dict(), tmp_path / "w.pth")
    msg = _cli_error("evaluate", "--model", write_card(tmp_path, "wrn16_1", "w.pth"))
    assert "fc.weight [100, 64] in the file vs [10, 64] in the model" in msg and "num_classes" in msg


def test_checkpoint_without_a_state_dict_names_its_keys(tmp_path):
    torch.save({"weights_here": {"a": 1}, "epoch": 3}, tmp_path / "w.pth")
    msg = _cli_error("evaluate", "--model", write_card(tmp_path, "wrn16_1", "w.pth"))
    assert "no state dict found" in msg and "'weights_here'" in msg and "'state_dict'" in msg


# --- the forward check of a card -------------------------------------------------------------------

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, out="tensor"):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)
        self.out = out

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        logits = self.fc(f)
        if self.out == "tuple":
            return logits, f
        if self.out == "dict":
            return {"features": f, "logits": logits}
        if self.out == "wrong":
            return logits[:, :3]
        if self.out == "string":
            return "logits"
        return logits


def build(num_classes=10, out="tensor"):
    return Net(num_classes, out)
"""


def _net_card(tmp_path, out: str, **fields) -> str:
    (tmp_path / "net.py").write_text(NET)
    import importlib.util

    spec = importlib.util.spec_from_file_location("i12a_net", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.build(10).state_dict(), tmp_path / "w.pt")
    return write_card(tmp_path, "net.py:build", "w.pt", arch_kwargs={"out": out}, **fields)


@pytest.mark.parametrize("out", ["tuple", "dict"])
def test_tuple_and_dict_outputs_give_their_logits_to_every_caller(tmp_path, out):
    lm = load_model(_net_card(tmp_path, out))
    y = lm.model(torch.rand(4, 3, 32, 32))
    assert isinstance(y, torch.Tensor) and y.shape == (4, 10)


@pytest.mark.parametrize(
    "out, expected",
    [("wrong", "returned a tensor of shape (2, 3) for a batch of 2; expected logits (2, 10)"),
     ("string", "returned a str")],
)  # fmt: skip
def test_a_model_that_does_not_return_logits_is_refused(tmp_path, out, expected):
    msg = _cli_error("evaluate", "--model", _net_card(tmp_path, out))
    assert expected in msg


def test_card_with_the_wrong_channels_is_one_line(tmp_path):
    card = _net_card(tmp_path, "tensor", input_shape=[1, 32, 32], mean=[0.5], std=[0.5])
    msg = _cli_error("evaluate", "--model", card)
    assert "says 1 channel(s) but the model's first layer (conv) takes 3" in msg


@pytest.mark.parametrize("out", ["tuple", "dict"])
def test_traced_models_keep_the_logits_too(tmp_path, out):
    """Quantization traces the model with torch.fx, which skips forward hooks: the graph keeps the logits."""
    from datafree.quant.fold import trace
    from datafree.quant.int8 import export_int8

    lm = load_model(_net_card(tmp_path, out))
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(trace(lm.model)(x), lm.model(x))
    y = export_int8(lm.model, x, batch_size=4)(x)
    assert isinstance(y, torch.Tensor) and y.shape == (4, 10)
