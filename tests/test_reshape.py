"""Card ``module_shapes``: resizing modules of a freshly built model to a pruned model's sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree.errors import UserInputError
from datafree.reshape import apply_module_shapes, module_shapes, shape_changes


def _net(c1: int = 8, c2: int = 6, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.PReLU(c1),
        nn.Conv2d(c1, c1, 3, padding=1, groups=groups), nn.GroupNorm(2, c1),
        nn.ConvTranspose2d(c1, c2, 2, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 5),
    )  # fmt: skip


@pytest.mark.parametrize("groups", [1, "depthwise"])
def test_resized_modules_load_the_smaller_state_dict(groups):
    big = _net(8, 6, 1 if groups == 1 else 8)
    small = _net(4, 2, 1 if groups == 1 else 4)
    changes = shape_changes(big, small)
    assert set(changes) == {"0", "1", "2", "3", "4", "5", "8"}
    assert changes["8"] == {"in_features": 2, "out_features": 5}
    rebuilt = apply_module_shapes(_net(8, 6, 1 if groups == 1 else 8), changes)
    rebuilt.load_state_dict(small.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(rebuilt.eval()(x), small.eval()(x))
    assert module_shapes(rebuilt) == module_shapes(small)


def test_unchanged_model_has_no_changes():
    assert shape_changes(_net(), _net()) == {}


def test_resized_module_of_unsupported_type_is_refused():
    a = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    b = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    b[1].weight = nn.Parameter(torch.ones(3))
    with pytest.raises(UserInputError, match="LayerNorm"):
        shape_changes(a, b)


@pytest.mark.parametrize(
    "shapes, match",
    [
        ({"9": {"out_features": 2}}, "does not have"),
        ({"6": {"output_size": 2}}, "cannot be resized"),
        ({"0": {"kernel_size": 2}}, "kernel_size"),
        ({"0": {"out_channels": 0}}, "out_channels"),
        ({"3": {"out_channels": 5, "groups": 2}}, "groups"),
    ],
)
def test_bad_module_shapes_are_user_errors(shapes, match):
    with pytest.raises(UserInputError, match=match):
        apply_module_shapes(_net(), shapes)
