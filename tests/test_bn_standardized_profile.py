"""bench/bn_standardized_profile.py: the raw and standardised BN loss of real digits, noise and datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import bn_standardized_profile as prof


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_real_digits_score_far_below_noise_in_both_forms(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    assert prof.main(["resnet8_digits", "--json", str(out)]) == 0
    rows = {r["images"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"real", "noise"} and rows["real"]["n"] == 256
    for form in ("raw", "standardized"):
        real, noise = rows["real"][form], rows["noise"][form]
        assert real["total"] < 0.5 * noise["total"]
        assert len(real["thirds"]) == 3 and all(v >= 0 for v in real["thirds"])


def test_summary_weights_the_first_layer_and_splits_in_thirds() -> None:
    s = prof.summary([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert s == {"total": prof.FIRST_LAYER_WEIGHT * 1.0 + 20.0, "thirds": [3.0, 7.0, 11.0]}


def test_standardized_terms_do_not_depend_on_a_layers_scale() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    net[1].running_var.fill_(4.0)
    x = torch.randn(16, 1, 8, 8)
    raw, std = prof.layer_terms(net, x, False), prof.layer_terms(net, x, True)
    with torch.no_grad():
        net[0].weight.mul_(10.0)
        net[0].bias.mul_(10.0)
        net[1].running_mean.mul_(10.0)
        net[1].running_var.mul_(100.0)
    assert prof.layer_terms(net, x, True) == pytest.approx(std, rel=1e-4)
    assert prof.layer_terms(net, x, False)[0] > 9 * raw[0]
