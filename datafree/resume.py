"""Generic pieces for stages that must survive a kill: safe checkpoint loading and run-once stages.

The KD stage (:func:`datafree.distill.distill` with ``checkpoint_dir``) already resumes per epoch;
every consumer that trains through it (student KD, pruning recovery, quantization fine-tuning)
gets that for free. The built-in stages that are not a training loop (pruning a model,
calibrating a quantizer) take seconds and are deterministic for a seed, so a rerun recomputes
them. :func:`run_once` is for a stage that is neither: its result is written atomically by rank 0
and loaded on a rerun, so a resumed job does not redo it, nor redo it differently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from . import distributed as dist
from .errors import UserInputError

__all__ = ["safe_torch_load", "run_once"]

T = TypeVar("T")


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU; a torn or foreign file is a one-line user error.

    Args:
        path: the file.
        what: how to call it in the message.

    Returns:
        The loaded object (tensors and plain Python values only).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"{what} not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - a torn, truncated or pickled-object file
        first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]  # torch's first sentence
        raise UserInputError(f"{path}: corrupt {what} ({first}); delete it to start over") from None


def run_once(
    path: str | Path, compute: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]
) -> T:
    """The result of a deterministic stage, computed at most once per output directory.

    When ``path`` exists it is loaded; otherwise every rank runs ``compute()`` (so all ranks hold
    the same result), rank 0 writes it with ``save(result, path)`` (which must write atomically,
    e.g. through :func:`datafree.utils.atomic_write`) and the ranks meet at a barrier.

    Args:
        path: where the stage's result lives.
        compute: produces the result.
        save: writes it (atomically).
        load: reads it back.

    Returns:
        The stage's result.
    """
    path = Path(path)
    if path.exists():
        return load(path)
    result = compute()
    if dist.is_main():
        save(result, path)
    dist.barrier()
    return result
