import json
import shutil

import pytest
import torch

from datafree.cards import load_card, load_model, save_model, shipped_teachers
from datafree.errors import UserInputError
from datafree.models import create_model
from tests.cli_cases import write_card
from tests.conftest import CUSTOM_CARD


def _card(tmp_path, **fields):
    return write_card(tmp_path / "card.json", **{"weights": "w.pt", **fields})


def test_shipped_teachers_load_and_match_their_sha(bn_teacher, plain_teacher):
    assert set(shipped_teachers()) >= {"resnet8_digits", "lenet5_digits"}
    assert bn_teacher.card.sha256 and plain_teacher.card.sha256
    assert not any(p.requires_grad for p in bn_teacher.model.parameters())
    assert not bn_teacher.model.training


def test_registry_arch_from_state_dict_pt(tmp_path):
    torch.save(create_model("lenet5", 10, 1).state_dict(), tmp_path / "w.pt")
    lm = load_model(_card(tmp_path))
    assert lm.model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)


def test_torchvision_arch(tmp_path):
    torch.save(create_model("torchvision:squeezenet1_1", 4, 3).state_dict(), tmp_path / "w.pt")
    lm = load_model(
        _card(
            tmp_path,
            arch="torchvision:squeezenet1_1",
            num_classes=4,
            input_shape=[3, 32, 32],
            mean=[0.5] * 3,
            std=[0.5] * 3,
        )
    )
    assert lm.model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_module_callable_arch(tmp_path):
    torch.save(create_model("resnet8_half", 3, 3).state_dict(), tmp_path / "w.pt")
    # datafree.models.resnet:resnet8_half is importable as package.module:callable (3 input channels default)
    lm = load_model(
        _card(
            tmp_path,
            arch="datafree.models.resnet:resnet8_half",
            num_classes=3,
            input_shape=[3, 8, 8],
            mean=[0.0] * 3,
            std=[1.0] * 3,
        )
    )
    assert lm.model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_file_callable_arch_with_other_input_shape(custom_teacher):
    assert custom_teacher.card.arch == "net.py:build"
    assert custom_teacher.card.input_shape == [3, 24, 24]
    assert custom_teacher.model(torch.zeros(1, 3, 24, 24)).shape == (1, 10)


def test_sha_mismatch_is_refused(tmp_path):
    torch.save(create_model("lenet5", 10, 1).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserInputError, match="sha256"):
        load_model(_card(tmp_path, sha256="0" * 64))


def test_pickled_module_is_refused_unless_trusted(tmp_path):
    torch.save(create_model("lenet5", 10, 1), tmp_path / "w.pt")  # a whole pickled module
    with pytest.raises(UserInputError, match="--trust-checkpoint"):
        load_model(_card(tmp_path))
    assert load_model(_card(tmp_path), trust_checkpoint=True).model is not None


def test_weights_that_do_not_match_the_arch(tmp_path):
    torch.save(create_model("resnet8", 10, 1).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserInputError, match="do not match arch 'lenet5'"):
        load_model(_card(tmp_path))


@pytest.mark.parametrize(
    "fields, msg",
    [
        ({"num_classes": "ten"}, "num_classes"),
        ({"input_shape": [16, 16]}, "input_shape"),
        ({"mean": [0.1, 0.2]}, "mean"),
        ({"std": [0.0]}, "std"),
        ({"arch": "nosuchmod:fn"}, "cannot import"),
        ({"arch": "missing.py:fn"}, "not found"),
    ],
)
def test_bad_cards_name_the_problem(tmp_path, fields, msg):
    torch.save(create_model("lenet5", 10, 1).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserInputError, match=msg):
        load_model(_card(tmp_path, **fields))


def test_missing_field(tmp_path):
    p = _card(tmp_path)
    d = json.loads(p.read_text())
    del d["weights"]
    p.write_text(json.dumps(d))
    with pytest.raises(UserInputError, match="missing field 'weights'"):
        load_card(p)


def test_truncated_weights(tmp_path):
    torch.save(create_model("lenet5", 10, 1).state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="corrupt"):
        load_model(_card(tmp_path))


def test_save_model_round_trip(tmp_path, bn_teacher):
    card = save_model(bn_teacher.model, tmp_path / "out", like=bn_teacher.card, test_accuracy=0.5)
    assert (tmp_path / "out" / "model.json").is_file()
    again = load_model(tmp_path / "out")
    x = torch.randn(4, 1, 16, 16)
    assert torch.equal(again.model(x), bn_teacher.model(x))
    assert again.card.sha256 == card.sha256 and again.card.test_accuracy == 0.5


def test_custom_card_can_be_copied_elsewhere(tmp_path):
    dst = tmp_path / "custom"
    shutil.copytree(CUSTOM_CARD.parent, dst)
    lm = load_model(dst / "model.json")
    assert lm.card.in_channels == 3
