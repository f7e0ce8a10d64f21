"""Write a synthetic dataset with any backend: shard by shard, resumable, rank-aware."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generators import create_synthesizer
from generators.base import SynthConfig

from . import distributed as dist
from .cards import LoadedModel
from .dataset import MANIFEST, SyntheticDataset, save_image_grid, shard_seed
from .errors import NumericalError, UserInputError
from .metrics import log_image
from .progress import progress
from .utils import torch_generator

__all__ = ["synthesize_dataset", "dataset_manifest"]


def synthesize_dataset(
    teacher: LoadedModel,
    method: str,
    out: str | Path,
    num_images: int,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    student: nn.Module | None = None,
    synthesizer: Any = None,
    rank: int | None = None,
    world_size: int | None = None,
    **overrides: Any,
) -> SyntheticDataset:
    """Synthesize ``num_images`` images into ``out`` (resuming whatever is already there).

    Shard ``i`` (``batch_size`` images) is optimised from its own seed ``shard_seed(seed, i)``
    and written atomically, so a killed run continues where it stopped and ends with exactly
    ``num_images`` images. With ``world_size > 1`` rank ``r`` writes shards ``i % world_size == r``.

    Args:
        teacher: the loaded teacher (model and card).
        method: backend name (see :func:`generators.list_methods`).
        out: dataset directory.
        num_images: total images wanted.
        seed: base seed.
        batch_size: images per shard (defaults to the backend's ``batch_size``).
        student: for backends that need one (Adaptive DeepInversion's competition term).
        synthesizer: an already built (e.g. trained online) synthesizer to sample from.
        rank: this process's rank (default: from :mod:`datafree.distributed`, 0 in one process).
        world_size: number of processes writing the dataset (default: the process group's size).
        **overrides: backend config fields.

    Returns:
        The dataset (its manifest up to date).
    """
    if num_images <= 0:
        raise UserInputError(f"--num-images must be > 0, got {num_images}")
    if batch_size is not None:
        overrides["batch_size"] = batch_size  # validated with the backend's config
    synth = synthesizer or create_synthesizer(method, teacher.model, teacher.card, seed=seed, **overrides)
    cfg = synth.config
    manifest = dataset_manifest(teacher, method, cfg, seed, num_images, cfg.batch_size)
    created = not (Path(out) / MANIFEST).is_file()
    rank = dist.get_rank() if rank is None else rank
    world_size = dist.get_world_size() if world_size is None else world_size
    # Rank 0 creates (or validates, to resume) the dataset; its error, if any, stops every rank.
    # a setting the dataset's manifest lacks matches the value it had before it existed
    defaults = cfg.resume_defaults()
    ds = (
        dist.run_on_main(lambda: _create(out, manifest, defaults))
        if world_size > 1
        else _create(out, manifest, defaults)
    )
    if world_size > 1:
        dist.barrier()
        if ds is None:
            ds = SyntheticDataset.open(out)
    assert ds is not None
    todo = [i for i in ds.missing_shards() if i % world_size == rank]
    t0 = time.perf_counter()
    targets = True
    for i in progress(todo, desc=f"synthesize ({method})", unit="batch"):
        n = ds.shard_count(i)
        gen = torch_generator(shard_seed(seed, i))
        batch = synth.synthesize(n, gen, student=student, desc=f"batch {i + 1}/{ds.manifest['num_shards']}")
        with torch.no_grad():
            logits = teacher.model(batch.images)
        if not (synth.batch_finite() and torch.isfinite(batch.images).all() and torch.isfinite(logits).all()):
            _drop_if_empty(ds, created and rank == 0)
            raise NumericalError(
                f"synthesis diverged in shard {i} ({method}): its loss, the images or the teacher's "
                "logits became NaN or inf; "
                "try smaller loss weights or learning rate in --set; no shard was written for it"
            )
        labels = batch.labels if batch.labels is not None else logits.argmax(1)
        targets = batch.labels is not None
        ds.write_shard(i, synth.normalizer.inverse(batch.images).clamp_(0, 1), labels, logits)
        if rank == 0:
            ds.write_manifest()
    if world_size > 1:
        dist.barrier()  # every rank's shards are on disk: rank 0 writes the one merged manifest
    if rank == 0:
        ds.manifest["seconds"] = round(ds.manifest.get("seconds", 0.0) + time.perf_counter() - t0, 2)
        if synth.steps_taken:  # offline backends that stop on a plateau
            ds.manifest["steps_per_batch"] = [*ds.manifest.get("steps_per_batch", []), *synth.steps_taken]
        if ds.complete:
            from .quality import dataset_warnings, teacher_quality

            q = ds.manifest["teacher_quality"] = teacher_quality(ds, labels_are_targets=targets)
            dataset_warnings(q, f"the {method} images", teacher.card, synth.agreement_floor)
        ds.write_manifest()
        first = next(ds.iter_shards(), None)
        if first is not None:
            save_image_grid(first["images"][:64], ds.root / "samples.png", nrow=8)
            log_image(f"samples/{method}", first["images"][:64])  # TensorBoard (with --tensorboard)
    return ds


def _drop_if_empty(ds: SyntheticDataset, created: bool) -> None:
    """A dataset this run created and that holds no shard yet is removed: a rerun starts clean."""
    if not created or ds.existing_shards():
        return
    for name in (MANIFEST, "samples.png", "metrics.jsonl"):  # the failed run's step log goes with it
        (ds.root / name).unlink(missing_ok=True)
    try:
        ds.root.rmdir()
    except OSError:  # holds something else (hidden files): leave it
        pass


def dataset_manifest(
    teacher: LoadedModel, method: str, config: SynthConfig, seed: int, num_images: int, shard_size: int
) -> dict[str, Any]:
    """The identity part of a synthetic dataset's manifest: the backend, its settings, the teacher."""
    card = teacher.card
    return {
        "method": method,
        "config": config.plain(),
        "seed": seed,
        "teacher": card.name or str(card.path),
        "teacher_sha256": card.sha256,
        "input_shape": list(card.input_shape),
        "mean": card.mean,
        "std": card.std,
        "num_classes": card.num_classes,
        "num_images": num_images,
        "shard_size": shard_size,
    }


def _create(out: str | Path, manifest: dict[str, Any], defaults: dict[str, Any]) -> SyntheticDataset:
    """Create or reopen the dataset, drop torn temporary files of a killed run, write the manifest."""
    ds = SyntheticDataset.create(out, config_defaults=defaults, **manifest)
    for pattern in (".shard-*.tmp", f".{MANIFEST}.*.tmp", ".samples.png.*.tmp"):  # torn by a kill mid-write
        for tmp in ds.root.glob(pattern):
            tmp.unlink(missing_ok=True)
    ds.write_manifest()  # so other ranks open the requested num_images
    return ds
