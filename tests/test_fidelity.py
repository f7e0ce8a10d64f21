"""Issue 11: the reduced fidelity bench, the rule-based defaults and the teacher-quality statistics.

The bench runs on one tiny untrained teacher per suite family, with a few steps per stage.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from datafree.cards import ASSETS_DIR, load_model, save_model
from datafree.models import create_model

ROOT = Path(__file__).resolve().parent.parent


def _tiny_card(tmp: Path, name: str, arch: str, shape: tuple[int, int, int], **kw) -> str:
    """A randomly initialised teacher of one suite family, saved as a card (no training: fast)."""
    import importlib.util

    d = tmp / name
    d.mkdir(parents=True)
    torch.manual_seed(0)
    if arch.startswith("net.py:"):
        shutil.copyfile(ASSETS_DIR / "suite_nets.py", d / "net.py")
        spec = importlib.util.spec_from_file_location("suite_nets_test", d / "net.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = getattr(mod, arch.split(":")[1])(num_classes=10)
    else:
        model = create_model(arch, 10, shape[0], **kw)
    save_model(
        model.eval(),
        d,
        arch=arch,
        name="model",
        card_name=name,
        num_classes=10,
        input_shape=list(shape),
        mean=[0.5] * shape[0],
        std=[0.25] * shape[0],
        arch_kwargs=kw,
    )
    return str(d / "model.json")


def test_fidelity_bench_reduced(tmp_path: Path) -> None:
    """Every suite family at a tiny size through bench/fidelity.py --quick: a row, a table, one PNG."""
    from bench.fidelity import main

    teachers = [
        _tiny_card(tmp_path, "tv_resnet18", "resnet18", (3, 16, 16)),
        _tiny_card(tmp_path, "tv_mobilenet", "mobilenet_v2", (3, 16, 16), width_mult=0.25),
        _tiny_card(tmp_path, "wrn", "wrn16_1", (3, 16, 16)),
        _tiny_card(tmp_path, "plain", "net.py:plain_cnn", (3, 16, 16)),
    ]
    out = tmp_path / "results"
    # BN families with DeepInversion (dafl on the BN-less one is skipped there: BN methods need BN),
    # then the BN-less family with DAFL, merged into the same table.
    assert (
        main(["--quick", "--teachers", ",".join(teachers), "--methods", "deepinversion", "--out", str(out)])
        == 0
    )
    assert (
        main(["--quick", "--teachers", teachers[3], "--methods", "dafl", "--out", str(out), "--merge"]) == 0
    )
    rows = json.loads((out / "fidelity.json").read_text())["rows"]
    cells = {(r["teacher"], r["method"]) for r in rows}
    assert cells == {
        ("tv_resnet18", "deepinversion"),
        ("tv_mobilenet", "deepinversion"),
        ("wrn", "deepinversion"),
        ("plain", "dafl"),
    }
    for r in rows:
        assert 0.0 <= r["student_acc"] <= 1.0 and r["noise_acc"] is not None and r["wall_s"] > 0
        if r["method"] == "deepinversion":  # targets exist: agreement and confidence are measured
            assert 0.0 <= r["agreement"] <= 1.0 and 0.1 <= r["confidence"] <= 1.0
            assert r["steps_per_batch"] and max(r["steps_per_batch"]) <= 4
        else:
            assert r["agreement"] is None
    assert "% of teacher" in (out / "fidelity.md").read_text()
    from PIL import Image

    with Image.open(out / "fidelity.png") as im:
        assert im.size[0] > 200 and im.size[1] > 136  # the last run's cells


def test_fidelity_bench_rejects_unknown_method(tmp_path: Path, capsys) -> None:
    """An unknown method: exit status 2 and one line."""
    from bench.fidelity import main

    assert main(["--quick", "--teachers", "resnet8_digits", "--methods", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_deepinversion_rules_keep_the_reference_and_scale() -> None:
    """At 1x16x16 the rules give the measured constants; at 3x32x32 the priors keep their per-pixel pull."""
    from datafree.rules import deepinversion_defaults, size_factor
    from generators.deepinversion import DeepInversionConfig

    ref = DeepInversionConfig()
    d = deepinversion_defaults((1, 16, 16))
    assert d == {
        "batch_size": ref.batch_size,
        "iterations": ref.iterations,
        "lr": ref.lr,
        "tv_l2_weight": ref.tv_l2_weight,
        "l2_weight": ref.l2_weight,
    }
    assert size_factor((3, 32, 32)) == pytest.approx(12**0.5)
    d32 = deepinversion_defaults((3, 32, 32))
    assert d32["iterations"] == round(200 * 12**0.25) and d32["tv_l2_weight"] == pytest.approx(1e-2 * 12**0.5)
    d224 = deepinversion_defaults((3, 224, 224))
    assert d224["batch_size"] == 64 and d224["iterations"] == round(200 * 588**0.25)
    assert d32["lr"] == 0.1 and d224["lr"] == pytest.approx(0.25, abs=0.01)


def test_rules_apply_through_create_synthesizer_and_set_wins(custom_teacher) -> None:
    """Rules fill what is not given; what is given wins."""
    from generators import create_synthesizer

    s = create_synthesizer("deepinversion", custom_teacher.model, custom_teacher.card)
    assert s.config.iterations == round(200 * (3 * 24 * 24 / 256) ** 0.25)
    s = create_synthesizer(
        "deepinversion", custom_teacher.model, custom_teacher.card, iterations=7, tv_l2_weight=0.5
    )
    assert s.config.iterations == 7 and s.config.tv_l2_weight == 0.5


def test_plateau_stops_a_batch_before_the_cap(bn_teacher) -> None:
    """Without a tolerance every step runs; with one a batch stops early."""
    from generators import create_synthesizer

    kw = {"batch_size": 8, "iterations": 60, "warmup": 2, "plateau_patience": 3}
    never = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, plateau_tol=0.0, **kw)
    never.synthesize(8, torch.Generator().manual_seed(0))
    assert never.steps_taken == [60]
    # A tolerance of 99% per 3 steps is a plateau almost at once: the batch stops early.
    eager = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, plateau_tol=0.99, **kw)
    batch = eager.synthesize(8, torch.Generator().manual_seed(0))
    assert eager.steps_taken[0] < 60 and batch.images.shape == (8, 1, 16, 16)


def test_plateau_tol_validated(bn_teacher) -> None:
    """A tolerance outside [0, 1) is a user error."""
    from datafree.errors import UserInputError
    from generators import create_synthesizer

    with pytest.raises(UserInputError, match="plateau_tol"):
        create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, plateau_tol=1.5)


def test_default_student_by_size(bn_teacher, plain_teacher) -> None:
    """The rule reproduces the measured pairs on the shipped teachers and picks by size elsewhere."""
    from datafree.rules import choose_student

    assert choose_student(bn_teacher.model, bn_teacher.card)["arch"] == "resnet8_half"
    # a BN-less teacher: a student with BN by default (session 17), its own BN-ness on request (DFAD's)
    assert choose_student(plain_teacher.model, plain_teacher.card)["arch"] == "lenet5_half_bn"
    assert choose_student(plain_teacher.model, plain_teacher.card, "teacher")["arch"] == "lenet5_half"
    assert choose_student(bn_teacher.model, bn_teacher.card, "teacher")["arch"] == "resnet8_half"
    # A large BN teacher at 3x32x32: a BN student with <= 1/4 of its parameters and <= 1/2 its MACs.
    teacher = create_model("resnet20", 10, 3).eval()
    card = load_model("resnet8_digits").card
    card.input_shape, card.mean, card.std = [3, 32, 32], [0.5] * 3, [0.25] * 3
    c = choose_student(teacher, card)
    assert c["params"] <= 1.1 * c["teacher_params"] / 4 and c["macs"] <= c["teacher_macs"] / 2
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in create_model(c["arch"], 10, 3).modules())


def test_bn_less_teacher_gets_a_bn_student_in_the_size_window(plain_teacher) -> None:
    """A BN-less VGG-style teacher gets a BN student near the 1/20 window, not LeNet-5.

    At 3x32x32 with 4M parameters (like the suite's vgg8_32), no BN-less arch of the registry comes near
    1/20 of it (lenet5 is 1/88), so preferring the teacher's BN-ness gave LeNet-5; preferring BN gives a
    student of at least 1/25 of its parameters, with BN.
    """
    import dataclasses

    from torch import nn

    from datafree.cards import LoadedModel
    from datafree.rules import choose_student, default_student_arch

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c_in = 3
    for c in (64, 128, 256, 512):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]  # fmt: skip
        c_in = c
    teacher = nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 2 * 2, 10)).eval()
    card = dataclasses.replace(plain_teacher.card, input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3,
                               arch="custom")  # fmt: skip
    big = LoadedModel(teacher, card)
    c = choose_student(big.model, big.card)
    assert any(isinstance(m, nn.BatchNorm2d) for m in create_model(c["arch"], 10, 3).modules())
    assert 25 * c["params"] >= c["teacher_params"] >= 4 * c["params"]
    old = choose_student(big.model, big.card, "teacher")
    assert old["arch"] == "lenet5" and old["teacher_params"] > 80 * old["params"]
    assert default_student_arch(big.model, big.card, "teacher") == "lenet5"  # DFAD: the teacher's BN-ness
    assert default_student_arch(big.model, big.card) == c["arch"]


@pytest.mark.parametrize("method", [None, "auto", "dafl", "zskt", "dfad", "deepinversion", "nayer"])
def test_default_student_per_method(method, bn_teacher, plain_teacher) -> None:
    """DAFL's LeNet-5 -> LeNet-5-half pair becomes its BN twin, except for DFAD; BN teachers keep theirs."""
    from datafree.plan import make_student

    assert make_student(None, bn_teacher, 0, method)[1] == "resnet8_half"
    want = "lenet5_half" if method == "dfad" else "lenet5_half_bn"
    assert make_student(None, plain_teacher, 0, method)[1] == want
    assert make_student("lenet5_half", plain_teacher, 0, method)[1] == "lenet5_half"  # --student wins


def test_warns_when_student_not_smaller(bn_teacher) -> None:
    """A given student as large as the teacher is built with a warning."""
    from datafree.plan import make_student

    with pytest.warns(UserWarning, match="not fewer than the teacher"):
        make_student("resnet20", bn_teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_student("resnet8_quarter", bn_teacher)


def test_kd_budget_scales_with_images() -> None:
    """40 steps per epoch at 1024 images, sqrt growth, at least 10."""
    from datafree.rules import kd_budget

    assert kd_budget(1024) == 40 and kd_budget(4096) == 80 and kd_budget(256) == 20 and kd_budget(1) == 10


def test_teacher_quality_from_shards(tmp_path: Path, bn_teacher) -> None:
    """Agreement and confidence come from the stored teacher logits; argmax labels give no agreement."""
    from datafree.dataset import SyntheticDataset
    from datafree.quality import teacher_quality

    ds = SyntheticDataset.create(
        tmp_path / "ds",
        method="t",
        num_images=4,
        shard_size=4,
        input_shape=[1, 16, 16],
        mean=bn_teacher.card.mean,
        std=bn_teacher.card.std,
        num_classes=10,
    )
    logits = torch.full((4, 10), -10.0)
    logits[torch.arange(4), torch.tensor([0, 1, 2, 2])] = 10.0
    ds.write_shard(0, torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3]), logits)
    ds.write_manifest()
    q = teacher_quality(ds)
    assert q["images"] == 4 and q["agreement"] == 0.75 and q["confidence"] == pytest.approx(1.0, abs=1e-4)
    assert q["min_class_fraction"] == 0.0
    assert q["rare_classes"] is None  # 4 images of 10 classes: too few per class to name one
    assert teacher_quality(ds, labels_are_targets=False)["agreement"] is None


def test_agreement_warning_judges_only_backends_with_a_floor() -> None:
    """Under the floor: one line naming the share; at or over it, no floor, or no targets: silent."""
    from datafree.quality import agreement_warning
    from generators import method_class

    assert method_class("deepinversion").agreement_floor == 0.5
    for name in ("fast", "nayer", "cmi"):  # pools at ~10% agreement keep 96-100% (docs/fidelity.md)
        assert method_class(name).agreement_floor is None
    q = {"images": 1024, "agreement": 0.2314}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        msg = agreement_warning(q, "the deepinversion images", 0.5, hint="try X")
    assert len(caught) == 1 and caught[0].category is UserWarning and str(caught[0].message) == msg
    assert "only 23% of the deepinversion images (1,024)" in msg and "under 50%" in msg
    assert msg.endswith("; try X")
    assert "\n" not in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agreement_warning({**q, "agreement": 0.5}, "x", 0.5) is None
        assert agreement_warning(q, "x", None) is None
        assert agreement_warning({**q, "agreement": None}, "x", 0.5) is None


def test_deepinversion_short_of_its_steps_warns_on_its_dataset(tmp_path: Path, bn_teacher) -> None:
    """One step from noise leaves the images at chance agreement: synthesize_dataset says so; 200 do not."""
    from datafree.synthesis import synthesize_dataset

    with pytest.warns(UserWarning, match="did not reach them on this teacher") as caught:
        ds = synthesize_dataset(bn_teacher, "deepinversion", tmp_path / "one", 32, iterations=1, warmup=0)
    assert ds.manifest["teacher_quality"]["agreement"] < 0.5
    assert sum("did not reach" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = synthesize_dataset(bn_teacher, "deepinversion", tmp_path / "full", 32, batch_size=32)
    assert ds.manifest["teacher_quality"]["agreement"] >= 0.5
    assert not any("did not reach" in str(w.message) for w in caught)


class _ClassOfMean(torch.nn.Module):
    """A 'teacher' whose class is the image's mean brightness bucket (of ten).

    A generator that never makes bright images never makes the top classes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x.mean((1, 2, 3)).clamp(0, 0.999) * 10).long()
        return torch.nn.functional.one_hot(k, 10).float() * 8.0


class _DimGenerator:
    """sample(n, generator) as the online backends have it: images of mean brightness in [0, 0.8)."""

    def sample(self, n: int, generator: torch.Generator | None = None):
        from generators.base import Batch

        level = torch.rand(n, generator=generator) * 0.8
        return Batch(level.view(n, 1, 1, 1).expand(n, 1, 4, 4).clone())


def test_generator_quality_names_the_classes_a_generator_never_makes() -> None:
    """Classes 8 and 9 never come out: named as rare, warned about once, with the card's names."""
    import types
    import warnings

    from datafree.quality import class_names, coverage_warning, generator_quality

    teacher = _ClassOfMean()
    teacher.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))  # a device to read
    q = generator_quality(_DimGenerator(), teacher, n=1000, batch=300)
    assert q["images"] == 1000 and q["agreement"] is None and q["confidence"] > 0.99
    assert q["rare_classes"] == [8, 9] and q["min_class_fraction"] == 0.0
    assert q == generator_quality(_DimGenerator(), teacher, n=1000, batch=300)  # its own fixed latents
    card = types.SimpleNamespace(extra={"classes": [f"digit {i}" for i in range(10)]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        msg = coverage_warning(q, "the test generator's images", class_names(card), hint="try X")
    assert len(caught) == 1 and caught[0].category is UserWarning and str(caught[0].message) == msg
    assert "digit 8, digit 9" in msg and "(1,000)" in msg and msg.endswith("; try X")
    balanced = {**q, "rare_classes": []}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert coverage_warning(balanced, "x") is None
    assert class_names(types.SimpleNamespace(extra={})) is None


def test_bn_ce_balance(bn_teacher) -> None:
    """Weight 1: the reference teacher is left alone; the default 10 (session 22): the balance scales it."""
    from generators import create_synthesizer

    kw = {"batch_size": 16, "iterations": 3, "plateau_tol": 0.0}
    ref = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, bn_weight=1.0, **kw)
    ref.synthesize(16, torch.Generator().manual_seed(0))
    assert ref.bn_scale == 1.0
    default = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, **kw)
    assert default.config.bn_weight == 10.0
    default.synthesize(16, torch.Generator().manual_seed(0))
    assert 0.1 < default.bn_scale < 1.0  # the BN term starts above 26x the CE at weight 10, not at 1
    low = create_synthesizer("deepinversion", bn_teacher.model, bn_teacher.card, bn_ce_max_ratio=1.0, **kw)
    low.synthesize(16, torch.Generator().manual_seed(0))
    assert 0.0 < low.bn_scale < 0.5
    assert low.state_dict()["bn_scale"] == low.bn_scale


