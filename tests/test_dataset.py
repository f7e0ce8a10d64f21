import json

import numpy as np
import pytest
import torch

from datafree.dataset import SyntheticDataset, export_dataset
from datafree.errors import UserInputError
from datafree.evaluate import evaluate
from datafree.synthesis import synthesize_dataset

TINY = {"iterations": 3, "warmup": 1}


def test_write_resume_and_exact_count(tmp_path, bn_teacher):
    out = tmp_path / "ds"
    # First run "interrupted" after 2 of 3 shards: simulate by asking for 2 shards' worth first,
    # then the full command resumes and writes only the missing shard.
    full = synthesize_dataset(bn_teacher, "deepinversion", out, 20, batch_size=8, **TINY)
    first = {p.name: p.read_bytes() for p in out.glob("shard-*.safetensors")}
    (out / "shard-00002.safetensors").unlink()
    again = synthesize_dataset(bn_teacher, "deepinversion", out, 20, batch_size=8, **TINY)
    data = again.load()
    assert data["images"].shape == (20, 1, 16, 16) and data["labels"].shape == (20,)
    assert data["teacher_logits"].shape == (20, 10)
    assert again.manifest["images_written"] == 20 == full.manifest["images_written"]
    # The regenerated shard is identical: shards come from their own seeds.
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.safetensors")} == first
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"] == "deepinversion" and m["teacher_sha256"] == bn_teacher.card.sha256 and m["seed"] == 0
    assert (out / "samples.png").is_file()
    assert 0 <= data["images"].min() and data["images"].max() <= 1


def test_other_settings_do_not_mix_into_an_existing_dataset(tmp_path, bn_teacher):
    out = tmp_path / "ds"
    synthesize_dataset(bn_teacher, "deepinversion", out, 8, batch_size=8, **TINY)
    with pytest.raises(UserInputError, match="different synthetic dataset"):
        synthesize_dataset(bn_teacher, "deepinversion", out, 8, batch_size=8, seed=1, **TINY)


def test_foreign_directory_is_refused(tmp_path, bn_teacher):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        synthesize_dataset(bn_teacher, "deepinversion", tmp_path, 8, batch_size=8, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_export_round_trip(tmp_path, bn_teacher):
    ds = synthesize_dataset(bn_teacher, "deepinversion", tmp_path / "ds", 12, batch_size=6, **TINY)
    data = ds.load()
    npz = export_dataset(ds.root, "npz", tmp_path / "x.npz")
    with np.load(npz) as z:
        assert z["images"].shape == (12, 16, 16) and z["images"].dtype == np.uint8
        np.testing.assert_array_equal(z["labels"], data["labels"].numpy())
        np.testing.assert_allclose(z["images"] / 255.0, data["images"][:, 0].numpy(), atol=0.5 / 255 + 1e-6)
    folder = export_dataset(ds.root, "imagefolder", tmp_path / "folder")
    assert sum(1 for _ in folder.rglob("*.png")) == 12
    # Both exports are readable by `evaluate` as labelled datasets with the same labels.
    r_npz = evaluate(bn_teacher, npz)
    r_dir = evaluate(bn_teacher, folder)
    assert r_npz["num_samples"] == r_dir["num_samples"] == 12
    teacher_agree = (data["teacher_logits"].argmax(1) == data["labels"]).float().mean().item()
    assert r_npz["accuracy"] == pytest.approx(teacher_agree, abs=0.2)


def test_open_rejects_non_dataset(tmp_path):
    with pytest.raises(UserInputError, match="not a synthetic dataset"):
        SyntheticDataset.open(tmp_path)


def test_compatibility_check(tmp_path, bn_teacher, custom_teacher):
    ds = synthesize_dataset(bn_teacher, "deepinversion", tmp_path / "ds", 4, batch_size=4, **TINY)
    ds.check_compatible(bn_teacher.card)
    with pytest.raises(UserInputError, match="was made for input"):
        ds.check_compatible(custom_teacher.card)
    assert torch.is_tensor(ds.load()["images"])
