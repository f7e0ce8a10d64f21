"""The catalogue of bad inputs: shared by tests/test_bad_input.py and bench/bad_inputs.py (docs table).

:func:`make_fixtures` builds, under a directory, one broken thing of each kind (cards, weights,
checkpoints, datasets, output directories); :data:`CASES` lists ``(what, args, expected)``: the
CLI arguments (``{t}`` stands for that directory) and a piece of the one-line error expected.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY = ["--iterations", "1", "--set", "warmup=1", "-q"]
KD1 = ["--epochs", "1", "--steps-per-epoch", "1", "--kd-batch-size", "4", "-q"]


# A valid card (a 1x16x16 lenet5 beside its weights file): every broken card is a copy with a change.
LENET_CARD = {
    "arch": "lenet5",
    "weights": "lenet5.pt",
    "num_classes": 10,
    "input_shape": [1, 16, 16],
    "mean": [0.3],
    "std": [0.3],
}


def write_card(path: Path, **fields: object) -> Path:
    """Write :data:`LENET_CARD` with ``fields`` changed (or added) to ``path``."""
    path.write_text(json.dumps({**LENET_CARD, **fields}))
    return path


def _dataset(root: Path, n: int = 8) -> None:
    from tests.conftest import teacher_labelled_dataset

    teacher_labelled_dataset(root, torch.rand(n, 1, 16, 16), shard_size=4, method="deepinversion")


def _edit_manifest(root: Path, **fields: object) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m.update(fields)
    (root / "manifest.json").write_text(json.dumps(m))


def _rewrite_shard(root: Path, **tensors: torch.Tensor) -> None:
    from safetensors.torch import load_file, save_file

    p = root / "shard-00000.safetensors"
    t = load_file(str(p))
    t.update(tensors)
    save_file(t, str(p))


def make_fixtures(t: Path) -> None:
    """Write every broken input of :data:`CASES` under ``t``."""
    from datafree.models import create_model

    c = t / "cards"
    c.mkdir(parents=True)
    torch.save(create_model("lenet5", 10, 1).state_dict(), c / "lenet5.pt")
    torch.save(create_model("resnet8", 10, 1).state_dict(), c / "resnet8.pt")
    torch.save(create_model("lenet5", 10, 1), c / "pickled.pt")  # a whole pickled module
    data = (c / "lenet5.pt").read_bytes()
    (c / "truncated.pt").write_bytes(data[: len(data) // 2])
    (c / "empty.pt").write_bytes(b"")
    (c / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    (c / "raises.py").write_text("raise ImportError('no module named cuda_ext')\n")
    write_card(c / "ok.json")
    write_card(c / "missing_weights.json", weights="nowhere.pt")
    write_card(c / "truncated.json", weights="truncated.pt")
    write_card(c / "empty.json", weights="empty.pt")
    write_card(c / "garbage.json", weights="garbage.safetensors")
    write_card(c / "pickled.json", weights="pickled.pt")
    write_card(c / "mismatch.json", weights="resnet8.pt")
    write_card(c / "sha.json", sha256="0" * 64)
    write_card(c / "bad_import.json", arch="nosuch_package.nets:build")
    write_card(c / "raising_import.json", arch="raises.py:build")
    _own_model_fixtures(c)
    write_card(c / "unknown_arch.json", arch="no_such_net")
    write_card(c / "wrong_type.json", num_classes="ten")
    write_card(c / "bad_shape.json", input_shape=[16, 16])
    write_card(c / "bad_mean.json", mean="0.3")
    write_card(c / "bool_classes.json", num_classes=True)
    write_card(c / "weights_is_dir.json", weights=".")
    d = json.loads((c / "ok.json").read_text())
    del d["weights"]
    (c / "missing_field.json").write_text(json.dumps(d))
    (c / "not_json.json").write_text("{arch: lenet5")
    (c / "list.json").write_text("[1, 2]")
    (c / "binary.json").write_bytes(b"\xff\xfe\x00garbage")

    ds = t / "ds"
    _dataset(ds / "good")
    for name in ("other_teacher", "other_shape", "bad_json", "missing_key", "wrong_type", "labels_range",
                 "nan_images", "count_disagrees", "truncated_shard", "wrong_dtype"):  # fmt: skip
        shutil.copytree(ds / "good", ds / name)
    _edit_manifest(ds / "other_teacher", teacher_sha256="f" * 64)
    _edit_manifest(ds / "other_shape", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3)
    (ds / "bad_json" / "manifest.json").write_text("{")
    m = json.loads((ds / "missing_key" / "manifest.json").read_text())
    del m["num_classes"]
    (ds / "missing_key" / "manifest.json").write_text(json.dumps(m))
    _edit_manifest(ds / "wrong_type", shard_size="4")
    _rewrite_shard(ds / "labels_range", labels=torch.tensor([0, 1, 2, 42]))
    _rewrite_shard(ds / "nan_images", images=torch.full((4, 1, 16, 16), float("nan")))
    _rewrite_shard(ds / "wrong_dtype", labels=torch.tensor([0, 1, 2, 3], dtype=torch.int32))
    _edit_manifest(ds / "count_disagrees", shard_size=3, num_images=6)
    p = ds / "truncated_shard" / "shard-00001.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    (ds / "empty_dir").mkdir()

    o = t / "out"
    (o / "foreign").mkdir(parents=True)
    (o / "foreign" / "thesis.tex").write_text("do not touch")
    (o / "a_file").write_text("a file, not a directory")
    (o / "corrupt_ckpt").mkdir()
    (o / "corrupt_ckpt" / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    (o / "foreign_ckpt").mkdir()
    torch.save({"weight": torch.zeros(2)}, o / "foreign_ckpt" / "checkpoint.pt")
    (t / "bad.npz").write_bytes(b"not an npz")


NET3 = """
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, out="tensor"):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(3, 4, 3), nn.Linear(4, num_classes), out

    def forward(self, x):
        logits = self.fc(self.conv(x).mean((2, 3)))
        return logits[:, :3] if self.out == "wrong" else (logits, x)