def test_fidelity_cell_passes_a_screen_of_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """--num-images/--epochs/--batch-size/--iterations reach compress as a user's -n, KD and --set options.

    Not given: every default.
    """
    import datafree.pipeline as pipeline
    from bench.fidelity import run_cell

    seen: list[dict] = []

    class Stop(Exception):
        pass

    def fake_compress(teacher, out, **kw):
        seen.append(kw)
        raise Stop

    monkeypatch.setattr(pipeline, "compress", fake_compress)
    cpu = torch.device("cpu")
    with pytest.raises(Stop):
        run_cell("resnet8_digits", "nayer", False, 3, cpu, None, baseline=False,
                 given={"num_images": 256, "epochs": 30, "batch_size": 32})  # fmt: skip
    assert seen[-1]["num_images"] == 256 and seen[-1]["kd"] == {"seed": 3, "epochs": 30, "batch_size": 32}
    assert "synth_options" not in seen[-1]
    with pytest.raises(Stop):
        run_cell("resnet8_digits", "cmi", False, 0, cpu, None, given={"num_images": 512, "iterations": 100})
    assert seen[-1]["num_images"] == 512 and seen[-1]["synth_options"] == {"iterations": 100}
    assert "kd" not in seen[-1]  # the budget plans the KD for those images
    with pytest.raises(Stop):
        run_cell("resnet8_digits", "nayer", False, 0, cpu, None,
                 given={"num_images": None, "epochs": None, "iterations": None})  # fmt: skip
    assert "num_images" not in seen[-1] and "kd" not in seen[-1] and "synth_options" not in seen[-1]


