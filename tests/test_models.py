import pytest
import torch
from torch import nn

from datafree.errors import UserInputError
from datafree.models import MODELS, create_model, default_student_for
from datafree.registry import Registry


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 24, 20)])
def test_every_registered_model_adapts_to_input_and_classes(name, shape):
    model = create_model(name, num_classes=7, in_channels=shape[0]).eval()
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_no_activation_module_is_reused(name):
    model = create_model(name, 10, 1)
    calls = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
        for m in model.modules()
        if isinstance(m, (nn.ReLU, nn.ReLU6))
    ]
    model(torch.randn(2, 1, 16, 16))
    for h in hooks:
        h.remove()
    assert calls and max(calls.values()) == 1


def test_torchvision_model_by_name_with_one_channel():
    model = create_model("torchvision:resnet18", num_classes=5, in_channels=1).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_unknown_model_names_the_choices():
    with pytest.raises(UserInputError, match="resnet8"):
        create_model("nope", 10)


def test_registry_refuses_duplicates():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(KeyError):
        reg.register("A")(lambda: 2)


def test_default_students_are_smaller():
    for teacher in ("resnet8", "lenet5"):
        t = sum(p.numel() for p in create_model(teacher, 10, 1).parameters())
        s = sum(p.numel() for p in create_model(default_student_for(teacher), 10, 1).parameters())
        assert s < t / 2
