"""The replay memory of generated images (datafree.replay) and the online backends' ``replay`` option."""

from __future__ import annotations

import io

import pytest
import torch

from datafree.cards import load_model
from datafree.errors import UserInputError
from datafree.online_train import train_online
from datafree.replay import ReplayMemory, auto_replay_size
from generators import create_synthesizer

torch.set_num_threads(1)


def _batch(start: int, n: int) -> torch.Tensor:
    """Images whose every pixel is their index: which images a memory holds is readable."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


def _ids(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def test_memory_keeps_everything_until_full_then_a_uniform_sample_of_all_offered():
    mem = ReplayMemory(100, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="empty"):
        mem.draw(1)
    mem.add(_batch(0, 60))
    assert len(mem) == 60 and sorted(_ids(mem.images[:60])) == list(range(60))
    assert set(_ids(mem.draw(500))) <= set(range(60))
    for start in range(60, 10_000, 50):
        mem.add(_batch(start, 50))
    assert len(mem) == 100 and mem.seen == 10_010
    kept = _ids(mem.images)
    assert len(set(kept)) == 100  # no image kept twice
    # algorithm R: every offered image is kept with probability 100 / 10,010, so early and late images
    # are alike (first half of the run against the second: 50 each in expectation)
    early = sum(k < 5_005 for k in kept)
    assert 30 <= early <= 70


def test_memory_state_roundtrip_draws_the_same():
    rng = torch.Generator().manual_seed(3)
    mem = ReplayMemory(8, rng)
    mem.add(_batch(0, 5))
    state = mem.state_dict()
    rng_state = rng.get_state()
    other_rng = torch.Generator()
    other = ReplayMemory(8, other_rng)
    other.load_state_dict(state)
    other_rng.set_state(rng_state)
    assert len(other) == 5
    mem.add(_batch(5, 9))
    other.add(_batch(5, 9))
    assert torch.equal(mem.images, other.images)
    assert torch.equal(mem.draw(6), other.draw(6))


def test_training_batch_draws_replay_from_earlier_batches_only():
    lenet = load_model("lenet5_digits")
    synth = create_synthesizer(
        "dafl", lenet.model, lenet.card, batch_size=8, replay=0.5, replay_size=64, noise_fraction=0.25, seed=2
    )
    first = synth.training_batch(16)  # empty memory: 12 generated, 4 noise
    assert first.shape == (16, 1, 16, 16) and len(synth.memory) == 12
    torch.testing.assert_close(synth.memory.images[:12], first[:12])
    second = synth.training_batch(16)  # 4 generated, 8 replayed of the first batch's 12, 4 noise
    assert len(synth.memory) == 16
    earlier = {tuple(x.flatten().tolist()) for x in first[:12]}
    assert all(tuple(x.flatten().tolist()) in earlier for x in second[4:12])
    torch.testing.assert_close(synth.memory.images[12:16], second[:4])
    # off: the batch is the plain sample, no memory kept
    off = {"batch_size": 8, "noise_fraction": 0.0, "seed": 2}
    plain = create_synthesizer("dafl", lenet.model, lenet.card, **off)
    ref = create_synthesizer("dafl", lenet.model, lenet.card, **off)
    assert plain.memory is None
    torch.testing.assert_close(plain.training_batch(16), ref.sample(16).images)
    for bad in ({"replay": 1.0}, {"replay": -0.1}, {"replay": 0.5, "replay_size": -1}):
        with pytest.raises(UserInputError, match="replay"):
            create_synthesizer("dafl", lenet.model, lenet.card, **bad)


def test_state_dict_carries_the_memory():
    lenet = load_model("lenet5_digits")
    kw = {"batch_size": 8, "replay": 0.5, "replay_size": 32, "noise_fraction": 0.0}
    a = create_synthesizer("dfad", lenet.model, lenet.card, seed=1, **kw)
    a.training_batch(8)
    a.training_batch(8)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = create_synthesizer("dfad", lenet.model, lenet.card, seed=9, **kw)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert len(b.memory) == len(a.memory) == 8 + 4  # the second batch: 4 new, 4 replayed
    assert torch.equal(a.training_batch(8), b.training_batch(8))


def test_killed_run_with_replay_resumes_like_an_uninterrupted_one(tmp_path):
    lenet = load_model("lenet5_digits")
    kd = {"epochs": 3, "steps_per_epoch": 2, "kd_steps": 2}
    kw = {"batch_size": 16, "seed": 2, "replay": 0.5, "replay_size": 24}
    full = train_online(lenet, "dfad", "lenet5_half", tmp_path / "full", dict(kd), **kw)
    seen = []

    def killer(student):
        seen.append(1)
        if len(seen) > 1:
            raise KeyboardInterrupt
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        train_online(lenet, "dfad", "lenet5_half", tmp_path / "cut", dict(kd), eval_fn=killer, **kw)
    resumed = train_online(lenet, "dfad", "lenet5_half", tmp_path / "cut", dict(kd), **kw)
    assert resumed.resumed_from_epoch == 1
    assert full.synthesizer.memory.seen == resumed.synthesizer.memory.seen > 24  # the reservoir was full
    assert torch.equal(full.synthesizer.memory.images, resumed.synthesizer.memory.images)
    for k, v in full.student.state_dict().items():
        assert torch.equal(v, resumed.student.state_dict()[k]), k


def test_bn_less_defaults_mixup_for_dfad_only_and_replay_off(plain_teacher, bn_teacher):
    from datafree.plan import plan

    for method in ("dafl", "zskt", "dfad"):  # replay: an option, off (docs/online_generators.md, Session 13)
        assert create_synthesizer(method, plain_teacher.model, plain_teacher.card).memory is None
        assert plan(bn_teacher, method=method).kd.mixup == 0.0  # BN teachers: the papers' KD
    assert create_synthesizer("zskt", bn_teacher.model, bn_teacher.card, replay=0.25).memory is not None
    assert plan(plain_teacher, method="dfad").kd.mixup == 1.0
    assert plan(plain_teacher, method="dafl").kd.mixup == 0.0  # screened, not adopted
    assert plan(plain_teacher, method="zskt").kd.mixup == 0.0
    assert plan(plain_teacher, method="dfad", kd={"mixup": 0.0}).kd.mixup == 0.0  # the user's value wins


def test_automatic_memory_size_is_capped_in_bytes():
    assert auto_replay_size((1, 16, 16)) == auto_replay_size((3, 32, 32)) == 4096
    assert auto_replay_size((3, 224, 224)) == 256 * 2**20 // (4 * 3 * 224 * 224) == 445
    assert auto_replay_size((3, 8192, 8192)) == 1
    lenet = load_model("lenet5_digits")
    assert create_synthesizer("dafl", lenet.model, lenet.card, replay=0.5).memory.capacity == 4096
    assert create_synthesizer("dafl", lenet.model, lenet.card, replay=0.5, replay_size=7).memory.capacity == 7
