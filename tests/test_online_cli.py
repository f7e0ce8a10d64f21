"""The CLI with the online methods: distill (resumable), synthesize (train or reuse a generator)."""

from __future__ import annotations

import json

TINY_KD = ["--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "8", "--set", "batch_size=8"]


def test_distill_online_then_synthesize_with_its_generator(run, tmp_path):
    out = tmp_path / "run"
    r = run("distill", "--teacher", "lenet5_digits", "--method", "dfad", "--out", out, "--quiet", *TINY_KD)
    assert r.exit_code == 0, r.output
    assert (out / "model.json").is_file() and (out / "generator.safetensors").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "lenet5_half" and "test_accuracy" in card
    r = run("distill", "--teacher", "lenet5_digits", "--method", "dfad", "--out", out, "--quiet", *TINY_KD)
    assert r.exit_code == 0, r.output  # rerun: resumes (nothing left to do), same files
    r = run("synthesize", "--teacher", "lenet5_digits", "--method", "dfad", "--num-images", 12, "--out",
            tmp_path / "ds", "--generator", out / "generator.safetensors", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "wrote 12 images" in r.output
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["method"] == "dfad" and manifest["images_written"] == 12


def test_synthesize_online_trains_a_generator(run, tmp_path):
    r = run("synthesize", "--teacher", "resnet8_digits", "--method", "zskt", "--num-images", 8, "--out",
            tmp_path / "ds", "--quiet", *TINY_KD)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ds_generator" / "generator.safetensors").is_file()


def test_generator_option_is_refused_for_offline_methods(run, tmp_path):
    r = run("synthesize", "--method", "deepinversion", "--num-images", 8, "--out", tmp_path / "ds",
            "--generator", tmp_path / "g.safetensors")  # fmt: skip
    assert r.exit_code == 2 and "online methods" in r.output


def test_compress_online_writes_report_with_noise_baseline(run, tmp_path):
    import warnings

    out = tmp_path / "c"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run("compress", "--teacher", "lenet5_digits", "--method", "dafl", "--out", out, "--quiet",
                *TINY_KD)  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "dafl" and report["kd"]["kd_steps"] == 5  # the method's own KD defaults
    assert "noise_baseline" in report and 0 <= report["student"]["accuracy"] <= 1
    assert (out / "generator.safetensors").is_file() and (out / "model.json").is_file()
    # the teacher on 1,024 images of the trained generator (a run of 2 steps: classes may be missing)
    q = report["student"]["teacher_quality"]
    assert q["images"] == 1024 and q["agreement"] is None and 0.1 <= q["confidence"] <= 1.0
    assert 0.0 <= q["min_class_fraction"] <= 1.0 and isinstance(q["rare_classes"], list)
    named = [str(w.message) for w in caught if "cannot learn a class" in str(w.message)]
    assert len(named) == (1 if q["rare_classes"] else 0)  # one warning, when a class is missing


def test_compress_zskt_says_what_attention_transfer_pairs(run, tmp_path):
    """ZSKT's attention term on a student whose stages differ from the teacher's: one line and report.json."""
    out = tmp_path / "z"
    r = run("compress", "--teacher", "resnet8_digits", "--method", "zskt", "--student", "vgg8_cifar",
            "--out", out, "--no-baseline", *TINY_KD)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "zskt: attention transfer at beta 62.5 on the blocks at 16x16, 8x8, 4x4, though the" in r.output
    objective = json.loads((out / "report.json").read_text())["student"]["student_objective"]
    assert objective["beta"] == 62.5 and not objective["aligned"]
    assert objective["teacher"] == ["16x16", "8x8", "4x4"]
    assert objective["student"] == ["16x16", "8x8", "4x4", "2x2"]


def test_kd_loss_settings_the_backends_own_loss_ignores_are_refused(run, tmp_path):
    """ZSKT trains its student with its own loss: --hard-label-weight / --kd loss=l1 would do nothing."""
    out = tmp_path / "z"
    r = run("compress", "--teacher", "lenet5_digits", "--method", "zskt", "--hard-label-weight", "1",
            "--out", out, "--no-baseline", *TINY_KD)  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "hard_label_weight 1 would have no effect" in r.output and "Traceback" not in r.output
    assert not out.exists()  # refused at plan time, before the teacher's evaluation and before --out is made
    r = run("distill", "--teacher", "lenet5_digits", "--method", "zskt", "--kd", "loss=l1", "--out",
            tmp_path / "d", "--quiet", *TINY_KD)  # fmt: skip
    assert r.exit_code == 2 and "loss 'l1' would have no effect" in r.output, r.output
    # the methods whose student loss is the KD stage's take them (DAFL: KL + CE to the teacher's arg-max)
    r = run("distill", "--teacher", "lenet5_digits", "--method", "dafl", "--hard-label-weight", "1", "--out",
            tmp_path / "ok", "--quiet", *TINY_KD)  # fmt: skip
    assert r.exit_code == 0, r.output


def test_plan_refuses_kd_settings_a_student_objective_drops() -> None:
    """The refusal is the plan's: every caller (compress, distill, train_online, the API) gets it up front."""
    import pytest

    from datafree.cards import load_model
    from datafree.errors import UserInputError
    from datafree.plan import plan

    lm = load_model("lenet5_digits")
    with pytest.raises(UserInputError, match="hard_label_weight 1 would have no effect"):
        plan(lm, method="zskt", kd={"hard_label_weight": 1.0}, seed=0)
    with pytest.raises(UserInputError, match="loss 'l1' would have no effect"):
        plan(lm, method="zskt", kd={"loss": "l1"}, seed=0)
    assert plan(lm, method="dafl", kd={"hard_label_weight": 1.0}, seed=0).kd.hard_label_weight == 1.0
