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


def _card(path: Path, **fields: object) -> None:
    d = {
        "arch": "lenet5",
        "weights": "lenet5.pt",
        "num_classes": 10,
        "input_shape": [1, 16, 16],
        "mean": [0.3],
        "std": [0.3],
    }
    d.update(fields)
    path.write_text(json.dumps(d))


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
    _card(c / "ok.json")
    _card(c / "missing_weights.json", weights="nowhere.pt")
    _card(c / "truncated.json", weights="truncated.pt")
    _card(c / "empty.json", weights="empty.pt")
    _card(c / "garbage.json", weights="garbage.safetensors")
    _card(c / "pickled.json", weights="pickled.pt")
    _card(c / "mismatch.json", weights="resnet8.pt")
    _card(c / "sha.json", sha256="0" * 64)
    _card(c / "bad_import.json", arch="nosuch_package.nets:build")
    _card(c / "raising_import.json", arch="raises.py:build")
    _own_model_fixtures(c)
    _card(c / "unknown_arch.json", arch="no_such_net")
    _card(c / "wrong_type.json", num_classes="ten")
    _card(c / "bad_shape.json", input_shape=[16, 16])
    _card(c / "bad_mean.json", mean="0.3")
    _card(c / "bool_classes.json", num_classes=True)
    _card(c / "weights_is_dir.json", weights=".")
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
    _card(c / "other_layout.json", arch="wrn16_1", weights="wrn_post.pt", **rgb)
    torch.save({"weights_here": {"a": 1}, "epoch": 3}, c / "no_state.pt")
    _card(c / "no_state_dict.json", arch="wrn16_1", weights="no_state.pt", **rgb)
    (c / "net3.py").write_text(NET3)
    net3 = {"conv.weight": torch.zeros(4, 3, 3, 3), "conv.bias": torch.zeros(4)}
    net3.update({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)})
    torch.save(net3, c / "net3.pt")
    _card(c / "wrong_channels.json", arch="net3.py:build", weights="net3.pt")  # 1x16x16 for a 3-channel conv
    wrong = {"arch": "net3.py:build", "weights": "net3.pt", "arch_kwargs": {"out": "wrong"}}
    _card(c / "wrong_output.json", **wrong, **rgb)


TEACHER = ["--teacher", "{t}/cards/ok.json"]
DIST_OK = ["distill", "--data", "{t}/ds/good", "--out", "{t}/new_out", *KD1]

# (what, args, a piece of the expected one-line message)
CASES: list[tuple[str, list[str], str]] = [
    ("missing card file", ["evaluate", "--model", "{t}/nope.json"], "model card not found"),
    ("card is not JSON", ["evaluate", "--model", "{t}/cards/not_json.json"], "not valid JSON"),
    ("card is binary garbage", ["evaluate", "--model", "{t}/cards/binary.json"], "cannot read model card"),
    (
        "card path is a directory without model.json",
        ["evaluate", "--model", "{t}/ds"],
        "model card not found",
    ),
    ("card is a JSON list", ["evaluate", "--model", "{t}/cards/list.json"], "must be a JSON object"),
    (
        "card without 'weights'",
        ["evaluate", "--model", "{t}/cards/missing_field.json"],
        "missing field 'weights'",
    ),
    (
        "card num_classes is a string",
        ["evaluate", "--model", "{t}/cards/wrong_type.json"],
        "field 'num_classes' must be int",
    ),
    (
        "card num_classes is a bool",
        ["evaluate", "--model", "{t}/cards/bool_classes.json"],
        "field 'num_classes' must be int",
    ),
    (
        "card input_shape has 2 dims",
        ["evaluate", "--model", "{t}/cards/bad_shape.json"],
        "input_shape must be [C, H, W]",
    ),
    (
        "card mean is a string",
        ["evaluate", "--model", "{t}/cards/bad_mean.json"],
        "field 'mean' must be list",
    ),
    (
        "weights file missing",
        ["evaluate", "--model", "{t}/cards/missing_weights.json"],
        "weights file not found",
    ),
    (
        "weights path is a directory",
        ["evaluate", "--model", "{t}/cards/weights_is_dir.json"],
        "is a directory, not a weights file",
    ),
    (
        "truncated .pt checkpoint",
        ["evaluate", "--model", "{t}/cards/truncated.json"],
        "corrupt or truncated checkpoint",
    ),
    (
        "empty .pt checkpoint",
        ["evaluate", "--model", "{t}/cards/empty.json"],
        "corrupt or truncated checkpoint",
    ),
    (
        "corrupt safetensors",
        ["evaluate", "--model", "{t}/cards/garbage.json"],
        "corrupt or unreadable safetensors",
    ),
    ("pickled full model", ["evaluate", "--model", "{t}/cards/pickled.json"], "Pass --trust-checkpoint"),
    (
        "weights of another arch",
        ["evaluate", "--model", "{t}/cards/mismatch.json"],
        "do not match arch 'lenet5'",
    ),
    (
        "weights sha256 differs from card",
        ["evaluate", "--model", "{t}/cards/sha.json"],
        "does not match the card",
    ),
    (
        "arch module not importable",
        ["evaluate", "--model", "{t}/cards/bad_import.json"],
        "cannot import arch",
    ),
    (
        "arch file raises on import",
        ["evaluate", "--model", "{t}/cards/raising_import.json"],
        "cannot import arch",
    ),
    (
        "checkpoint of another layout",
        ["evaluate", "--model", "{t}/cards/other_layout.json"],
        "missing keys block1.layer.0.bn1.weight",
    ),
    (
        "checkpoint without a state dict",
        ["evaluate", "--model", "{t}/cards/no_state_dict.json"],
        "no state dict found",
    ),
    (
        "card input_shape with the wrong channels",
        ["evaluate", "--model", "{t}/cards/wrong_channels.json"],
        "says 1 channel(s) but the model's first layer (conv) takes 3",
    ),
    (
        "model output is not (N, num_classes)",
        ["evaluate", "--model", "{t}/cards/wrong_output.json"],
        "expected logits (2, 10)",
    ),
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
    ("unknown arch name", ["evaluate", "--model", "{t}/cards/unknown_arch.json"], "unknown architecture"),
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
    (
        "--set value of wrong type",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "bn_weight=lots"],
        "must be a float",
    ),
    (
        "--set int given a float",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "warmup=1.5"],
        "must be a int",
    ),
    (
        "--set unknown key",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "nosuch=1"],
        "unknown option 'nosuch'",
    ),
    (
        "--set without =",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "bn_weight"],
        "expected KEY=VALUE",
    ),
    (
        "--set batch_size=0",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "batch_size=0"],
        "batch_size must be > 0",
    ),
    (
        "--set weight = inf",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "bn_weight=inf"],
        "must be finite",
    ),
    (
        "--set Adam beta out of range",
        ["synthesize", "-n", "2", "--out", "{t}/s", "--set", "beta1=2"],
        "beta1 must be in [0, 1)",
    ),
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
        "compress: teacher without BN",
        ["compress", "--teacher", "lenet5_digits", "--out", "{t}/c", "-n", "2"],
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
