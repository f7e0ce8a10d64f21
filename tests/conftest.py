"""Shared fixtures. Tests run on CPU with one thread (2 shared cores: no OpenMP spinning)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from datafree.cards import ASSETS_DIR, LoadedModel, load_model  # noqa: E402

CUSTOM_CARD = ASSETS_DIR / "fixtures" / "custom_teacher" / "model.json"

# CLI options of the smallest runs that still exercise every stage (shared by the CLI tests)
KD_TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--kd-batch-size", "8"]  # 2 KD steps of 8 images
SYNTH_TINY = ["-n", "12", "--batch-size", "8", "--iterations", "2", "-q"]  # synthesize: 12 images, 2 steps
COMPRESS_TINY = ["-n", "16", "--iterations", "2", "--set", "batch_size=8", *KD_TINY, "--no-baseline", "-q"]


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


def teacher_labelled_dataset(root, pixels: torch.Tensor, shard_size: int, method: str) -> None:
    """Write ``pixels`` ``(n, 1, 16, 16)`` in [0, 1] as a dataset labelled by the shipped teacher."""
    from datafree.dataset import SyntheticDataset

    lm = load_model("resnet8_digits")
    n = len(pixels)
    with torch.no_grad():
        logits = lm.model(lm.card.normalizer()(pixels))
    ds = SyntheticDataset.create(
        root, method=method, config={}, seed=0, teacher="resnet8_digits", teacher_sha256=lm.card.sha256,
        input_shape=[1, 16, 16], mean=lm.card.mean, std=lm.card.std, num_classes=10, num_images=n,
        shard_size=shard_size,
    )  # fmt: skip
    for i in range(n // shard_size):
        s = slice(shard_size * i, shard_size * (i + 1))
        ds.write_shard(i, pixels[s], logits[s].argmax(1), logits[s])
    ds.write_manifest()


def real_digits_dataset(root, n: int = 256) -> None:
    """A dataset directory of real digits labelled by the shipped teacher.

    Not data-free: a fast, learnable source for tests that compare two code paths of the KD stage
    (distributed vs one process, killed-and-resumed vs uninterrupted).
    """
    from datafree.data import digits_split

    x, _ = digits_split("train", (1, 16, 16))
    teacher_labelled_dataset(root, x[:n], shard_size=64, method="real-digits")


@pytest.fixture()
def run():
    """Invoke the CLI in-process with click's runner; arguments are str()-ed."""
    from click.testing import CliRunner

    from cli import cli

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke
