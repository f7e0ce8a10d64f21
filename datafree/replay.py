"""A replay memory of generated images for the online backends' student batches.

Adversarial and generator-based data-free KD trains the student on a distribution that moves with
the generator, and the student forgets what earlier generators showed it (Binici et al., "Preventing
Catastrophic Forgetting and Distribution Mismatch in Knowledge Distillation via Synthetic Data",
WACV 2022). Their remedy, used here: keep a memory of earlier generated images and rehearse a share
of each student batch from it. The memory is a reservoir sample (Vitter's algorithm R), so at any
time it is a uniform sample of every image the generator has made for the student so far.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["ReplayMemory", "auto_replay_size", "REPLAY_MAX_IMAGES", "REPLAY_MAX_BYTES"]

# The automatic memory size: this many images, fewer where they would take more than REPLAY_MAX_BYTES
# (float32): 4,096 at 3x32x32 (48 MiB), 445 at 3x224x224. The memory is in every epoch's checkpoint too.
REPLAY_MAX_IMAGES = 4096
REPLAY_MAX_BYTES = 256 * 2**20


def auto_replay_size(input_shape: tuple[int, ...] | list[int]) -> int:
    """Images the replay memory keeps when ``replay_size`` is 0: ``min(4096, 256 MiB / image bytes)``."""
    per_image = 4 * math.prod(int(d) for d in input_shape)
    return max(1, min(REPLAY_MAX_IMAGES, REPLAY_MAX_BYTES // per_image))


class ReplayMemory:
    """A fixed-capacity reservoir of images, with draws and updates from a given ``torch.Generator``.

    Args:
        capacity: the most images kept.
        rng: the random stream for the reservoir's choices and the draws (a resumed run that restores
            it and :meth:`state_dict` draws the same batches).
    """

    def __init__(self, capacity: int, rng: torch.Generator) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.rng = rng
        self.images: torch.Tensor | None = None  # (capacity, C, H, W) once the first batch arrives
        self.seen = 0  # images offered so far

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, images: torch.Tensor) -> None:
        """Offer a batch ``(B, C, H, W)``: each image is kept with probability ``capacity / seen``."""
        b = len(images)
        if b == 0:
            return
        if self.images is None:
            self.images = images.new_empty((self.capacity, *images.shape[1:]))
        images = images.detach()
        index = torch.arange(self.seen, self.seen + b)
        slots = index.clone()
        full = index >= self.capacity
        if bool(full.any()):  # algorithm R: slot uniform in [0, index], kept when it falls in the memory
            u = torch.rand(int(full.sum()), generator=self.rng, dtype=torch.float64)
            slots[full] = (u * (index[full] + 1).double()).long()
        keep = slots < self.capacity
        self.images[slots[keep].to(self.images.device)] = images[keep.to(images.device)]
        self.seen += b

    def draw(self, n: int) -> torch.Tensor:
        """``n`` images drawn uniformly (with replacement) from the memory; it must hold some."""
        if len(self) == 0 or self.images is None:
            raise RuntimeError("the replay memory is empty")
        idx = torch.randint(len(self), (n,), generator=self.rng)
        return self.images[idx.to(self.images.device)]

    def state_dict(self) -> dict[str, Any]:
        """The kept images (on the CPU) and the count offered (the rng is the owner's to save)."""
        kept = None if self.images is None else self.images[: len(self)].detach().cpu()
        return {"images": kept, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`."""
        self.seen = int(state["seen"])
        kept = state.get("images")
        if kept is None:
            self.images = None
            return
        self.images = torch.empty((self.capacity, *kept.shape[1:]), dtype=kept.dtype, device=device)
        self.images[: len(kept)] = kept.to(device)
