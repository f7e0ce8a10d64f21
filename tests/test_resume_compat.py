"""Resuming what an older version wrote: a setting added since then matches at its default only."""

import dataclasses

import pytest
import torch

from datafree.dataset import SyntheticDataset
from datafree.distill import CHECKPOINT, KDConfig, distill
from datafree.errors import UserInputError
from datafree.sources import NoiseSource, TensorSource
from datafree.utils import field_defaults, settings_diff, settings_match
from tests.kd_cases import tiny_student


def test_settings_match_fills_only_keys_the_saved_settings_lack_and_only_with_defaults():
    defaults = {"a": 1, "new": 0.0}
    assert settings_match({"a": 2}, {"a": 2, "new": 0.0}, defaults)  # written before "new" existed
    assert not settings_match({"a": 2}, {"a": 2, "new": 0.5}, defaults)  # new setting not at its default
    assert not settings_match({"a": 2, "new": 0.5}, {"a": 2, "new": 0.0}, defaults)  # stored value wins
    assert not settings_match({"a": 2}, {"a": 2, "other": 1}, defaults)  # no default known: refuse
    assert not settings_match(None, {"a": 2}, defaults)
    assert field_defaults(KDConfig)["ema_decay"] == 0.0


def test_settings_diff_names_what_a_refused_resume_differs_in():
    defaults = {"a": 1, "new": 0.0}
    assert settings_diff({"a": 2}, {"a": 2, "new": 0.0}, defaults) == ""  # they match
    assert settings_diff({"a": 2}, {"a": 2, "new": 0.5}, defaults) == "new 0.0 -> 0.5"  # absent: its default
    assert settings_diff({"a": 2}, {"a": 3, "other": 1}, defaults) == "a 2 -> 3, other (none) -> 1"
    many = settings_diff({k: 0 for k in "abcdef"}, {k: 1 for k in "abcdef"}, {}, limit=2)
    assert many == "a 0 -> 1, b 0 -> 1, 4 more"
    assert settings_diff(None, {"a": 2}, defaults) == ""


def _strip_from_checkpoint(path, key):
    state = torch.load(path, weights_only=True)
    del state["config"][key]
    torch.save(state, path)


@pytest.mark.parametrize("ema_decay, resumes", [(0.0, True), (0.5, False)])
def test_a_kd_checkpoint_from_before_a_setting_existed_resumes_at_its_default(
    tmp_path, bn_teacher, ema_decay, resumes
):
    images = NoiseSource(32, bn_teacher.card).images
    first = KDConfig(epochs=1, steps_per_epoch=1, batch_size=8)
    distill(bn_teacher.model, tiny_student(), TensorSource(images), first, checkpoint_dir=tmp_path)
    _strip_from_checkpoint(tmp_path / CHECKPOINT, "ema_decay")  # as a version without the option wrote it
    again = dataclasses.replace(first, epochs=1, ema_decay=ema_decay)
    if resumes:
        result = distill(
            bn_teacher.model, tiny_student(), TensorSource(images), again, checkpoint_dir=tmp_path
        )
        assert len(result.history) == 1  # the finished epoch was restored, not run again
    else:
        with pytest.raises(UserInputError, match="other settings"):
            distill(bn_teacher.model, tiny_student(), TensorSource(images), again, checkpoint_dir=tmp_path)


def _manifest(config):
    return {
        "method": "deepinversion",
        "config": config,
        "seed": 0,
        "teacher": "t",
        "teacher_sha256": "0" * 64,
        "input_shape": [1, 16, 16],
        "mean": [0.5],
        "std": [0.5],
        "num_classes": 10,
        "num_images": 8,
        "shard_size": 8,
    }


def test_a_dataset_from_before_a_setting_existed_resumes_at_its_default(tmp_path):
    root = tmp_path / "ds"
    SyntheticDataset.create(root, **_manifest({"lr": 0.1})).write_manifest()  # the older version's settings
    defaults = {"lr": 0.1, "fold_bn": True}
    ds = SyntheticDataset.create(root, config_defaults=defaults, **_manifest({"lr": 0.1, "fold_bn": True}))
    assert ds.root == root
    # the refusal names the setting and both values (the stored one at its default when the version lacked it)
    with pytest.raises(UserInputError, match=r"differs in: config: fold_bn True -> False\)"):
        SyntheticDataset.create(root, config_defaults=defaults, **_manifest({"lr": 0.1, "fold_bn": False}))
    with pytest.raises(UserInputError, match=r"differs in: config: .*lr 0.1 -> 0.2\)"):
        SyntheticDataset.create(root, **_manifest({"lr": 0.2}))


def _strip_source_setting(path, key):
    state = torch.load(path, weights_only=True)
    del state["run"]["source"]["config"][key]
    torch.save(state, path)


@pytest.mark.parametrize(
    "method, kind, key, other",
    [
        ("dafl", "online", "bn_standardized", None),
        ("nayer", "pool", "bn_standardized", None),
        ("dfad", "online", "confidence", -1.0),  # today's default (automatic) is not what older runs did
        ("dafl", "online", "ie_loss", "auto"),
    ],
)
def test_a_generator_kd_checkpoint_from_before_a_backend_setting_existed_resumes_at_its_previous_value(
    tmp_path, bn_teacher, method, kind, key, other
):
    """An online or pool run's checkpoint compares its backend settings as a dataset's manifest does.

    One the checkpoint lacks matches at the value it had before it existed (its default, or
    SynthConfig.previous_defaults); any other value is refused.
    """
    from datafree.sources import PoolSource, SynthesizerSource
    from generators import create_synthesizer

    def source(**overrides):
        synth = create_synthesizer(method, bn_teacher.model, bn_teacher.card, batch_size=8, iterations=1,
                                   **overrides)  # fmt: skip
        return SynthesizerSource(synth) if kind == "online" else PoolSource(synth, max_images=16, seed=0)

    previous = type(source().synth.config).resume_defaults()[key]
    other = (not previous) if other is None else other
    assert other != previous
    cfg = KDConfig(epochs=1, steps_per_epoch=1, batch_size=8)
    run = {"input_shape": bn_teacher.card.input_shape, "checkpoint_dir": tmp_path}
    distill(bn_teacher.model, tiny_student(), source(**{key: previous}), cfg, **run)
    _strip_source_setting(tmp_path / CHECKPOINT, key)  # as a version without it wrote it
    with pytest.raises(UserInputError, match=r"differs in: data source\)"):
        distill(bn_teacher.model, tiny_student(), source(**{key: other}), cfg, **run)
    result = distill(bn_teacher.model, tiny_student(), source(**{key: previous}), cfg, **run)
    assert result.resumed_from_epoch == 1 and len(result.history) == 1  # restored, not run again


def test_an_online_run_from_before_a_backend_setting_existed_resumes_at_its_previous_value(
    tmp_path, bn_teacher
):
    """train_online's run manifest (online.json) and checkpoint both compare settings that way."""
    import json
    import math

    from datafree.online_train import ONLINE_MANIFEST, train_online

    kd = {"epochs": 1, "steps_per_epoch": 1}

    def run(**overrides):
        return train_online(bn_teacher, "dafl", "resnet8_quarter", tmp_path, kd, seed=0, budget_s=math.inf,
                            batch_size=8, **overrides)  # fmt: skip

    first = run(bn_standardized=False)
    assert first.resumed_from_epoch == 0 and first.synthesizer.config.bn_standardized is False
    manifest = json.loads((tmp_path / ONLINE_MANIFEST).read_text())
    del manifest["config"]["bn_standardized"]  # as a version without the option wrote them
    del manifest["kd_config"]["ema_decay"]
    (tmp_path / ONLINE_MANIFEST).write_text(json.dumps(manifest))
    _strip_source_setting(tmp_path / CHECKPOINT, "bn_standardized")
    with pytest.raises(UserInputError, match=r"differs in: config: bn_standardized False -> True\)"):
        run()  # today's default (standardised) is not what the run did
    assert run(bn_standardized=False).resumed_from_epoch == 1
