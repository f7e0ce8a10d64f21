"""torch.distributed for every stage: init from torchrun's environment, rank-aware helpers, DDP wrap.

One process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) needs nothing from here: every helper then
degrades to the single-process behaviour (rank 0 of 1, barriers are no-ops). Under ``torchrun``::

    torchrun --standalone --nproc_per_node=2 cli.py synthesize ...

:func:`init_distributed` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, picks NCCL when the
process has a CUDA device and gloo on CPU, and pins ``cuda:LOCAL_RANK``. Tests start ranks with
``torch.multiprocessing.spawn`` and ``DATAFREE_INIT_METHOD=file:///tmp/...`` (no TCP port needed).

Rules every stage follows: only the main rank writes shared files (manifests, checkpoints, cards);
work is split by rank (shard ``i`` on rank ``i % world``, a disjoint slice of each global batch);
an error that only the main rank can detect is re-raised on every rank (:func:`run_on_main`) so no
rank is left waiting in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import DatafreeError, UserInputError
from .utils import device_of

__all__ = [
    "DistContext",
    "init_distributed",
    "context",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main",
    "barrier",
    "rank_seed",
    "wrap_ddp",
    "unwrap",
    "all_reduce_mean",
    "all_gather_objects",
    "run_on_main",
    "local_slice",
    "cleanup",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes shared files)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserInputError(f"environment variable {name}={raw!r} must be an integer") from None


def init_distributed(device: torch.device | str | None = None, init_method: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables (once per process).

    Args:
        device: the device asked for (``None``/``cuda``: ``cuda:LOCAL_RANK`` when CUDA is usable,
            else CPU). With several ranks a plain ``cuda`` becomes ``cuda:LOCAL_RANK``.
        init_method: rendezvous URL; default ``$DATAFREE_INIT_METHOD`` or ``env://`` (torchrun's
            ``MASTER_ADDR``/``MASTER_PORT``).

    Returns:
        The :class:`DistContext` (rank 0 of 1 when not launched by torchrun).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserInputError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        method = init_method or os.environ.get("DATAFREE_INIT_METHOD") or "env://"
        kw: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, init_method=method, rank=rank, world_size=world, **kw)
    return DistContext(rank, world, local, dev, dist.get_backend())


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def context() -> DistContext:
    """The current rank and world size (device: CPU; use :func:`init_distributed` for the device)."""
    return DistContext(get_rank(), get_world_size(), _env_int("LOCAL_RANK", get_rank()))


def is_main() -> bool:
    """Whether this is rank 0 (always true in one process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int, rank: int | None = None) -> int:
    """A per-rank seed for streams that must differ between ranks (augmentation, dropout).

    Streams that must *not* depend on the rank (a dataset shard's pixels, the data order) keep
    their rank-free seeds; rank 0 gets ``seed`` itself so one process reproduces rank 0.
    """
    r = get_rank() if rank is None else rank
    return int(seed) + 1_000_003 * r


def wrap_ddp(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` on its device when distributed, else ``model`` itself."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = device_of(model)
    ids = [dev] if dev.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model``)."""
    return getattr(model, "module", model)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (``value`` itself in one process). Not in place."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; a :class:`DatafreeError` it raises is raised on every rank.

    Returns ``fn()``'s result on rank 0 and ``None`` elsewhere. Other exceptions are re-raised on
    rank 0 and reported as an internal error on the others, so no rank hangs in a later collective.
    """
    if not is_distributed():
        return fn()
    result: T | None = None
    failure: tuple[type, str] | None = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except DatafreeError as e:
            failure, error = (type(e), str(e)), e
        except Exception as e:  # noqa: BLE001 - relayed so the other ranks stop too
            failure, error = (DatafreeError, f"rank 0 failed: {type(e).__name__}: {e}"), e
    box = [failure]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        if error is not None:
            raise error
        cls, msg = box[0]
        raise cls(msg)
    return result


def local_slice(n: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items split into ``world_size`` near-equal parts."""
    r = get_rank() if rank is None else rank
    w = get_world_size() if world_size is None else world_size
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def cleanup() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