def build(num_classes=10, out="tensor"):
    return Net(num_classes, out)
"""


def _own_model_fixtures(c: Path) -> None:
    """Cards of datafree/checkpoints.py and the forward check (docs/models.md)."""
    from datafree.models import create_model

    rgb = {"input_shape": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}
    torch.save({"state_dict": create_model("wrn16_1_post", 10).state_dict(), "epoch": 1}, c / "wrn_post.pt")
    write_card(c / "other_layout.json", arch="wrn16_1", weights="wrn_post.pt", **rgb)
    torch.save({"weights_here": {"a": 1}, "epoch": 3}, c / "no_state.pt")
    write_card(c / "no_state_dict.json", arch="wrn16_1", weights="no_state.pt", **rgb)
    (c / "net3.py").write_text(NET3)
    net3 = {"conv.weight": torch.zeros(4, 3, 3, 3), "conv.bias": torch.zeros(4)}
    net3.update({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)})
    torch.save(net3, c / "net3.pt")
    # 1x16x16 for a 3-channel conv
    write_card(c / "wrong_channels.json", arch="net3.py:build", weights="net3.pt")
    wrong = {"arch": "net3.py:build", "weights": "net3.pt", "arch_kwargs": {"out": "wrong"}}
    write_card(c / "wrong_output.json", **wrong, **rgb)


TEACHER = ["--teacher", "{t}/cards/ok.json"]
DIST_OK = ["distill", "--data", "{t}/ds/good", "--out", "{t}/new_out", *KD1]


def _card_case(what: str, card: str, expected: str) -> tuple[str, list[str], str]:
    """A case of ``evaluate --model`` on the broken card ``cards/CARD.json`` of the fixtures."""
    return what, ["evaluate", "--model", f"{{t}}/cards/{card}.json"], expected


def _set_case(what: str, pair: str, expected: str) -> tuple[str, list[str], str]:
    """A case of ``synthesize`` with one bad ``--set`` pair."""
    return what, ["synthesize", "-n", "2", "--out", "{t}/s", "--set", pair], expected


# (what, args, a piece of the expected one-line message)
CASES: list[tuple[str, list[str], str]] = [
    ("missing card file", ["evaluate", "--model", "{t}/nope.json"], "model card not found"),
    _card_case("card is not JSON", "not_json", "not valid JSON"),
    _card_case("card is binary garbage", "binary", "cannot read model card"),
    (
        "card path is a directory without model.json",
        ["evaluate", "--model", "{t}/ds"],
        "model card not found",
    ),
    _card_case("card is a JSON list", "list", "must be a JSON object"),
    _card_case("card without 'weights'", "missing_field", "missing field 'weights'"),
    _card_case("card num_classes is a string", "wrong_type", "field 'num_classes' must be int"),
    _card_case("card num_classes is a bool", "bool_classes", "field 'num_classes' must be int"),
    _card_case("card input_shape has 2 dims", "bad_shape", "input_shape must be [C, H, W]"),
    _card_case("card mean is a string", "bad_mean", "field 'mean' must be list"),
    _card_case("weights file missing", "missing_weights", "weights file not found"),
    _card_case("weights path is a directory", "weights_is_dir", "is a directory, not a weights file"),
    _card_case("truncated .pt checkpoint", "truncated", "corrupt or truncated checkpoint"),
    _card_case("empty .pt checkpoint", "empty", "corrupt or truncated checkpoint"),
    _card_case("corrupt safetensors", "garbage", "corrupt or unreadable safetensors"),
    _card_case("pickled full model", "pickled", "Pass --trust-checkpoint"),
    _card_case("weights of another arch", "mismatch", "do not match arch 'lenet5'"),
    _card_case("weights sha256 differs from card", "sha", "does not match the card"),
    _card_case("arch module not importable", "bad_import", "cannot import arch"),
    _card_case("arch file raises on import", "raising_import", "cannot import arch"),
    _card_case("checkpoint of another layout", "other_layout", "missing keys block1.layer.0.bn1.weight"),
    _card_case("checkpoint without a state dict", "no_state_dict", "no state dict found"),
    _card_case(
        "card input_shape with the wrong channels",
        "wrong_channels",
        "says 1 channel(s) but the model's first layer (conv) takes 3",
    ),
    _card_case("model output is not (N, num_classes)", "wrong_output", "expected logits (2, 10)"),
    ("card: no preset for a bare arch", ["card", "wrn16_1", "--out", "{t}/new_card.json"], "give --preset"),
    (
        "card: unknown timm model",
        ["card", "timm:resnet_nope", "--preset", "cifar10", "--out", "{t}/new_card.json"],
        "timm has no model 'resnet_nope'",
    ),
    (
        "card: unknown torchvision weights",
        ["card", "torchvision:resnet18", "--weights", "torchvision:IMAGENET9K", "--out", "{t}/new_card.json"],
        "has no weights 'IMAGENET9K'",
    ),
    _card_case("unknown arch name", "unknown_arch", "unknown architecture"),
    (
        "evaluate --data missing",
        ["evaluate", "--model", "resnet8_digits", "--data", "{t}/none.npz"],
        "not found",
    ),
    (
        "evaluate --data not an npz",
        ["evaluate", "--model", "resnet8_digits", "--data", "{t}/bad.npz"],
        "bad.npz",
    ),
    (
        "BN method on a teacher without BN",
        ["synthesize", "--teacher", "lenet5_digits", "-n", "2", "--out", "{t}/s", *TINY],
        "no BatchNorm",
    ),
    (
        "BN method on a card teacher without BN",
        ["synthesize", *TEACHER, "-n", "2", "--out", "{t}/s", *TINY],
        "no BatchNorm",
    ),
    ("--num-images 0", ["synthesize", "-n", "0", "--out", "{t}/s"], "must be > 0"),
    ("--num-images -3", ["synthesize", "-n", "-3", "--out", "{t}/s"], "must be > 0"),
    ("--num-images not a number", ["synthesize", "-n", "ten", "--out", "{t}/s"], "is not a valid integer"),
    ("--batch-size 0", ["synthesize", "-n", "2", "--batch-size", "0", "--out", "{t}/s"], "must be > 0"),
    ("--iterations -1", ["synthesize", "-n", "2", "--iterations", "-1", "--out", "{t}/s"], "must be > 0"),
    ("--threads 0", ["synthesize", "-n", "2", "--threads", "0", "--out", "{t}/s"], "must be > 0"),
    ("--seed -1", ["synthesize", "-n", "2", "--seed", "-1", "--out", "{t}/s"], "not in the range"),
    _set_case("--set value of wrong type", "bn_weight=lots", "must be a float"),
    _set_case("--set int given a float", "warmup=1.5", "must be a int"),
    _set_case("--set unknown key", "nosuch=1", "unknown option 'nosuch'"),
    _set_case("--set without =", "bn_weight", "expected KEY=VALUE"),
    _set_case("--set batch_size=0", "batch_size=0", "batch_size must be > 0"),
    _set_case("--set weight = inf", "bn_weight=inf", "must be finite"),
    _set_case("--set Adam beta out of range", "beta1=2", "beta1 must be in [0, 1)"),
    (
        "unknown method",
        ["synthesize", "-m", "nosuch", "-n", "2", "--out", "{t}/s"],
        "unknown method 'nosuch'",
    ),
    ("unknown device", ["synthesize", "-n", "2", "--out", "{t}/s", "--device", "tpu:9"], "bad --device"),
    (
        "CUDA asked, none present",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--device", "cuda"],
        "no CUDA device",
    ),
    ("--out is a file", ["synthesize", "-n", "2", "--out", "{t}/out/a_file", *TINY], "is not a directory"),
    (
        "--out holds other files",
        ["synthesize", "-n", "2", "--out", "{t}/out/foreign", *TINY],
        "not empty and holds no dataset",
    ),
    ("--out cannot be created", ["synthesize", "-n", "2", "--out", "/proc/datafree-out", *TINY], "cannot"),
    ("--out under a file", ["synthesize", "-n", "2", "--out", "{t}/out/a_file/sub", *TINY], "cannot"),
    (
        "--out holds another dataset",
        ["synthesize", "-n", "2", "--out", "{t}/ds/good", *TINY],
        "different synthetic dataset",
    ),
    ("distill: neither --data nor --method", ["distill", "--out", "{t}/new_out"], "exactly one of --data"),
    ("distill: --set with --data", [*DIST_OK, "--set", "bn_weight=2"], "needs --method, not --data"),
    ("--epochs 0", [*DIST_OK, "--epochs", "0"], "must be > 0"),
    ("--steps-per-epoch -2", [*DIST_OK, "--steps-per-epoch", "-2"], "must be > 0"),
    ("--kd-batch-size 0", [*DIST_OK, "--kd-batch-size", "0"], "must be > 0"),
    ("--lr 0", [*DIST_OK, "--lr", "0"], "lr must be a positive number"),
    ("--lr nan", [*DIST_OK, "--lr", "nan"], "lr must be a positive number"),
    ("--temperature -1", [*DIST_OK, "--temperature", "-1"], "temperature must be a positive number"),
    ("--temperature 1e30", [*DIST_OK, "--temperature", "1e30"], "temperature must be at most 1.8e+19"),
    ("--kd class_balance=-1", [*DIST_OK, "--kd", "class_balance=-1"], "class_balance must be a number >= 0"),
    ("unknown student", [*DIST_OK, "--student", "nosuch"], "unknown architecture 'nosuch'"),
    ("dataset dir has no manifest", [*DIST_OK, "--data", "{t}/ds/empty_dir"], "not a synthetic dataset"),
    ("dataset dir missing", [*DIST_OK, "--data", "{t}/ds/none"], "not a synthetic dataset"),
    ("manifest is not JSON", [*DIST_OK, "--data", "{t}/ds/bad_json"], "unreadable manifest"),
    ("manifest lacks num_classes", [*DIST_OK, "--data", "{t}/ds/missing_key"], "manifest lacks one of"),
    (
        "manifest shard_size is a string",
        [*DIST_OK, "--data", "{t}/ds/wrong_type"],
        "shard_size must be a positive int",
    ),
    (
        "dataset from another teacher",
        [*DIST_OK, "--data", "{t}/ds/other_teacher"],
        "synthesised from another teacher",
    ),
    (
        "dataset for another input shape",
        [*DIST_OK, "--data", "{t}/ds/other_shape"],
        "was made for input [3, 32, 32]",
    ),
    ("shard labels out of range", [*DIST_OK, "--data", "{t}/ds/labels_range"], "labels must be in [0, 10)"),
    ("shard images NaN", [*DIST_OK, "--data", "{t}/ds/nan_images"], "images must be finite pixels"),
    ("shard labels int32", [*DIST_OK, "--data", "{t}/ds/wrong_dtype"], "labels is (4,) torch.int32"),
    (
        "shard count disagrees with manifest",
        [*DIST_OK, "--data", "{t}/ds/count_disagrees"],
        "the manifest expects 3",
    ),
    ("truncated shard", [*DIST_OK, "--data", "{t}/ds/truncated_shard"], "corrupt shard"),
    ("distill --out holds other files", [*DIST_OK, "--out", "{t}/out/foreign"], "already holds other files"),
    ("distill --out is a file", [*DIST_OK, "--out", "{t}/out/a_file"], "is not a directory"),
    ("distill --out cannot be created", [*DIST_OK, "--out", "/proc/datafree-out"], "cannot write to --out"),
    ("corrupt KD checkpoint in --out", [*DIST_OK, "--out", "{t}/out/corrupt_ckpt"], "corrupt checkpoint"),
    (
        "foreign checkpoint.pt in --out",
        [*DIST_OK, "--out", "{t}/out/foreign_ckpt"],
        "not a datafree KD checkpoint",
    ),
    (
        "export: not a dataset",
        ["export", "{t}/ds/empty_dir", "--format", "npz", "--out", "{t}/e.npz"],
        "not a synthetic dataset",
    ),
    (
        "export: unknown format",
        ["export", "{t}/ds/good", "--format", "tiff", "--out", "{t}/e"],
        "Invalid value for '--format'",
    ),
    (
        "compress: BN method on a teacher without BN",
        ["compress", "--teacher", "lenet5_digits", "--method", "deepinversion", "--out", "{t}/c", "-n", "2"],
        "no BatchNorm",
    ),
    (
        "compress: unknown student",
        ["compress", "--student", "nosuch", "--out", "{t}/c", "-n", "2", "--iterations", "1"],
        "unknown architecture",
    ),
    ("unknown command", ["synthesise"], "No such command 'synthesise'"),
    ("unknown option", ["synthesize", "--num-imgs", "2"], "No such option '--num-imgs'"),
]


def fill(args: list[str], t: Path) -> list[str]:
    """Substitute the fixtures directory for ``{t}``."""
    return [a.replace("{t}", str(t)) for a in args]
