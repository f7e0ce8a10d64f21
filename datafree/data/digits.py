"""scikit-learn's handwritten digits (1,797 real 8x8 images) with a fixed, documented split.

The split is stratified by class with seed 0: 60% train (1,077), 20% validation (360),
20% test (360). Teachers train on ``train`` (model selection on ``val``); every accuracy
datafree reports is on ``test``. Synthesis and distillation never read this module.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserInputError

__all__ = ["DIGITS_SPLIT", "digits_split", "resize_images"]

DIGITS_SPLIT = {"seed": 0, "train": 0.6, "val": 0.2, "test": 0.2}


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    y = load_digits().target
    rng = np.random.default_rng(DIGITS_SPLIT["seed"])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr = round(len(idx) * DIGITS_SPLIT["train"])
        n_va = round(len(idx) * DIGITS_SPLIT["val"])
        parts["train"].append(idx[:n_tr])
        parts["val"].append(idx[n_tr : n_tr + n_va])
        parts["test"].append(idx[n_tr + n_va :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def resize_images(x: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize pixels ``(N, C0, H0, W0)`` in [0, 1] to ``input_shape`` ``(C, H, W)``.

    Channels: 1 -> C repeats; C0 -> 1 averages; otherwise C0 must equal C.
    """
    c, h, w = input_shape
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1).contiguous()
        elif c == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise UserInputError(f"cannot map {x.shape[1]}-channel images to {c} channels")
    return x


def digits_split(
    split: str, input_shape: tuple[int, int, int] = (1, 8, 8)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] resized to ``input_shape``, and int64 labels, of one split.

    Args:
        split: ``train``, ``val``, ``test`` or ``all``.
        input_shape: ``(C, H, W)`` the model expects.

    Returns:
        ``(images (N, C, H, W) float32, labels (N,) int64)``.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "val", "test", "all"):
        raise UserInputError(f"unknown digits split {split!r}; use train, val, test or all")
    d = load_digits()
    idx = np.arange(len(d.target)) if split == "all" else _split_indices()[split]
    x = torch.from_numpy(d.images[idx].astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(d.target[idx].astype(np.int64))
    return resize_images(x, tuple(input_shape)), y
