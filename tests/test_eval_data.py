"""Evaluation on the user's data (issue 12, item 5).

Every form, label mapping, top-5, agreement, ``--eval-data`` through the pipeline, and one-line
exit-2 errors for bad input.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datafree.cards import load_model, save_model
from datafree.data import digits_split
from datafree.evaluate import evaluate, evaluate_model
from datafree.models import create_model
from tests.conftest import KD_TINY as KD1

TINY = ["--iterations", "1", "--set", "warmup=1", "--set", "batch_size=8", "-q"]


def _digits_u8(n: int = 120, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Real digits (test split) as uint8 ``(n, size, size)`` and labels."""
    x, y = digits_split("test", (1, size, size))
    return (x[:n, 0].numpy() * 255).round().astype(np.uint8), y[:n].numpy()


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, keep=lambda c: True) -> int:
    count = 0
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        if not keep(int(lab)):
            continue
        d = root / str(int(lab))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")
        count += 1
    return count


def _manual(model: torch.nn.Module, card, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(card.normalizer()(x))
    top1 = (logits.argmax(1) == y).float().mean().item()
    top5 = (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    return top1, top5


@pytest.fixture(scope="module")
def rgb32(tmp_path_factory):
    """A randomly initialised 10-class model card on 3x32x32 inputs (no ``trained_on``)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rgb32")
    model = create_model("resnet8", 10, 3)
    save_model(
        model, d, arch="resnet8", num_classes=10, input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.25] * 3
    )
    return load_model(d)


def test_missing_class_folder_maps_by_name_and_matches_npz(tmp_path, bn_teacher):
    imgs, labels = _digits_u8()
    n = _write_folder(tmp_path / "f", imgs, labels, keep=lambda c: c != 2)  # no folder "2"
    keep = labels != 2
    np.savez(tmp_path / "same.npz", images=imgs[keep], labels=labels[keep])
    r_dir = evaluate(bn_teacher, tmp_path / "f")
    r_npz = evaluate(bn_teacher, tmp_path / "same.npz")
    assert r_dir["num_samples"] == n == int(keep.sum())
    assert r_dir["accuracy"] == pytest.approx(r_npz["accuracy"]) and r_dir["accuracy"] > 0.9
    assert r_dir["top5"] == pytest.approx(r_npz["top5"])


def test_card_classes_name_the_folders(tmp_path, bn_teacher):
    import dataclasses

    imgs, labels = _digits_u8(60)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        if lab in (3, 7):
            (tmp_path / names[lab]).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / names[lab] / f"{i}.png")
    card = dataclasses.replace(bn_teacher.card, extra={**bn_teacher.card.extra, "classes": names})
    r = evaluate_model(bn_teacher.model, card, tmp_path)
    assert r["num_samples"] == int(np.isin(labels, (3, 7)).sum()) and r["accuracy"] > 0.9


def test_mixed_sizes_rgb_are_converted_to_the_card(tmp_path, bn_teacher):
    imgs, labels = _digits_u8(40, size=8)
    rng = np.random.default_rng(0)
    for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        w, h = (int(v) for v in rng.integers(20, 60, size=2))
        rgb = np.stack([img] * 3, -1)
        d = tmp_path / str(lab)
        d.mkdir(exist_ok=True)
        Image.fromarray(rgb, "RGB").resize((w, h), Image.BILINEAR).save(
            d / f"{i}.jpg" if i % 2 else d / f"{i}.png"
        )
    r = evaluate(bn_teacher, tmp_path, batch_size=7)
    assert r["num_samples"] == 40 and r["accuracy"] > 0.7  # a 1-channel 16x16 model read them all


def _cifar_root(root: Path, kind: str, n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Torchvision's on-disk layout with random pixels; returns (images NHWC uint8, labels)."""
    rng = np.random.default_rng(seed)
    k, folder, file, key = (10, "cifar-10-batches-py", "test_batch", "labels") if kind == "cifar10" else (
        100, "cifar-100-python", "test", "fine_labels")  # fmt: skip
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, k, size=n).tolist()
    (root / folder).mkdir(parents=True)
    with open(root / folder / file, "wb") as f:
        pickle.dump(
            {"batch_label": "testing batch 1 of 1", "data": data, key: labels, "filenames": ["a.png"] * n}, f
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(labels)


def test_cifar10_layout_matches_manual_top1_top5(tmp_path, rgb32):
    imgs, labels = _cifar_root(tmp_path, "cifar10")
    r = evaluate(rgb32, f"cifar10:{tmp_path}", batch_size=5)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    top1, top5 = _manual(rgb32.model, rgb32.card, x, torch.from_numpy(labels))
    assert r["num_samples"] == 24 and r["data"] == f"cifar10:{tmp_path}:test"
    assert r["accuracy"] == pytest.approx(top1) and r["top5"] == pytest.approx(top5)
    assert r["top5"] >= r["accuracy"]


def test_cifar100_layout(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", 100, 3)
    save_model(
        model,
        tmp_path / "m",
        arch="resnet8",
        num_classes=100,
        input_shape=[3, 32, 32],
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    imgs, labels = _cifar_root(tmp_path / "c", "cifar100")
    lm = load_model(tmp_path / "m")
    r = evaluate(lm, f"cifar100:{tmp_path / 'c'}")
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    top1, top5 = _manual(lm.model, lm.card, x, torch.from_numpy(labels))
    assert r["accuracy"] == pytest.approx(top1) and r["top5"] == pytest.approx(top5)


def test_imagenet_form_resizes_and_centre_crops(tmp_path, rgb32):
    import dataclasses

    wnids = [f"n{i:08d}" for i in range(10)]
    rng = np.random.default_rng(1)
    for i, w in enumerate(wnids[:4]):  # only 4 of the 10 classes present: names come from the card
        (tmp_path / w).mkdir()
        Image.fromarray(rng.integers(0, 256, (48 + i, 64, 3), dtype=np.uint8), "RGB").save(
            tmp_path / w / "a.png"
        )
    card = dataclasses.replace(rgb32.card, extra={"classes": wnids, "resize_size": 40})
    r = evaluate_model(rgb32.model, card, f"imagenet:{tmp_path}")
    assert r["num_samples"] == 4 and r["data"] == f"imagenet:{tmp_path}"
    from datafree.data.evalsets import _resize_crop

    im = Image.new("RGB", (80, 40))
    assert _resize_crop(im, 32, 32, {"resize": 36, "interpolation": "bilinear"}).size == (32, 32)


def test_teacher_agreement(bn_teacher, plain_teacher):
    same = evaluate(bn_teacher, teacher=bn_teacher)
    assert same["agreement"] == 1.0
    other = evaluate(bn_teacher, teacher=plain_teacher)
    x, _ = digits_split("test", (1, 16, 16))
    with torch.no_grad():
        a = bn_teacher.model(bn_teacher.card.normalizer()(x)).argmax(1)
        b = plain_teacher.model(plain_teacher.card.normalizer()(x)).argmax(1)
    assert other["agreement"] == pytest.approx((a == b).float().mean().item())


def test_evaluate_cli_top5_json_and_workers(run, tmp_path):
    imgs, labels = _digits_u8(50)
    _write_folder(tmp_path / "f", imgs, labels)
    r = run("evaluate", "--model", "resnet8_digits", "--data", tmp_path / "f", "--json", "--batch-size", 16,
            "--workers", 1, "--teacher", "lenet5_digits")  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["num_samples"] == 50 and 0.9 < d["accuracy"] <= d["top5"] <= 1 and "agreement" in d


def test_non_digits_card_claims_nothing_and_evaluate_asks_for_data(run, tmp_path, rgb32):
    r = run("evaluate", "--model", rgb32.card.path)
    assert r.exit_code == 2 and "no evaluation data" in r.output and len(r.output.strip().splitlines()) == 1
    from datafree.evaluate import measure

    assert measure(rgb32.model, rgb32.card)["accuracy"] is None


def _bad_inputs(t: Path) -> list[tuple[list[str], str]]:
    imgs, labels = _digits_u8(12)
    _write_folder(t / "ok", imgs, labels)
    (t / "empty" / "0").mkdir(parents=True)
    (t / "big" / "12").mkdir(parents=True)
    Image.fromarray(imgs[0]).save(t / "big" / "12" / "a.png")
    for name in ("cat", "dog"):
        (t / "named" / name).mkdir(parents=True)
        Image.fromarray(imgs[0]).save(t / "named" / name / "a.png")
    (t / "corrupt" / "1").mkdir(parents=True)
    (t / "corrupt" / "1" / "x.png").write_bytes(b"not a png")
    np.savez(t / "nolabels.npz", images=imgs)
    np.savez(t / "range.npz", images=imgs, labels=np.full(len(imgs), 11))
    (t / "evil" / "cifar-10-batches-py").mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (t / "evil" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil()}))
    _cifar_root(t / "c100", "cifar100")
    return [
        (["--data", t / "nope"], "evaluation data not found"),
        (["--data", t / "empty"], "no images"),
        (["--data", t / "big"], "class folder 12 is not a class"),
        (["--data", t / "named"], "no way to tell which class"),
        (["--data", t / "corrupt"], "cannot read image"),
        (["--data", t / "corrupt", "--workers", "1"], "cannot read image"),
        (["--data", t / "nolabels.npz"], "needs arrays 'images' and 'labels'"),
        (["--data", t / "range.npz"], "labels must lie in [0, 10)"),
        (["--data", f"cifar10:{t / 'nope'}"], "CIFAR file not found"),
        (["--data", f"cifar10:{t / 'evil'}"], "refusing to load builtins.print"),
        (["--data", f"cifar100:{t / 'c100'}"], "cifar100 has 100 classes"),
        (["--data", "imagenet:"], "imagenet:VALDIR needs"),
        (["--data", t / "ok", "--batch-size", "0"], "must be > 0"),
        (["--data", t / "ok", "--workers", "-1"], "--workers"),
        (["--data", "digits:nosuch"], "unknown digits split"),
    ]


def test_bad_eval_data_is_one_line_exit_2(run, tmp_path, capsys):
    for args, expected in _bad_inputs(tmp_path):
        r = run("evaluate", "--model", "resnet8_digits", *args)
        assert r.exit_code == 2, (args, r.output)
        assert expected in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
        assert "pwned" not in capsys.readouterr().out


def test_compress_report_measures_on_eval_data(run, tmp_path):
    imgs, labels = _digits_u8(100)
    np.savez(tmp_path / "real.npz", images=imgs, labels=labels)
    out = tmp_path / "c"
    r = run(
        "compress",
        "--out",
        out,
        "--num-images",
        16,
        *KD1,
        "--no-baseline",
        "--eval-data",
        tmp_path / "real.npz",
        *TINY,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["eval_data"] == str(tmp_path / "real.npz") and rep["student"]["eval_data"] == str(
        tmp_path / "real.npz"
    )
    e = run("evaluate", "--model", out, "--data", tmp_path / "real.npz", "--json")
    assert json.loads(e.output)["accuracy"] == pytest.approx(rep["student"]["accuracy"])
    assert json.loads(e.output)["num_samples"] == 100
    card = json.loads((out / "model.json").read_text())
    assert card["accuracy_data"] == str(tmp_path / "real.npz") and card["trained_on"] == "digits"
    # the profile reuses the stages' accuracies instead of reading the evaluation data again
    prof = rep["profile"]
    assert prof["teacher"]["accuracy"] == rep["teacher"]["accuracy"]
    assert prof["student"]["accuracy"] == rep["student"]["accuracy"]
    assert prof["student"]["eval_data"] == str(tmp_path / "real.npz")
    assert f"on {tmp_path / 'real.npz'}" in r.output


def test_compress_profile_does_not_evaluate_again(run, tmp_path, monkeypatch):
    import datafree.profile

    def fail(*a, **k):
        raise AssertionError("the profile measured a model again")

    monkeypatch.setattr(datafree.profile, "measure", fail)
    r = run("compress", "--out", tmp_path / "c", "--num-images", 16, *KD1, "--no-baseline", *TINY)
    assert r.exit_code == 0, r.output


def test_compress_prune_stage_does_not_measure_the_student_again(run, tmp_path, monkeypatch):
    import datafree.profile
    from datafree.utils import count_params

    real, measured = datafree.profile.measure, []

    def spy(model, card, data=None):
        measured.append(count_params(model))
        return real(model, card, data)

    monkeypatch.setattr(datafree.profile, "measure", spy)
    out = tmp_path / "c"
    r = run("compress", "--out", out, "--student", "resnet8_quarter", "--prune", "0.5", "--num-images", 16,
            *KD1, "--no-baseline", *TINY)  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    # the student stage measured the unpruned student; the prune stage measures only its own models
    assert rep["prune"]["stages"]["unpruned"]["accuracy"] == rep["student"]["accuracy"]
    assert rep["student"]["params"] not in measured and len(measured) == 2, measured


def test_compress_of_a_teacher_without_data_claims_nothing(run, tmp_path, bn_teacher):
    card = {k: v for k, v in json.loads(bn_teacher.card.path.read_text()).items() if k != "trained_on"}
    card["weights"] = str(bn_teacher.card.weights_path())
    (tmp_path / "t.json").write_text(json.dumps(card))
    out = tmp_path / "c"
    r = run(
        "compress",
        "--teacher",
        tmp_path / "t.json",
        "--out",
        out,
        "--num-images",
        16,
        *KD1,
        "--no-baseline",
        *TINY,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert (
        rep["teacher"]["accuracy"] is None and rep["student"]["accuracy"] is None and rep["eval_data"] is None
    )
    assert json.loads((out / "model.json").read_text())["test_accuracy"] is None
    assert "accuracy not measured" in r.output and "digits" not in r.output.split("report")[0]


@pytest.mark.parametrize("command", ["distill", "prune", "quantize"])
def test_bad_eval_data_stops_other_commands_before_out(run, tmp_path, command):
    args = {
        "distill": ["distill", "--method", "deepinversion"],
        "prune": ["prune", "--model", "resnet8_digits", "--ratio", "0.5", "--method", "deepinversion"],
        "quantize": ["quantize"],
    }[command]
    r = run(*args, "--out", tmp_path / "o", "--eval-data", tmp_path / "nope", "-q")
    assert r.exit_code == 2 and "evaluation data not found" in r.output
    assert not (tmp_path / "o").exists()


def test_quantize_reports_on_eval_data(run, tmp_path):
    imgs, labels = _digits_u8(64)
    np.savez(tmp_path / "real.npz", images=imgs, labels=labels)
    r = run("quantize", "--calib", "noise", "--calib-images", 8, "--out", tmp_path / "q", "--eval-data",
            tmp_path / "real.npz", "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "q" / "report.json").read_text())
    assert rep["eval_data"] == str(tmp_path / "real.npz")
    e = run("evaluate", "--model", tmp_path / "q", "--data", tmp_path / "real.npz", "--json")
    assert json.loads(e.output)["accuracy"] == pytest.approx(rep["quantized"]["accuracy"], abs=1e-4)
    assert (tmp_path / "q" / "config.yaml").is_file()
