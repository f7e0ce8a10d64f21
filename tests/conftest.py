"""Shared fixtures. Tests run on CPU with one thread (2 shared cores: no OpenMP spinning)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from datafree.cards import ASSETS_DIR, LoadedModel, load_model  # noqa: E402

CUSTOM_CARD = ASSETS_DIR / "fixtures" / "custom_teacher" / "model.json"


@pytest.fixture(scope="session")
def bn_teacher() -> LoadedModel:
    """The shipped BatchNorm teacher (resnet8_digits)."""
    return load_model("resnet8_digits")


@pytest.fixture(scope="session")
def plain_teacher() -> LoadedModel:
    """The shipped teacher without BatchNorm (lenet5_digits)."""
    return load_model("lenet5_digits")


@pytest.fixture(scope="session")
def custom_teacher() -> LoadedModel:
    """A teacher whose arch is ``net.py:build`` with 3x24x24 inputs."""
    return load_model(CUSTOM_CARD)
