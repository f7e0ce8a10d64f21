"""The CIFAR zoo: published parameter counts and the community checkpoints' key names."""

from __future__ import annotations

import json

import pytest
import torch

from datafree.models import count_arch_params, create_model, default_student_for

# Published counts at 10 classes (CIFAR ResNets of DAFL/CMI, WRNs of ZSKT/CMI; the issue quotes the
# first two).
PUBLISHED_10 = {
    "resnet34_cifar": 21_282_122,
    "wrn40_2": 2_243_546,
    "resnet18_cifar": 11_173_962,
    "resnet50_cifar": 23_520_842,
    "wrn16_2": 691_674,
    "wrn40_1": 563_930,
    "wrn16_1": 175_066,
}


def test_models_json_gives_the_published_counts(run):
    r = run("models", "--json")
    assert r.exit_code == 0, r.output
    rows = {d["name"]: d for d in json.loads(r.stdout)}
    assert all(set(d) == {"name", "params", "description"} and d["description"] for d in rows.values())
    for name, params in PUBLISHED_10.items():
        assert rows[name]["params"] == params, name
    assert rows["wrn40_2_post"]["params"] == 2_248_490  # the old post-activation model, kept under a new name


def test_models_table_shows_params(run):
    r = run("models")
    assert r.exit_code == 0 and "21,282,122" in r.stdout and "wrn40_2" in r.stdout


def test_mobilenetv2_has_torchvision_keys_and_shapes():
    import torchvision

    ours = create_model("mobilenetv2_cifar", 10).state_dict()
    ref = torchvision.models.mobilenet_v2(num_classes=10).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in ref.items()]


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def community_resnet_keys(blocks: tuple[int, ...]) -> list[str]:
    """The key names of DAFL/CMI's CIFAR ResNet (BasicBlock), written out from their naming scheme."""
    keys = ["conv1.weight", *_bn("bn1")]
    in_planes = 64
    for s, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(n):
            p = f"layer{s}.{i}"
            keys += [f"{p}.conv1.weight", *_bn(f"{p}.bn1"), f"{p}.conv2.weight", *_bn(f"{p}.bn2")]
            if (s > 1 and i == 0) or in_planes != planes:
                keys += [f"{p}.shortcut.0.weight", *_bn(f"{p}.shortcut.1")]
            in_planes = planes
    return keys + ["linear.weight", "linear.bias"]


def community_wrn_keys(depth: int, width: int) -> list[str]:
    """The key names of ZSKT/CMI's pre-activation WideResNet, written out from their naming scheme."""
    n = (depth - 4) // 6
    keys = ["conv1.weight"]
    planes = [16, 16 * width, 32 * width, 64 * width]
    for g in range(1, 4):
        for i in range(n):
            p = f"block{g}.layer.{i}"
            keys += [*_bn(f"{p}.bn1"), f"{p}.conv1.weight", *_bn(f"{p}.bn2"), f"{p}.conv2.weight"]
            if i == 0 and planes[g - 1] != planes[g]:
                keys.append(f"{p}.convShortcut.weight")
    return keys + [*_bn("bn1"), "fc.weight", "fc.bias"]


def community_vgg_keys(groups: list[int]) -> list[str]:
    """The key names of RepDistiller/CMI's VGG-BN: ``blockN`` of (conv, BN, ReLU) minus the last ReLU."""
    keys = []
    for b, n in enumerate(groups):
        for j in range(n):
            keys += [f"block{b}.{3 * j}.weight", f"block{b}.{3 * j}.bias", *_bn(f"block{b}.{3 * j + 1}")]
    return keys + ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet34_cifar", community_resnet_keys((3, 4, 6, 3))),
        ("resnet18_cifar", community_resnet_keys((2, 2, 2, 2))),
        ("wrn40_2", community_wrn_keys(40, 2)),
        ("wrn16_1", community_wrn_keys(16, 1)),
        ("wrn16_2", community_wrn_keys(16, 2)),
        ("vgg8_cifar", community_vgg_keys([1, 1, 1, 1, 1])),
        ("vgg13_cifar", community_vgg_keys([2, 2, 2, 2, 2])),
    ],
)
def test_zoo_keys_are_the_community_keys(arch, expected):
    with torch.device("meta"):
        keys = list(create_model(arch, 10).state_dict())
    assert sorted(keys) == sorted(expected)


def test_default_students_are_the_fields_pairs_and_smaller():
    """The field's pairs (ResNet-18 is 52% of ResNet-34: smaller, not half)."""
    assert default_student_for("resnet34_cifar") == "resnet18_cifar"
    assert default_student_for("wrn40_2") == "wrn16_2"
    assert default_student_for("vgg13_cifar") == "vgg8_cifar"
    teachers = [
        "resnet34_cifar",
        "resnet50_cifar",
        "resnet18_cifar",
        "mobilenetv2_cifar",
        "wrn40_2",
        "wrn40_1",
    ]
    teachers += ["wrn16_2", "vgg13_cifar", "vgg11_cifar", "vgg8_cifar", "wrn40_2_post", "wrn16_2_post"]
    for teacher in teachers:
        assert count_arch_params(default_student_for(teacher)) < 0.6 * count_arch_params(teacher), teacher


def test_vgg_pool_before_block4_is_an_arch_kwarg():
    x = torch.zeros(1, 3, 64, 64)
    m = create_model("vgg8_cifar", 10, pool_before_block4=True).eval()
    feats = []
    m.block4.register_forward_hook(lambda mod, i, o: feats.append(o.shape[-1]))
    assert m(x).shape == (1, 10) and feats == [4]  # 64 / 16: the reference's 64x64 path
