"""Model cost: parameters, MACs, bytes, latency."""

from __future__ import annotations

import torch
from torch import nn

from datafree.profile import count_macs, measure_latency, num_threads, profile_model


def test_macs_of_linear_and_conv_are_exact():
    assert count_macs(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2)) == 12 * 5
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    assert count_macs(conv, (2, 8, 8)) == 4 * 2 * 9 * 8 * 8


def test_profile_report_and_latency_ordering():
    big = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    rep = profile_model(small, (3, 16, 16), repeats=3)
    assert rep["params"] == sum(p.numel() for p in small.parameters())
    assert rep["size_bytes"] == 4 * rep["params"]
    assert rep["latency_ms_b1"] > 0 and rep["latency_ms_b64"] > rep["latency_ms_b1"]
    lat = measure_latency({"big": big, "small": small}, (3, 16, 16), (64,), repeats=5)
    assert lat["small"][64]["min_ms"] < lat["big"][64]["min_ms"]  # ~60x fewer MACs
    assert big.training  # mode restored


def test_num_threads_is_restored():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
