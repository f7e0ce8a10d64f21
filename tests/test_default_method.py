"""Issue 11: the synthesis path ``compress`` and ``plan`` take by default, a rule of the teacher's cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from datafree.cards import load_model, save_model
from datafree.models import create_model


def _card(tmp: Path, arch: str, shape: tuple[int, int, int]) -> str:
    torch.manual_seed(0)
    model = create_model(arch, 10, shape[0]).eval()
    save_model(model, tmp / arch, arch=arch, name="model", card_name=f"{arch}_test", num_classes=10,
               input_shape=list(shape), mean=[0.5] * shape[0], std=[0.25] * shape[0])  # fmt: skip
    return str(tmp / arch / "model.json")


def test_default_method_rule(bn_teacher, plain_teacher, custom_teacher, tmp_path: Path) -> None:
    """Cheap BN teacher -> DeepInversion, expensive one -> Fast-Datafree's pool, no BN -> DAFL."""
    from datafree.rules import DI_MAX_COST_RATIO, default_method

    ref = default_method(bn_teacher.model, bn_teacher.card)
    assert (ref["method"], ref["pool"]) == ("deepinversion", False)
    assert ref["cost_ratio"] == pytest.approx(1.0, abs=1e-3)  # the reference itself
    # the custom 3x24x24 teacher (measured with DeepInversion: 98.3%) stays under the bound
    custom = default_method(custom_teacher.model, custom_teacher.card)
    assert custom["method"] == "deepinversion" and 1.0 < custom["cost_ratio"] <= DI_MAX_COST_RATIO
    # a ResNet-8 at 3x32x32: 12.5M MACs and a 372-step cap, 7.4x the reference
    big = load_model(_card(tmp_path, "resnet8", (3, 32, 32)))
    c = default_method(big.model, big.card)
    assert (c["method"], c["pool"]) == ("fast", True) and c["cost_ratio"] > DI_MAX_COST_RATIO
    # more images cost more: the reference teacher with 4x the images leaves DeepInversion
    assert default_method(bn_teacher.model, bn_teacher.card, num_images=4096)["method"] == "fast"
    no_bn = default_method(plain_teacher.model, plain_teacher.card)
    assert (no_bn["method"], no_bn["pool"], no_bn["batchnorm"]) == ("dafl", False, False)


@pytest.mark.parametrize("arch", ["shufflenet_v2_x1_0", "mobilenet_v3_small"])
def test_cheap_depthwise_teacher_takes_the_pool(arch: str, tmp_path: Path) -> None:
    """Under 2x DeepInversion's reference cost, a teacher with depthwise convolutions takes Fast-10's pool.

    DeepInversion's images taught 19-47% of the teacher on the three depthwise teachers measured
    (torchvision's MobileNetV2 at 32 px, the held-out ShuffleNetV2 and MobileNetV3-small; docs/fidelity.md,
    "Session 26").
    """
    from datafree.plan import AUTO, plan
    from datafree.rules import DI_MAX_COST_RATIO, POOL_FAST10_OPTIONS, default_method

    t = load_model(_card(tmp_path, arch, (3, 32, 32)))
    c = default_method(t.model, t.card)
    assert c["cost_ratio"] <= DI_MAX_COST_RATIO  # cheap enough for DeepInversion by its cost alone
    assert (c["method"], c["pool"]) == ("fast", True) and "depthwise" in c["rule"]
    assert c["options"] == POOL_FAST10_OPTIONS
    p = plan(t, method=AUTO, seed=0)
    assert (p.method, p.pool, p.synthesizer.config.iterations) == ("fast", True, 10)


def test_plan_auto_is_the_rule(bn_teacher, tmp_path: Path) -> None:
    """``plan(method="auto")`` resolves the backend and the pool by the same rule, recorded in info."""
    from datafree.plan import AUTO, plan

    p = plan(bn_teacher, method=AUTO, seed=0)
    assert (p.method, p.pool) == ("deepinversion", False)
    assert p.info["method_choice"]["method"] == "deepinversion"
    big = load_model(_card(tmp_path, "resnet8", (3, 32, 32)))
    p = plan(big, method=AUTO, seed=0)
    assert (p.method, p.pool) == ("fast", True)
    assert p.kd.batch_size == 64 and p.kd.lr == 0.1  # the pool's own KD settings
    assert p.kd.kd_steps == 10  # 7.4x the reference: Fast-10's recipe, a round every 10 KD steps


