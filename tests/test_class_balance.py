"""Class-balanced KD batches from a written dataset (KDConfig.class_balance, off by default)."""

import pytest
import torch

from datafree.distill import KDConfig, distill
from datafree.errors import UserInputError
from datafree.sources import DatasetSource, NoiseSource, TensorSource
from tests.conftest import teacher_labelled_dataset
from tests.kd_cases import assert_same_student, tiny_student


class ClassedSource(TensorSource):
    """A tensor source whose images' classes are given (as a written dataset's stored logits give them)."""

    def __init__(self, images, classes, num_classes=10, limit=None):
        self._c, self._k = classes, num_classes
        self.limit, self.calls = limit, 0
        super().__init__(images)

    def classes(self):  # noqa: D102
        return self._c

    def class_counts(self):  # noqa: D102
        return torch.bincount(self._c, minlength=self._k)

    def next_batch(self, n):  # noqa: D102
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt  # a run killed mid-stage
        return super().next_batch(n)


def _skewed(n=400, rare=4):
    """``n`` classes: class 1 ``rare`` times, the others in turn."""
    c = torch.tensor([0, 2, 3, 4, 5, 6, 7, 8, 9] * n)[: n - rare]
    return torch.cat([c, torch.ones(rare, dtype=torch.long)])


def test_balanced_draw_shows_a_rare_class_as_often_as_the_others():
    classes = _skewed()
    src = ClassedSource(torch.arange(len(classes), dtype=torch.float32).view(-1, 1, 1, 1), classes)
    drawn = src.next_batch(len(classes)).view(-1).long()  # the plain shuffle: every image once
    assert torch.equal(drawn.sort().values, torch.arange(len(classes)))
    src.balance_classes(1.0)
    seen = torch.cat([src.next_batch(len(classes)).view(-1).long() for _ in range(10)])
    share = torch.bincount(classes[seen], minlength=10).float() / len(seen)
    assert share[1] > 0.07 and share.max() < 0.13  # 1% of the images, ~10% of the draws
    src.balance_classes(0.0)  # off again: the plain shuffle
    epoch = src.next_batch(len(classes)).view(-1).long()
    assert len(epoch.unique()) == len(classes)


def test_kd_balances_the_classes_when_asked_and_resumes_exactly(tmp_path, bn_teacher):
    images = NoiseSource(200, bn_teacher.card).images
    classes = _skewed(200, rare=1)
    cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16, class_balance=1.0)
    ref = distill(
        bn_teacher.model, tiny_student(), ClassedSource(images, classes), cfg, checkpoint_dir=tmp_path / "a"
    )
    assert ref.class_balance == {"power": 1.0, "class_counts": torch.bincount(classes, minlength=10).tolist()}
    plain_cfg = KDConfig(epochs=3, steps_per_epoch=4, batch_size=16)  # the default: the plain shuffle
    plain = distill(bn_teacher.model, tiny_student(), ClassedSource(images, classes), plain_cfg)
    assert plain.class_balance is None
    assert not torch.allclose(next(ref.student.parameters()), next(plain.student.parameters()))
    # killed after 9 batches (epoch 3), then resumed: the same batches, the same student
    with pytest.raises(KeyboardInterrupt):
        distill(bn_teacher.model, tiny_student(), ClassedSource(images, classes, limit=9), cfg,
                checkpoint_dir=tmp_path / "b")  # fmt: skip
    resumed = distill(
        bn_teacher.model, tiny_student(), ClassedSource(images, classes), cfg, checkpoint_dir=tmp_path / "b"
    )
    assert resumed.resumed_from_epoch == 2
    assert_same_student(ref, resumed)


def test_noise_and_plain_tensors_are_never_balanced(bn_teacher):
    cfg = KDConfig(epochs=1, steps_per_epoch=2, batch_size=8, class_balance=1.0)
    res = distill(bn_teacher.model, tiny_student(), NoiseSource(32, bn_teacher.card), cfg)
    assert res.class_balance is None  # no classes known: the plain shuffle


def test_dataset_source_counts_the_stored_teacher_classes(tmp_path):
    torch.manual_seed(0)
    teacher_labelled_dataset(tmp_path / "ds", torch.rand(128, 1, 16, 16), shard_size=64, method="test")
    from datafree.cards import load_model
    from datafree.dataset import SyntheticDataset

    lm = load_model("resnet8_digits")
    src = DatasetSource(tmp_path / "ds", lm.card)
    stored = SyntheticDataset.open(tmp_path / "ds").load()["teacher_logits"].argmax(1)
    assert torch.equal(src.classes(), stored)
    assert torch.equal(src.class_counts(), torch.bincount(stored, minlength=10))
    assert len(src.class_counts()) == 10


@pytest.mark.parametrize("bad", [-0.5, -1, float("nan"), float("inf")])
def test_bad_class_balance(bad):
    with pytest.raises(UserInputError, match="class_balance"):
        KDConfig(class_balance=bad).validate()


def test_bench_reruns_a_runs_kd_with_each_balance(tmp_path):
    """bench/kd_class_balance.py on a tiny run directory: one row per balance x seed, with the counts."""
    import json

    from bench.kd_class_balance import main
    from datafree.cards import load_model

    run = tmp_path / "run"
    pixels = torch.rand(200, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    teacher_labelled_dataset(run / "data", pixels, shard_size=100, method="test")
    lm = load_model("resnet8_digits")
    kd = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16}
    report = {
        "teacher": {"card": str(lm.card.path), "accuracy": 0.99},
        "student": {"arch": "resnet8_quarter"},
        "kd": kd,
    }
    (run / "report.json").write_text(json.dumps(report))
    out = tmp_path / "rows.json"
    main(
        [
            "--run",
            str(run),
            "--balance",
            "0,1",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "w"),
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["balance"], r["seed"]) for r in rows] == [(0.0, 0), (1.0, 0)]
    counts = torch.bincount(lm.model(lm.card.normalizer()(pixels)).argmax(1), minlength=10).tolist()
    assert all(r["class_counts"] == counts for r in rows)
    assert rows[0]["class_balance"] is None and rows[1]["class_balance"]["power"] == 1.0
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
