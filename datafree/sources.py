"""Surrogate data sources for the KD stage: a synthetic dataset on disk, or an online synthesizer.

Both give the KD loop the same two calls: ``update(student)`` once per round (trains an online
generator ``g_steps`` times; nothing for a fixed dataset) and ``next_batch(n)`` (normalised
images). ``state_dict`` / ``load_state_dict`` make a run resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .cards import ModelCard
from .dataset import SyntheticDataset
from .distributed import local_slice
from .utils import settings_match

if TYPE_CHECKING:  # typing only: the KD stage runs any object with the Synthesizer interface
    from generators.base import Synthesizer

__all__ = [
    "SurrogateSource",
    "TensorSource",
    "DatasetSource",
    "SynthesizerSource",
    "NoiseSource",
    "PoolSource",
]


class SurrogateSource:
    """What the KD stage needs from a source of surrogate data (the base of every source).

    ``update`` and the state methods default to "nothing to do"; ``next_batch_for_rank`` defaults
    to this rank's slice of ``next_batch(n)`` (a source whose ranks can draw disjoint parts of
    one global order without drawing all of it overrides it).
    """

    #: whether ``update`` trains against the student (adversarial and competition terms).
    needs_student: bool = False

    def update(self, student: nn.Module) -> dict[str, torch.Tensor]:
        """Per-round update (online generators, pools); returns loss terms."""
        return {}

    def next_batch(self, n: int) -> torch.Tensor:
        """``n`` normalised images ``(n, C, H, W)``."""
        raise NotImplementedError

    def next_batch_for_rank(self, n: int, rank: int, world_size: int) -> torch.Tensor:
        """Rank ``rank``'s part of the next global batch of ``n``."""
        return self.next_batch(n)[local_slice(n, rank, world_size)]

    def state_dict(self) -> dict[str, Any]:
        """Resumable state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class TensorSource(SurrogateSource):
    """Epoch-wise shuffled batches from an in-memory tensor of normalised images."""

    needs_student = False

    def __init__(self, images: torch.Tensor, seed: int = 0) -> None:
        if len(images) == 0:
            raise ValueError("empty image tensor")
        self.images = images
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._weights: torch.Tensor | None = None  # per-image sampling weights (class balance), CPU
        self._perm = self._permutation()

    def classes(self) -> torch.Tensor | None:
        """The teacher's class of every image (CPU, int64), where the source knows it; None here."""
        return None

    def class_counts(self) -> torch.Tensor | None:
        """Images per teacher class (every class, missing ones 0), where the source knows them."""
        return None

    def balance_classes(self, power: float) -> None:
        """Draw each epoch's order with replacement, image weights ``(1 / images of its class) ** power``.

        ``power`` 0 restores the plain shuffle. Needs :meth:`classes` and :meth:`class_counts`. The order
        stays a function of the seed and the epoch, so a resumed run draws the batches an uninterrupted
        one would.
        """
        classes, counts = self.classes(), self.class_counts()
        if power == 0 or classes is None or counts is None:
            self._weights = None
        else:
            self._weights = counts.double()[classes].reciprocal().pow(power)
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self._weights is None:
            perm = torch.randperm(len(self.images), generator=g)
        else:
            perm = torch.multinomial(self._weights, len(self.images), replacement=True, generator=g)
        if (
            self.images.device.type == "cuda"
        ):  # one pinned, asynchronous copy per epoch; no per-step host sync
            return perm.pin_memory().to(self.images.device, non_blocking=True)
        return perm

    def __len__(self) -> int:
        return len(self.images)

    def _next_indices(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self._perm):
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
            take = self._perm[self.pos : self.pos + n]
            out.append(take)
            self.pos += len(take)
            n -= len(take)
        return out[0] if len(out) == 1 else torch.cat(out)

    def next_batch(self, n: int) -> torch.Tensor:
        """The next ``n`` images of the shuffled order (wrapping into a new epoch)."""
        return self.images[self._next_indices(n).to(self.images.device)]

    def next_batch_for_rank(self, n: int, rank: int, world_size: int) -> torch.Tensor:
        """Rank ``rank``'s disjoint slice of the next global batch of ``n`` (every rank advances by ``n``).

        The permutation depends only on the seed, so ranks agree on the global order and together
        draw exactly the batches one process would.
        """
        idx = self._next_indices(n)[local_slice(n, rank, world_size)]
        return self.images[idx.to(self.images.device)]

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"epoch": self.epoch, "pos": self.pos}

    def identity(self) -> dict[str, Any]:
        """What defines this source for a resume: the content hash of its images and its seed."""
        from .validate import tensor_digest

        return {
            "kind": "tensors",
            "seed": self.seed,
            "content_sha256": tensor_digest({"images": self.images}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


class DatasetSource(TensorSource):
    """A :class:`SyntheticDataset` directory, checked against ``card``, loaded once and normalised.

    ``allow_other_teacher`` accepts data synthesised from another model of the same input spec
    (e.g. a pruned or quantized student fed the data of its original teacher).
    """

    def __init__(
        self,
        root: str | Path,
        card: ModelCard,
        device: torch.device | str = "cpu",
        seed: int = 0,
        allow_other_teacher: bool = False,
    ) -> None:
        ds = SyntheticDataset.open(root)
        ds.check_compatible(card, allow_other_teacher)
        self.dataset = ds
        data = ds.load()
        # the teacher's classes, from the logits every shard stores (no teacher pass)
        self._classes = data["teacher_logits"].argmax(1)
        self._num_classes = data["teacher_logits"].shape[1]
        super().__init__(card.normalizer()(data["images"]).to(device), seed)

    def classes(self) -> torch.Tensor:
        """The class the teacher (that wrote the dataset) gives each image: its stored logits' argmax."""
        return self._classes

    def class_counts(self) -> torch.Tensor:  # noqa: D102
        return torch.bincount(self._classes, minlength=self._num_classes)


class NoiseSource(TensorSource):
    """Gaussian noise in normalised space, clamped to valid pixels: the baseline every method must beat."""

    def __init__(
        self, num_images: int, card: ModelCard, device: torch.device | str = "cpu", seed: int = 0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((num_images, *card.input_shape), generator=g)
        card.normalizer().clamp_(x)
        super().__init__(x.to(device), seed)


class SynthesizerSource(SurrogateSource):
    """An online synthesizer (a generator network) trained ``g_steps`` times per round."""

    def __init__(self, synthesizer: Synthesizer, g_steps: int = 1) -> None:
        self.synth = synthesizer
        self.g_steps = g_steps
        self.needs_student = synthesizer.needs_student

    def update(self, student: nn.Module) -> dict[str, torch.Tensor]:  # noqa: D102
        logs: dict[str, torch.Tensor] = {}
        for _ in range(self.g_steps):
            logs = self.synth.step(student)
        return logs

    def next_batch(self, n: int) -> torch.Tensor:  # noqa: D102
        with torch.no_grad():
            return self.synth.training_batch(n)  # online backends may mix in noise

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return self.synth.state_dict()

    def identity(self) -> dict[str, Any]:
        """What defines this source for a resume: the backend and its settings."""
        return {"kind": type(self.synth).__name__, "g_steps": self.g_steps, "config": _config_of(self.synth)}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.synth.load_state_dict(state)


class PoolSource(SurrogateSource):
    """A growing pool: each round an offline synthesizer adds one batch, KD samples the whole pool.

    This is the CMI / Fast-Datafree loop (``synthesize(); train(kd_steps)``): the student trains
    from the first batch on instead of waiting for the whole dataset. After ``max_images`` the pool
    stops growing (and synthesis stops costing). Batches are optimised from seeds
    ``seed * 1_000_003 + round``, so a run is reproducible.

    Args:
        synthesizer: an offline backend (``reset`` / ``step`` / ``sample``), e.g. ``fast``.
        batch_size: images synthesised per round.
        max_images: pool capacity; ``None`` keeps growing.
        seed: base seed.
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        batch_size: int | None = None,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        self.synth = synthesizer
        self.batch_size = batch_size or synthesizer.config.batch_size
        self.max_images = max_images
        self.seed = seed
        self.needs_student = synthesizer.uses_student()
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor | None] = []  # the backend's target classes per round (or None)
        self.count = 0
        self.rounds = 0
        self.generator = torch.Generator()

    def update(self, student: nn.Module) -> dict[str, torch.Tensor]:
        """Synthesise one batch (unless the pool is full) and add it to the pool."""
        if self.max_images is not None and self.count >= self.max_images:
            return {}
        n = self.batch_size if self.max_images is None else min(self.batch_size, self.max_images - self.count)
        self.generator.manual_seed(self.seed * 1_000_003 + self.rounds)
        batch = self.synth.synthesize(n, self.generator, student=student if self.needs_student else None)
        self.images.append(batch.images.detach())
        self.labels.append(None if batch.labels is None else batch.labels.detach())
        self.count += len(batch.images)
        self.rounds += 1
        return {}

    def next_batch(self, n: int) -> torch.Tensor:
        """``n`` images drawn uniformly (with replacement) from the pool."""
        if not self.images:
            raise RuntimeError("the pool is empty: call update() first")
        pool = self.pooled()
        idx = torch.randint(len(pool), (n,), generator=self.generator).to(pool.device)
        return pool[idx]

    def pooled(self) -> torch.Tensor:
        """Every pooled image as one tensor (the rounds are joined once, with their targets)."""
        if len(self.images) > 1:
            labels = self.targets()
            self.images = [torch.cat(self.images)]
            self.labels = [labels.to(self.images[0].device) if labels is not None else None]
        return self.images[0]

    def targets(self) -> torch.Tensor | None:
        """The target class of every pooled image (CPU), or None when the backend gives no targets."""
        if not self.labels or any(t is None for t in self.labels):
            return None
        return torch.cat([t for t in self.labels if t is not None]).cpu()

    def identity(self) -> dict[str, Any]:
        """What defines this source for a resume: the backend, its settings, the pool's size and seed."""
        return {
            "kind": f"pool:{type(self.synth).__name__}",
            "config": _config_of(self.synth),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "max_images": self.max_images,
        }

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {
            "synth": self.synth.state_dict(),
            "images": self.pooled().cpu() if self.images else None,
            "labels": self.targets(),
            "rounds": self.rounds,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        self.synth.load_state_dict(state["synth"])
        dev = self.synth.device
        self.images = [state["images"].to(dev)] if state["images"] is not None else []
        labels = state.get("labels")
        self.labels = [labels.to(dev) if labels is not None else None] if self.images else []
        self.count = sum(len(x) for x in self.images)
        self.rounds = int(state["rounds"])
        self.generator.set_state(state["generator"])


def _config_of(synth: Synthesizer) -> dict[str, Any]:
    """A backend's config as plain values, sorted by name, for comparing runs."""
    return dict(sorted(synth.config.plain().items()))


def identity_matches(saved: Any, current: dict[str, Any], source: SurrogateSource) -> bool:
    """Whether a KD checkpoint's source identity ``saved`` is ``current``, ``source``'s, for a resume.

    A backend setting the checkpoint lacks (added since it was written) matches at the value it had
    before it existed (:meth:`generators.base.SynthConfig.resume_defaults`), as a dataset's does.
    """
    synth = getattr(source, "synth", None)
    if synth is None or not isinstance(saved, dict) or "config" not in current:
        return saved == current
    rest = {k: v for k, v in saved.items() if k != "config"}
    return rest == {k: v for k, v in current.items() if k != "config"} and settings_match(
        saved.get("config"), current["config"], synth.config.resume_defaults()
    )
