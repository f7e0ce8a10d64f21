"""How much synthetic images look like data to their teacher: agreement with targets and confidence.

DeepInversion-style backends optimise each image towards a target class; a teacher that classifies
its own synthetic images as their targets, with high confidence, got images that carry the class
(a public DeepInversion implementation reaches only 82.7% agreement on a 16-pixel teacher; see
issue 11). Computed from the teacher logits every shard already stores, so it costs no teacher pass.

The generator backends (DAFL, ZSKT, DFAD) have no targets and write no dataset: their report reads
the teacher's classes on a fixed sample of the trained generator's images (:func:`generator_quality`).
Either way a class the teacher almost never sees in the images is named (``rare_classes``), and the
run warns: a student cannot learn a class its data never shows it (on the suite's MobileNetV2 all
three generator backends made no image of class 1 in 2,048, and the students scored 0% on real 1s;
docs/online_generators.md, "Session 12").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .utils import device_of

__all__ = [
    "teacher_quality",
    "generator_quality",
    "coverage_warning",
    "agreement_warning",
    "dataset_warnings",
    "weak_classes",
    "weak_class_warning",
    "class_names",
    "RARE_CLASS_SHARE",
    "COVERAGE_MIN_SHARE_IMAGES",
    "WEAK_CLASS_RATIO",
    "WEAK_CLASS_MIN_IMAGES",
    "DATASET_HINT",
    "AGREEMENT_HINT",
    "GENERATOR_HINT",
]

# What to try when a written dataset (or a pool) of a backend with target classes misses some.
DATASET_HINT = "more steps per batch (--iterations) or another --method may cover them"
# ... and when a generator backend's images miss some, on a BN teacher (where those backends apply).
GENERATOR_HINT = "a backend with target classes (--method fast, nayer, cmi, deepinversion) makes every class"
# ... and when a backend's images did not reach their target classes (its ``agreement_floor``).
AGREEMENT_HINT = "compress's default --method auto picks a backend by the teacher's cost; or --method fast"
# A class is rare when the teacher assigns it less than this share of its fair share (images / classes).
RARE_CLASS_SHARE = 0.1
# ... judged only when the fair share is at least this many images (1,024 images of 1,000 ImageNet
# classes say nothing about any one class).
COVERAGE_MIN_SHARE_IMAGES = 20


def teacher_quality(ds: Any, labels_are_targets: bool = True) -> dict[str, Any]:
    """Agreement and confidence of the teacher on a synthetic dataset's images.

    Args:
        ds: a :class:`datafree.dataset.SyntheticDataset`.
        labels_are_targets: whether the stored labels are the backend's target classes (they are
            the teacher's own argmax otherwise, and agreement is 1 by construction: reported None).

    Returns:
        ``{"images", "agreement", "confidence", "min_class_fraction", "rare_classes"}``: the fraction of
        images whose teacher argmax equals the target, the mean top softmax probability, the share of
        the rarest predicted class times the class count (1 = balanced, 0 = a class missing), and the
        classes predicted for under :data:`RARE_CLASS_SHARE` of their fair share (None when the fair
        share is under :data:`COVERAGE_MIN_SHARE_IMAGES` images).
    """

    def shards() -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
        for shard in ds.iter_shards():
            yield shard["teacher_logits"].float(), shard["labels"]

    return _summary(shards(), labels_are_targets)


def generator_quality(
    synth: Any, teacher: nn.Module, n: int = 1024, batch: int = 256, seed: int = 1234
) -> dict[str, Any]:
    """The teacher's confidence and classes on ``n`` images of a trained generator backend.

    The latents come from a fixed ``seed`` of their own, so the figure does not move the run's random
    streams and two runs are compared on the same draw. Agreement is None (no targets).

    Args:
        synth: an :class:`generators.online.OnlineSynthesizer` (anything with ``sample(n, generator)``).
        teacher: the teacher network (eval mode).
        n: images to draw.
        batch: images per forward.
        seed: the latents' seed.
    """
    device = device_of(teacher)
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
        done = 0
        while done < n:
            k = min(batch, n - done)
            with torch.no_grad():
                images = synth.sample(k, generator=gen).images.to(device)
                yield teacher(images).float().cpu(), None
            done += k

    return _summary(batches(), labels_are_targets=False)


def _summary(
    parts: Iterable[tuple[torch.Tensor, torch.Tensor | None]], labels_are_targets: bool
) -> dict[str, Any]:
    n = agree = 0
    conf = 0.0
    counts: torch.Tensor | None = None
    for logits, labels in parts:
        pred = logits.argmax(1)
        n += len(pred)
        if labels is not None:
            agree += int((pred == labels).sum())
        conf += float(logits.softmax(1).amax(1).sum())
        c = torch.bincount(pred, minlength=logits.shape[1])
        counts = c if counts is None else counts + c
    if n == 0 or counts is None:
        empty = dict.fromkeys(("agreement", "confidence", "min_class_fraction", "rare_classes"))
        return {"images": 0, **empty}
    k = len(counts)
    judged = n / k >= COVERAGE_MIN_SHARE_IMAGES
    rare = [c for c in range(k) if float(counts[c]) * k / n < RARE_CLASS_SHARE] if judged else None
    return {
        "images": n,
        "agreement": round(agree / n, 4) if labels_are_targets else None,
        "confidence": round(conf / n, 4),
        "min_class_fraction": round(float(counts.min()) * k / n, 4),
        # classes under RARE_CLASS_SHARE of their fair share (None: too few images per class to say)
        "rare_classes": rare,
    }


def coverage_warning(
    quality: dict[str, Any], what: str, names: list[str] | None = None, hint: str = ""
) -> str | None:
    """Warn (``UserWarning``, one line) when ``quality`` names rare classes; the message, or None.

    Args:
        quality: a :func:`teacher_quality` / :func:`generator_quality` result.
        what: what the images are, for the message (``"the dafl generator's images"``).
        names: the card's class names (:func:`class_names`), when it has them.
        hint: what to try, appended after a semicolon.
    """
    rare = quality.get("rare_classes")
    if not rare:
        return None
    labels = [_class_label(c, names) for c in rare]
    shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
    return _warn(
        f"the teacher assigns almost none of {what} ({quality['images']:,}) to class(es) {shown} "
        f"(under {RARE_CLASS_SHARE:.0%} of a fair share): a student cannot learn a class its data "
        "never shows",
        hint,
    )


def agreement_warning(quality: dict[str, Any], what: str, floor: float | None, hint: str = "") -> str | None:
    """Warn (``UserWarning``, one line) when the teacher's agreement with the targets is under ``floor``.

    Args:
        quality: a :func:`teacher_quality` result (``agreement`` None: no targets, nothing to judge).
        what: what the images are, for the message (``"the deepinversion images"``).
        floor: the backend's ``agreement_floor`` (None: never judged).
        hint: what to try, appended after a semicolon.

    Returns:
        The message, or None.
    """
    agreement = quality.get("agreement")
    if floor is None or agreement is None or agreement >= floor:
        return None
    return _warn(
        f"the teacher classes only {agreement:.0%} of {what} ({quality['images']:,}) as their target "
        f"classes (under {floor:.0%}): the synthesis did not reach them on this teacher, and students of "
        "such images kept 30-64% of their teachers in every run measured",
        hint,
    )


def dataset_warnings(quality: dict[str, Any], what: str, card: Any, agreement_floor: float | None) -> None:
    """A written dataset's (or pool's) warnings: the classes it misses, and targets it did not reach.

    Args:
        quality: its :func:`teacher_quality`.
        what: what the images are, for the messages (``"the deepinversion images"``).
        card: the teacher's card (its class names, when it has them).
        agreement_floor: the backend's ``agreement_floor``.
    """
    coverage_warning(quality, what, class_names(card), hint=DATASET_HINT)
    agreement_warning(quality, what, agreement_floor, hint=AGREEMENT_HINT)


# A class the student reads right under this fraction of how often the teacher does is named (report.json's
# student.weak_classes, one warning line): on the suite's MobileNetV2 the online students read real 1s at 0%
# while every other class stayed at 56-100% (docs/online_generators.md, "Session 32"). In 110 runs on the
# suite and held-out teachers (bench/per_class_scan.py, bench/results/s32/per_class_scan.md), the 77 at
# 95% of the teacher or more read their lowest class at 59% or more, and 23 of the 33 under 95% had a
# class under half the teacher's rate.
WEAK_CLASS_RATIO = 0.5
# ... and with at least this many images of the class in the evaluation data (fewer say little)
WEAK_CLASS_MIN_IMAGES = 5


def weak_classes(student: dict[str, Any], teacher: dict[str, Any]) -> list[int]:
    """The classes a student reads right under :data:`WEAK_CLASS_RATIO` x the teacher's rate.

    Args:
        student: the student's :func:`datafree.evaluate.evaluate_model` result (``per_class``,
            ``class_images``).
        teacher: the teacher's, on the same data.

    Returns:
        Class indices, in order; empty when either has no per-class figures.
    """
    s, t, n = student.get("per_class"), teacher.get("per_class"), student.get("class_images")
    if not s or not t or not n or len(s) != len(t):
        return []
    return [
        c for c, (a, b, k) in enumerate(zip(s, t, n, strict=True))
        if a is not None and b is not None and k >= WEAK_CLASS_MIN_IMAGES and a < WEAK_CLASS_RATIO * b
    ]  # fmt: skip


def weak_class_warning(
    student: dict[str, Any], teacher: dict[str, Any], names: list[str] | None = None
) -> list[int]:
    """Warn (``UserWarning``, one line) about :func:`weak_classes`; returns them.

    The line names each weak class with the student's and the teacher's accuracy on it, so a student
    whose overall accuracy hides one class it never learned (a class its synthetic data never showed,
    or showed as nothing like the real one) says so.
    """
    weak = weak_classes(student, teacher)
    if weak:
        s, t, n = student["per_class"], teacher["per_class"], student["class_images"]
        parts = [
            f"{_class_label(c, names)} ({100 * s[c]:.0f}% of {n[c]}, teacher {100 * t[c]:.0f}%)"
            for c in weak[:3]
        ]
        more = f" and {len(weak) - 3} more of {len(s)}" if len(weak) > 3 else ""
        _warn(
            f"the student reads class(es) {', '.join(parts)}{more} right under half as often as the "
            "teacher: its synthetic data did not teach them",
            "report.json has every class's accuracy (student.per_class); another --method may cover them",
        )
    return weak


def _class_label(c: int, names: list[str] | None) -> str:
    """Class ``c`` as the card names it (:func:`class_names`), else its index."""
    return names[c] if names and c < len(names) else str(c)


def _warn(msg: str, hint: str) -> str:
    """``msg`` (with ``; hint`` when given) as a ``UserWarning`` pointing at the warning function's caller."""
    msg += f"; {hint}" if hint else ""
    warnings.warn(msg, UserWarning, stacklevel=3)
    return msg


def class_names(card: Any) -> list[str] | None:
    """The card's class names (``"classes"``, a list of strings, among its extra fields), or None."""
    names = getattr(card, "extra", {}).get("classes")
    return [str(c) for c in names] if isinstance(names, list) else None
