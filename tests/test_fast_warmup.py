"""Fast-Datafree's warm-up on the written-dataset path (docs/fidelity.md, "Session 9: offline fast")."""

from __future__ import annotations

import pytest
import torch

from datafree.errors import UserInputError


def _fast(teacher, **kw):
    from generators import create_synthesizer

    kw = {"batch_size": 4, "iterations": 2, **kw}
    return create_synthesizer("fast", teacher.model, teacher.card, seed=0, **kw)


def test_warm_up_runs_its_rounds_once_before_the_first_batch(bn_teacher) -> None:
    """warmup_rounds meta-updates precede the first sampled batch, none the later ones; 0 is the old loop."""
    s = _fast(bn_teacher, warmup_rounds=3)
    before = [p.detach().clone() for p in s.meta_generator.parameters()]
    s.synthesize(4, torch.Generator().manual_seed(1))
    assert s.rounds == 3 + 1  # three dropped rounds, then the sampled one
    assert any(not torch.equal(a, b) for a, b in zip(before, s.meta_generator.parameters(), strict=True))
    s.synthesize(4, torch.Generator().manual_seed(2))
    assert s.rounds == 5
    cold = _fast(bn_teacher, warmup_rounds=0)
    cold.synthesize(4, torch.Generator().manual_seed(1))
    assert cold.rounds == 1


def test_warm_up_is_reproducible_and_changes_the_batch(bn_teacher) -> None:
    """The same seed gives the same warmed-up batch; the warm-up moves the generator, so the batch differs."""
    a = _fast(bn_teacher, warmup_rounds=2).synthesize(4, torch.Generator().manual_seed(1))
    b = _fast(bn_teacher, warmup_rounds=2).synthesize(4, torch.Generator().manual_seed(1))
    cold = _fast(bn_teacher, warmup_rounds=0).synthesize(4, torch.Generator().manual_seed(1))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.labels, cold.labels)  # the round's own z and labels come from its generator
    assert not torch.allclose(a.images, cold.images)


def test_warmup_rounds_must_not_be_negative(bn_teacher) -> None:
    with pytest.raises(UserInputError, match="warmup_rounds"):
        _fast(bn_teacher, warmup_rounds=-1)


def test_written_dataset_warms_up_and_the_pool_does_not(bn_teacher) -> None:
    """A written dataset (compress --method fast) warms up 20 rounds; the pool (--pool, auto) none."""
    from datafree.plan import plan

    assert plan(bn_teacher, method="fast").synthesizer.config.warmup_rounds == 20
    assert plan(bn_teacher, method="fast", pool=True).synthesizer.config.warmup_rounds == 0
    asked = plan(bn_teacher, method="fast", pool=True, method_options={"warmup_rounds": 5})
    assert asked.synthesizer.config.warmup_rounds == 5


def test_offline_run_cost_prices_the_warm_up() -> None:
    """Each warm-up round costs a written round (iterations x synth_batch step-images); the pool has none."""
    from datafree import rules

    kw = {"passes": 1, "iterations": 5, "synth_batch": 128, "kd_epochs": 30, "kd_steps_per_epoch": 40,
          "kd_batch": 128, "method": "fast"}  # fmt: skip
    cold = rules.offline_run_cost(1e-3, 2e-3, (3, 32, 32), num_images=1024, **kw)
    warm = rules.offline_run_cost(1e-3, 2e-3, (3, 32, 32), num_images=1024, warmup_rounds=20, **kw)
    # 8 written rounds and 20 dropped ones (the estimate is rounded to 0.1 s)
    assert warm["synthesis_s"] == pytest.approx(cold["synthesis_s"] * (8 + 20) / 8, rel=1e-2)
    assert warm["kd_s"] == cold["kd_s"] and warm["baseline_s"] == cold["baseline_s"]


def test_budget_prices_the_warm_up_on_the_written_path_only(bn_teacher) -> None:
    """budget_settings: the written dataset's synthesis grows by its 20 warm-up rounds; the pool has none."""
    from datafree import plan as plan_mod

    def synthesis(pool: bool, **options):
        kd = plan_mod.kd_settings("fast", {}, pool=pool)
        b = plan_mod.budget_settings(bn_teacher.model, bn_teacher.card, "fast", pool=pool, kd=kd,
                                     kd_given=None, options=options, num_images=None)  # fmt: skip
        return b["estimate"]["synthesis_s"]

    assert synthesis(False) == pytest.approx(synthesis(False, warmup_rounds=0) * (8 + 20) / 8, rel=0.02)
    assert synthesis(True) == synthesis(True, warmup_rounds=0)  # pool_options: no warm-up
    assert synthesis(True, warmup_rounds=5) > synthesis(True)  # one the user asks for is priced


def test_a_dataset_written_before_the_warm_up_resumes_only_without_it(bn_teacher, tmp_path) -> None:
    """A manifest without warmup_rounds was written cold: resuming it with the warm-up is refused."""
    import json

    from datafree.synthesis import synthesize_dataset

    kw = {"seed": 0, "batch_size": 4, "iterations": 1}
    synthesize_dataset(bn_teacher, "fast", tmp_path / "d", 4, warmup_rounds=0, **kw)
    manifest = tmp_path / "d" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["config"]["warmup_rounds"]  # as written before the setting existed
    manifest.write_text(json.dumps(m))
    with pytest.raises(UserInputError, match="config"):
        synthesize_dataset(bn_teacher, "fast", tmp_path / "d", 8, **kw)  # the default: 20 rounds
    assert synthesize_dataset(bn_teacher, "fast", tmp_path / "d", 8, warmup_rounds=0, **kw).complete
