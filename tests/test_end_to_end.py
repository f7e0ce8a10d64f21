"""Small end-to-end runs: a student distilled from synthetic data alone clearly beats chance.

It beats chance (and noise) on real held-out digits. Budgets are tiny; the full-size figures come
from bench/.
"""

import pytest
import torch

from datafree.distill import KDConfig
from datafree.pipeline import distill_to_dir
from datafree.sources import DatasetSource, NoiseSource
from datafree.synthesis import synthesize_dataset


def test_deepinversion_student_beats_chance_and_noise(tmp_path, bn_teacher):
    ds = synthesize_dataset(
        bn_teacher, "deepinversion", tmp_path / "ds", 256, batch_size=128, iterations=60, warmup=6
    )
    kd = KDConfig(epochs=6, steps_per_epoch=20, batch_size=64)
    syn = distill_to_dir(bn_teacher, DatasetSource(ds.root, bn_teacher.card), tmp_path / "s", kd=kd)
    noise = distill_to_dir(bn_teacher, NoiseSource(256, bn_teacher.card), tmp_path / "n", kd=kd, save=False)
    # chance is 0.1; at this budget the accuracy varies with the seed and with last-bit changes of the
    # BN statistics (measured 0.46-0.53 over seeds 0/1, before and after the fused statistics)
    assert syn["accuracy"] > 0.4
    assert syn["accuracy"] > noise["accuracy"] + 0.2


@pytest.mark.slow
def test_custom_teacher_compress_reaches_95_percent(tmp_path, custom_teacher):
    from datafree.pipeline import compress

    rep = compress(custom_teacher.card.path, tmp_path / "c", baseline=False)
    assert rep["student"]["ratio_to_teacher"] >= 0.95
    assert torch.isfinite(torch.tensor(rep["student"]["accuracy"]))