def test_pool_recipe_follows_the_teachers_cost(tmp_path: Path) -> None:
    """2x-10x the reference cost: Fast-10 in the pool; above 10x: Fast-5's pool; the user's settings win."""
    from datafree.plan import AUTO, plan
    from datafree.rules import FAST10_MAX_COST_RATIO, POOL_FAST10_KD, POOL_FAST10_OPTIONS, default_method
    from generators import method_class

    mid = load_model(_card(tmp_path, "resnet8", (3, 32, 32)))  # 7.4x
    c = default_method(mid.model, mid.card)
    assert c["cost_ratio"] <= FAST10_MAX_COST_RATIO and "Fast-10" in c["rule"]
    assert c["options"] == POOL_FAST10_OPTIONS and c["kd"] == POOL_FAST10_KD
    cfg = plan(mid, method=AUTO, seed=0).synthesizer.config
    assert (cfg.iterations, cfg.lr, cfg.adv_weight, cfg.oh_weight) == (10, 2e-3, 1.0, 5.0)
    given = plan(mid, method=AUTO, seed=0, method_options={"iterations": "3", "adv_weight": "0"},
                 kd={"kd_steps": 5, "lr": None})  # fmt: skip
    assert (given.synthesizer.config.iterations, given.synthesizer.config.adv_weight) == (3, 0.0)
    assert given.kd.kd_steps == 5 and given.kd.lr == 0.1  # None is "not given": the path's default stays
    assert not given.synthesizer.uses_student()
    assert plan(mid, method=AUTO, seed=0).synthesizer.uses_student()  # the adversarial term needs the student
    # the same teacher at 3x64x64 costs about 43x, and Fast-10's run would lose KD epochs to the
    # budget (a CIFAR layout at full resolution): Fast-5's measured pool, untouched
    big = load_model(_card(tmp_path / "big", "resnet8", (3, 64, 64)))
    c = default_method(big.model, big.card)
    assert c["cost_ratio"] > FAST10_MAX_COST_RATIO and c["options"] == {} and c["kd"] == {}
    p = plan(big, method=AUTO, seed=0)
    assert p.kd.kd_steps == method_class("fast").pool_kd["kd_steps"]
    assert p.synthesizer.config.iterations == method_class("fast").Config().iterations
    assert p.synthesizer.config.adv_weight == 0.0


def test_fast10_above_10x_where_its_run_fits_the_budget(tmp_path: Path) -> None:
    """Above 10x the reference, Fast-10's recipe when its run keeps its KD epochs under the budget."""
    from datafree.plan import AUTO, auto_choice, plan
    from datafree.rules import FAST10_MAX_COST_RATIO, POOL_FAST10_KD, POOL_FAST10_OPTIONS

    # ResNet-18's ImageNet layout at half width, 3x64x64: about 34x the reference
    t = load_model(_card(tmp_path, "resnet18_imagenet_half", (3, 64, 64)))
    c = auto_choice(t.model, t.card)
    assert c["cost_ratio"] > FAST10_MAX_COST_RATIO and "Fast-10" in c["rule"] and "fits" in c["rule"]
    assert c["options"] == POOL_FAST10_OPTIONS and c["kd"] == POOL_FAST10_KD
    p = plan(t, method=AUTO, seed=0)
    assert (p.synthesizer.config.iterations, p.kd.kd_steps, p.kd.epochs) == (10, 10, 30)
    # a budget it does not fit without losing KD epochs: Fast-5's pool
    small = auto_choice(t.model, t.card, budget_s=300)
    assert small["options"] == {} and "Fast-10" not in small["rule"]
    assert plan(t, method=AUTO, seed=0, budget_s=300).synthesizer.config.iterations == 5
    # no budget (--budget off): it always fits
    big = load_model(_card(tmp_path / "big", "resnet8", (3, 64, 64)))
    assert auto_choice(big.model, big.card)["options"] == {}
    assert auto_choice(big.model, big.card, budget_s=math.inf)["options"] == POOL_FAST10_OPTIONS


def test_compress_auto_takes_the_pool_and_writes_it(tmp_path: Path) -> None:
    """An expensive BN teacher: compress runs the pool, writes it as out/data, baseline of its size."""
    from datafree.pipeline import compress

    card = _card(tmp_path, "resnet8", (3, 32, 32))
    rep = compress(card, tmp_path / "run", kd={"epochs": 1, "steps_per_epoch": 4, "kd_steps": 2,
                                                "batch_size": 16},
                   synth_options={"iterations": 1, "batch_size": 8}, student="resnet8_quarter")  # fmt: skip
    assert rep["method"] == "fast" and rep["method_choice"]["pool"] is True
    data = rep["data"]
    assert data["pool"] is True and data["num_images"] == 2 * 32  # 2 rounds of the pool's 32 images
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert manifest["pool"] is True and manifest["images_written"] == 64
    quality = manifest["teacher_quality"]
    assert quality["images"] == 64 and quality["agreement"] is not None
    assert quality["rare_classes"] is None  # 6.4 images a class: too few to name a missing one
    assert rep["noise_baseline"]["num_images"] == 64
    assert json.loads((tmp_path / "run" / "report.json").read_text())["method_choice"]["method"] == "fast"


def test_compress_cli_default_method_is_auto(tmp_path: Path) -> None:
    """The CLI's --method default is auto; an explicit method other than nayer is taken as given (no pool)."""
    from click.testing import CliRunner

    import cli

    opt = next(o for o in cli.compress.params if o.name == "method")
    assert opt.default == "auto"
    card = _card(tmp_path, "resnet8", (3, 32, 32))
    res = CliRunner().invoke(cli.cli, ["compress", "--teacher", card, "--method", "deepinversion", "--out",
                                       str(tmp_path / "o"), "-n", "8", "--iterations", "1", "--epochs", "1",
                                       "--steps-per-epoch", "1", "--no-baseline", "--set", "batch_size=8",
                                       "--student", "resnet8_quarter", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["method"] == "deepinversion" and "method_choice" not in rep


def test_named_nayer_takes_its_pool_on_an_expensive_teacher_only(
    bn_teacher, plain_teacher, tmp_path: Path
) -> None:
    """``named_method_path``: nayer's pool with the paper's adversarial weight above 2x the reference."""
    from datafree.rules import (
        DI_MAX_COST_RATIO,
        FAST10_MAX_COST_RATIO,
        NAYER_POOL_KD,
        NAYER_POOL_MAX_ITERATIONS,
        NAYER_POOL_OPTIONS,
        named_method_path,
    )

    assert named_method_path("nayer", bn_teacher.model, bn_teacher.card) is None  # the reference: 1x
    assert (
        named_method_path("nayer", plain_teacher.model, plain_teacher.card) is None
    )  # no BN: plan refuses it
    big = load_model(_card(tmp_path, "resnet8", (3, 32, 32)))
    path = named_method_path("nayer", big.model, big.card)
    assert (path["method"], path["pool"]) == ("nayer", True) and path["cost_ratio"] > DI_MAX_COST_RATIO
    assert path["options"] == NAYER_POOL_OPTIONS == {"adv_weight": 1.33} and path["kd"] == {"kd_steps": 10}
    assert NAYER_POOL_KD == {"kd_steps": 10}
    assert path["max_iterations"] == NAYER_POOL_MAX_ITERATIONS  # the steps may grow under the budget
    path["options"]["adv_weight"] = 0  # a copy: the rule's table is not changed by a caller
    assert NAYER_POOL_OPTIONS["adv_weight"] == 1.33
    # above 10x too (the same teacher at 3x64x64, about 43x; unlike auto's fast, measured better there)
    big64 = load_model(_card(tmp_path / "big", "resnet8", (3, 64, 64)))
    path = named_method_path("nayer", big64.model, big64.card)
    assert path["pool"] is True and path["cost_ratio"] > FAST10_MAX_COST_RATIO
    assert path["options"] == NAYER_POOL_OPTIONS and "adversarial" in path["rule"]
    for other in ("cmi", "fast", "deepinversion", "dafl", "no_such_method"):
        assert named_method_path(other, big.model, big.card) is None


def test_compress_named_nayer_runs_its_pool_under_the_users_settings(tmp_path: Path) -> None:
    """``compress --method nayer`` on an expensive teacher: its pool at adv 1.33, the user's KD steps."""
    from datafree.pipeline import compress

    card = _card(tmp_path, "resnet8", (3, 32, 32))
    rep = compress(card, tmp_path / "run", method="nayer", baseline=False, student="resnet8_quarter",
                   kd={"epochs": 1, "steps_per_epoch": 4, "kd_steps": 2, "batch_size": 16},
                   synth_options={"iterations": 1})  # fmt: skip
    choice = rep["method_choice"]
    assert rep["method"] == "nayer" and choice["pool"] is True and choice["options"] == {"adv_weight": 1.33}
    assert rep["kd"]["kd_steps"] == 2 and rep["data"]["pool"] is True  # the user's KD setting wins
    assert rep["data"]["num_images"] == 2 * 32  # 2 rounds of the pool's 32 images, written to out/data
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert manifest["pool"] is True and manifest["config"]["adv_weight"] == 1.33
    assert manifest["config"]["iterations"] == 1 and not rep["compute_budget"]["grown"]  # --set wins


def test_compress_named_nayer_pool_grows_its_steps_into_the_budget(tmp_path: Path) -> None:
    """Without ``--set iterations`` compress's NAYER pool runs the paper's 40 steps where the run fits."""
    from datafree.pipeline import compress
    from datafree.rules import NAYER_POOL_MAX_ITERATIONS

    card = _card(tmp_path, "resnet8", (3, 32, 32))
    rep = compress(card, tmp_path / "run", method="nayer", baseline=False, student="resnet8_quarter",
                   kd={"epochs": 1, "steps_per_epoch": 2, "kd_steps": 2, "batch_size": 8})  # fmt: skip
    budget = rep["compute_budget"]
    assert rep["method_choice"]["max_iterations"] == NAYER_POOL_MAX_ITERATIONS
    assert budget["grown"] and budget["settings"]["iterations"] == NAYER_POOL_MAX_ITERATIONS
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert manifest["config"]["iterations"] == NAYER_POOL_MAX_ITERATIONS


def test_compress_named_nayer_with_num_images_writes_that_dataset(tmp_path: Path) -> None:
    """``-n`` asks for a written dataset: NAYER writes it on an expensive teacher too (no pool, no choice)."""
    from datafree.pipeline import compress
    from datafree.rules import named_method_path

    card = _card(tmp_path, "resnet8", (3, 32, 32))
    rep = compress(card, tmp_path / "run", method="nayer", baseline=False, student="resnet8_quarter",
                   num_images=600, kd={"epochs": 1, "steps_per_epoch": 2, "batch_size": 8},
                   synth_options={"iterations": 1, "batch_size": 100})  # fmt: skip
    # 600 images of this teacher cost DeepInversion 2.3x the reference: above the pool's threshold
    teacher = load_model(card)
    assert named_method_path("nayer", teacher.model, teacher.card, 600) is not None
    assert "method_choice" not in rep and not rep["data"].get("pool")
    assert rep["data"]["num_images"] == 600


def test_fidelity_bench_auto_cell_and_merge_keeps_grids(tmp_path: Path) -> None:
    """bench/fidelity.py runs compress's default path ("auto") and --merge redraws earlier cells' grids."""
    from bench.fidelity import main

    card = _card(tmp_path, "resnet8", (3, 32, 32))
    out = tmp_path / "results"
    assert main(["--quick", "--teachers", card, "--methods", "auto", "--out", str(out)]) == 0
    rows = json.loads((out / "fidelity.json").read_text())["rows"]
    assert [(r["method"], r["ran"]) for r in rows] == [("auto", "fast (pool)")]
    assert rows[0]["cpu_s"] > 0 and "the pool" in rows[0]["method_rule"]
    tile = out / "fidelity_cells" / f"{rows[0]['teacher']}__auto.png"
    assert tile.is_file()
    assert main(["--quick", "--teachers", "resnet8_digits", "--methods", "auto", "--out", str(out),
                 "--merge"]) == 0  # fmt: skip
    rows = json.loads((out / "fidelity.json").read_text())["rows"]
    assert [r["ran"] for r in rows] == ["fast (pool)", "deepinversion"]
    from PIL import Image

    assert Image.open(out / "fidelity.png").size[1] > Image.open(tile).size[1] * 2  # both rows drawn


def test_student_rule_prefers_the_teachers_conv_kind(bn_teacher) -> None:
    """A teacher without grouped convolutions does not get a depthwise student (MACs mislead across kinds)."""
    from datafree.rules import choose_student, has_grouped_conv

    card = load_model("resnet8_digits").card
    card.input_shape, card.mean, card.std = [3, 32, 32], [0.5] * 3, [0.25] * 3
    teacher = create_model("resnet18", 10, 3).eval()  # torchvision's, 37M MACs at 3x32x32
    c = choose_student(teacher, card)
    assert not has_grouped_conv(create_model(c["arch"], 10, 3)) and c["arch"] != "mobilenetv2_cifar"
    assert c["params"] <= 1.1 * c["teacher_params"] / 4 and c["macs"] <= c["teacher_macs"] / 2
    assert has_grouped_conv(create_model("mobilenetv2_cifar", 10, 3))


@pytest.mark.parametrize("side", [32, 64, 224])
def test_student_rule_gives_imagenet_layout_teachers_an_imagenet_layout_student(side) -> None:
    """Torchvision's ResNet-18 gets ResNet-18's layout at half width (1/4 of its parameters), not ResNet-8.

    Before session 24 only CIFAR layouts were registered and ResNet-18 got ResNet-8 (1/143 of its
    parameters) at 32-224 px. A CIFAR-layout teacher keeps a CIFAR-layout student. MobileNetV2 (no
    depthwise student is registered: a MobileNetV2 at quarter width kept 75.9% of it, docs/fidelity.md,
    "Session 24") gets ResNet-10 in the same layout at quarter width, 1/7 of its parameters, since session
    25; before, LeNet-5 with BN, 1/50 of them, outside the 1/4-1/20 window ("Session 25").
    """
    from datafree.rules import choose_student, downsampling_stem, has_grouped_conv

    card = load_model("resnet8_digits").card
    card.input_shape, card.mean, card.std = [3, side, side], [0.5] * 3, [0.25] * 3
    teacher = create_model("resnet18", 10, 3).eval()
    assert downsampling_stem(teacher, card.input_shape)
    c = choose_student(teacher, card)
    assert c["arch"] == "resnet18_imagenet_half" and "same stem" in c["rule"]
    student = create_model(c["arch"], 10, 3)
    assert downsampling_stem(student, card.input_shape) and not has_grouped_conv(student)
    assert 4.1 * c["params"] >= c["teacher_params"] >= 3.6 * c["params"]
    assert c["macs"] <= c["teacher_macs"] / 2
    cifar = create_model("wrn40_2", 10, 3).eval()  # full resolution in its first layer
    assert not downsampling_stem(cifar, card.input_shape)
    assert not downsampling_stem(create_model(choose_student(cifar, card)["arch"], 10, 3), card.input_shape)
    mbv2 = create_model("mobilenet_v2", 10, 3).eval()
    assert downsampling_stem(mbv2, card.input_shape) and has_grouped_conv(mbv2)
    c = choose_student(mbv2, card)
    assert c["arch"] == "resnet10_imagenet_quarter" and c["macs"] <= c["teacher_macs"] / 2
    assert 1.1 / 4 >= c["params"] / c["teacher_params"] >= 1 / 20


@pytest.mark.parametrize("arch", ["shufflenet_v2_x1_0", "mobilenet_v3_small"])
def test_student_rule_prices_the_cost_across_conv_kinds(arch: str) -> None:
    """A small depthwise teacher gets a dense student in the 1/4-1/20 window, bounded by the priced forward.

    Torchvision's ShuffleNetV2 and MobileNetV3-small at 3x32x32 (2.9M / 2.2M MACs): MACs bounded every
    registered dense student in the window out (ResNet-10 at quarter width, 1.6M MACs), so they got LeNet-5
    BN (1/28) and ResNet-8 at quarter width (1/293) before session 26. Their depthwise MACs understate
    their cost; across conv kinds the rule compares the cost measure's priced forward.
    """
    from datafree.rules import _arch_forward_s, choose_student, cpu_seconds_per_image, has_grouped_conv

    card = load_model("resnet8_digits").card
    card.input_shape, card.mean, card.std = [3, 32, 32], [0.5] * 3, [0.25] * 3
    teacher = create_model(arch, 10, 3).eval()
    assert has_grouped_conv(teacher)
    c = choose_student(teacher, card)
    assert c["arch"] == "resnet10_imagenet_quarter", c
    assert 1.1 / 4 >= c["params"] / c["teacher_params"] >= 1 / 20
    assert c["macs"] > c["teacher_macs"] / 2  # what the MAC bound alone ruled out
    shape = (3, 32, 32)
    assert _arch_forward_s(c["arch"], 10, shape) <= cpu_seconds_per_image(teacher, shape, "forward") / 2


def test_imagenet_layout_students_shapes_and_sizes() -> None:
    """The ImageNet-layout students run at 16-224 px, and their sizes are what their docstrings say."""
    from datafree.models import count_arch_params

    sizes = {"resnet18_imagenet_half": 2.8e6, "resnet18_imagenet_quarter": 0.70e6}
    sizes["resnet10_imagenet_quarter"] = 0.31e6
    for arch, params in sizes.items():
        assert abs(count_arch_params(arch, 10, 3) - params) < 0.03 * params, arch
        m = create_model(arch, 10, 1).eval()
        for side in (16, 224):
            assert m(torch.zeros(2, 1, side, side)).shape == (2, 10)


def test_pool_run_macs_counts_kd_baseline_and_synthesis() -> None:
    """The compute estimate: KD steps x batch x (T + 3S), twice with the baseline, plus the rounds' passes."""
    from datafree.rules import pool_run_macs

    kw = dict(epochs=2, steps_per_epoch=40, kd_steps=20, batch_size=64, pool_batch=32, iterations=5)
    kd = 2 * 40 * 64 * (10 + 3 * 2)  # 80 KD steps
    synth = 2 * 2 * 5 * 32 * (2 * 10)  # 4 rounds of 5 steps on 32 images: the teacher forward and backward
    assert pool_run_macs(10, 2, adversarial=False, baseline=False, **kw) == kd + synth
    assert pool_run_macs(10, 2, adversarial=False, **kw) == 2 * kd + synth
    adv = 4 * 5 * 32 * 3 * 2  # the adversarial term's student forward and backward
    assert pool_run_macs(10, 2, adversarial=True, **kw) == 2 * kd + synth + adv


def test_pool_epochs_capped_by_the_runs_compute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An expensive teacher's pool gets fewer KD epochs (estimate <= the cap); a cheap one is untouched."""
    from datafree import rules
    from datafree.plan import AUTO, auto_choice, plan

    mid = load_model(_card(tmp_path, "resnet8", (3, 32, 32)))
    c = auto_choice(mid.model, mid.card, budget_s=math.inf)  # no budget: the pool's own 30 epochs
    assert "epochs" not in c["kd"] and c["compute"]["run_macs"] < rules.RUN_MAX_MACS
    assert "epochs" not in c["compute"] and plan(mid, method=AUTO, seed=0, budget_s=math.inf).kd.epochs == 30
    full = c["compute"]["run_macs"]
    monkeypatch.setattr(rules, "RUN_MAX_MACS", full / 3)  # as if the teacher cost 3x the cap
    c = auto_choice(mid.model, mid.card)
    kd = c["kd"]
    assert {k: kd[k] for k in rules.POOL_CAPPED_KD} == rules.POOL_CAPPED_KD  # smaller batches, more rounds
    assert 5 <= kd["epochs"] < 30 and f"{kd['epochs']} KD epochs" in c["rule"]
    assert c["compute"]["capped_run_macs"] <= full / 3 < c["compute"]["run_macs"] == full
    one_more = rules.pool_run_macs(
        c["teacher_macs"], c["compute"]["student_macs"], epochs=kd["epochs"] + 1, steps_per_epoch=40,
        kd_steps=kd["kd_steps"], batch_size=kd["batch_size"], pool_batch=32, iterations=10, adversarial=True,
    )  # fmt: skip
    assert one_more > full / 3  # as many epochs as fit
    p = plan(mid, method=AUTO, seed=0)
    assert (p.kd.epochs, p.kd.batch_size, p.kd.kd_steps) == (kd["epochs"], 32, 10)
    assert plan(mid, method=AUTO, seed=0, kd={"epochs": 30}).kd.epochs == 30  # the user's --epochs wins
    monkeypatch.setattr(rules, "RUN_MAX_MACS", full / 100)
    assert auto_choice(mid.model, mid.card)["kd"]["epochs"] == rules.POOL_MIN_EPOCHS
    # the student's MACs count: a cheaper student than the default costs less
    small = create_model("resnet8_quarter", 10, 3)
    assert auto_choice(mid.model, mid.card, student=small)["compute"]["run_macs"] < full


def test_pool_grows_its_kd_epochs_where_twice_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cheap pool teacher's run with twice its KD epochs fits the cap and the budget: auto takes them."""
    from datafree import rules
    from datafree.plan import AUTO, auto_choice, budget_settings, kd_settings, plan

    mid = load_model(_card(tmp_path, "resnet8", (3, 24, 24)))  # 2-10x the reference: Fast-10's pool
    c = auto_choice(mid.model, mid.card)
    assert c["kd"]["epochs"] == 30 * rules.POOL_EPOCH_GROWTH == c["compute"]["grown_epochs"] == 60
    assert "60 KD epochs" in c["rule"] and "fits the compute budget" in c["rule"]
    # the grown run's own estimate, as the budget prices it, is what the rule reports, under the budget
    cfg = kd_settings("fast", c["kd"], pool=True)
    est = budget_settings(mid.model, mid.card, "fast", pool=True, kd=cfg, kd_given=None, options=c["options"],
                          num_images=None)  # fmt: skip
    assert c["compute"]["grown_estimate_s"] == est["capped_estimate_s"] <= rules.RUN_BUDGET_CPU_S
    assert est["capped_estimate_s"] <= rules.pool_growth_budget(None) == rules.POOL_GROWTH_BUDGET_CPU_S
    assert not est["capped"] and c["compute"]["run_macs"] <= rules.RUN_MAX_MACS
    p = plan(mid, method=AUTO, seed=0)
    assert (p.kd.epochs, p.kd.kd_steps) == (60, 10)
    assert plan(mid, method=AUTO, seed=0, kd={"epochs": 40}).kd.epochs == 40  # the user's --epochs wins
    # a budget under the grown run's estimate (but over the pool's own): the pool keeps its 30
    tight = auto_choice(mid.model, mid.card, budget_s=0.9 * est["capped_estimate_s"])
    assert "epochs" not in tight["kd"] and "grown_epochs" not in tight["compute"]
    assert tight["options"] == rules.POOL_FAST10_OPTIONS  # Fast-10's run itself still fits
    # --budget off: no growth, as a written dataset keeps its images
    assert "epochs" not in auto_choice(mid.model, mid.card, budget_s=math.inf)["kd"]
    # a compute cap the grown run passes: no growth either
    with monkeypatch.context() as m:
        m.setattr(rules, "RUN_MAX_MACS", 0.75 * c["compute"]["run_macs"])
        assert "epochs" not in auto_choice(mid.model, mid.card)["kd"]

    # the same ResNet-8 at 3x32x32 (7.4x): its grown run fits the 15-minute budget (about 620 s estimated)
    # but not the default path's 10 minutes (session 37, as ResNet-18 at 32 px): the pool keeps its 30
    big = load_model(_card(tmp_path / "32", "resnet8", (3, 32, 32)))
    assert "epochs" not in auto_choice(big.model, big.card)["kd"]
    twice = auto_choice(big.model, big.card, budget_s=2 * rules.RUN_BUDGET_CPU_S)  # the room scales with it
    assert twice["kd"]["epochs"] == 60
    grown = twice["compute"]["grown_estimate_s"]
    assert rules.POOL_GROWTH_BUDGET_CPU_S < grown <= rules.RUN_BUDGET_CPU_S
    assert twice["compute"]["growth_budget_s"] == rules.pool_growth_budget(2 * rules.RUN_BUDGET_CPU_S) == 1000
    assert "<= 1000 s of one CPU core, the default path's 10-minute share" in twice["rule"]


def test_wrn40_2_pool_is_capped(tmp_path: Path) -> None:
    """The standard WRN-40-2 at 3x32x32 (328M MACs, student wrn16_2): 18 epochs of batch 32 under the cap."""
    from datafree.plan import auto_choice
    from datafree.rules import RUN_MAX_MACS, default_method

    wrn = load_model(_card(tmp_path, "wrn40_2", (3, 32, 32)))
    assert "compute" not in default_method(wrn.model, wrn.card)  # the rule alone; the cap is the plan's
    c = auto_choice(wrn.model, wrn.card)
    assert (c["method"], c["pool"]) == ("fast", True)
    assert c["kd"] == {"batch_size": 32, "kd_steps": 10, "epochs": 18}
    assert c["compute"]["capped_run_macs"] <= RUN_MAX_MACS < c["compute"]["run_macs"]
