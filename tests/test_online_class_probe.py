"""bench/online_class_probe.py: one class's figures from a finished online run's generator and student."""

from __future__ import annotations

import torch

from bench import online_class_probe as ocp

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "8", "--set", "batch_size=8"]


def test_probe_counts_agree_with_the_generator_and_the_real_split(run, tmp_path):
    out = tmp_path / "c"
    r = run("compress", "--teacher", "lenet5_digits", "--method", "dafl", "--out", out, "--quiet",
            "--no-baseline", *TINY)  # fmt: skip
    assert r.exit_code == 0, r.output
    a = ocp.probe(out, cls=3, images=300, seed=0)
    assert ocp.probe(out, cls=3, images=300, seed=0) == a  # a fixed seed: the same images, the same figures
    assert a["images"] == 300 and sum(a["generated_per_class"]) == 300  # drawn in batches of 256 and the rest
    assert a["teacher_calls"] == a["generated_per_class"][3]
    # the real 3s of the digits test split, each read as one class; the accuracy is the diagonal share
    from datafree.cards import load_model
    from datafree.data.evalsets import open_eval_data

    lm = load_model("lenet5_digits")
    n3 = sum(int((y == 3).sum()) for _, y in open_eval_data("digits:test", lm.card, batch_size=512))
    assert sum(a["real_read_as"]) == n3 > 0
    assert abs(a["real_acc"] - a["real_read_as"][3] / n3) < 1e-9
    assert 0.0 <= a["nearest_is_cls"] <= 1.0 and -1.0 <= a["nearest_cos"] <= 1.0 + 1e-6
    if a["teacher_calls"]:
        assert 0.1 <= a["teacher_conf"] <= 1.0 and 0.0 <= a["student_agrees"] <= 1.0
    else:
        assert a["teacher_conf"] is None and a["student_agrees"] is None


def test_penultimate_features_are_the_classifier_input():
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(300, 3, 2, 2)
    logits, feats = ocp._penultimate(model, x)
    hidden = model[2](model[1](model[0](x)))
    assert torch.allclose(logits, model(x)) and feats.shape == (300, 5)
    assert torch.allclose(feats, torch.nn.functional.normalize(hidden, dim=1), atol=1e-6)