def test_suite_vgg8_is_vgg8_bn_without_batchnorm(tmp_path):
    """Session 13's held-out BN-less teacher: the suite's VGG-8 without its BN layers, loadable by card."""
    from bench.suite import SUITE

    spec = next(s for s in SUITE if s.name == "vgg8_32")
    assert spec.arch == "net.py:vgg8" and not spec.batchnorm
    card = _tiny_card(tmp_path, "vgg8", "net.py:vgg8", (3, 32, 32))
    plain = load_model(card).model
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert plain(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with_bn = load_model(_tiny_card(tmp_path, "vgg8_bn", "net.py:vgg8_bn", (3, 32, 32))).model
    for net in (plain, with_bn):
        widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert widths == [64, 128, 256, 512, 512]


def test_heldout_teachers_train_by_name_only_and_resolve(tmp_path, capsys, monkeypatch) -> None:
    """The held-out teachers: outside the matrix's names, trained and resolved by name.

    64 px ResNet-18 and MobileNetV2 (session 24); 32 px ShuffleNetV2 and MobileNetV3-small (session 26),
    EfficientNet-B0 and RegNetX-400MF (session 27).
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "assets"))
    import train_suite

    from bench.suite import HELDOUT, resolve_teacher, suite_names

    names = {s.name for s in HELDOUT}
    assert names == {"resnet18_64", "mobilenetv2_64", "shufflenetv2_32", "mobilenetv3s_32",
                     "efficientnetb0_32", "regnetx400mf_32"}  # fmt: skip
    assert not names & set(suite_names())
    shapes = {s.name: s.input_shape for s in HELDOUT}
    assert shapes["resnet18_64"] == shapes["mobilenetv2_64"] == (3, 64, 64)
    assert {shapes[n] for n in names - {"resnet18_64", "mobilenetv2_64"}} == {(3, 32, 32)}
    assert train_suite.main(["--out", str(tmp_path), "--only", "nosuch"]) == 2
    assert "resnet18_64" in capsys.readouterr().err  # the error lists the held-out names as choices
    monkeypatch.setenv("DATAFREE_SUITE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train_suite.py --only resnet18_64"):
        resolve_teacher("resnet18_64")
    (tmp_path / "resnet18_64").mkdir()
    (tmp_path / "resnet18_64" / "model.json").write_text("{}")
    assert resolve_teacher("resnet18_64") == str(tmp_path / "resnet18_64" / "model.json")
