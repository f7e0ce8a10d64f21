"""Supervised training on real labelled pixels: used only to make the shipped teachers."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .augment import kd_augmentation
from .evaluate import accuracy
from .normalize import Normalizer
from .progress import progress

__all__ = ["train_supervised"]


def train_supervised(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    normalizer: Normalizer,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """Train with Adam + cosine and crop augmentation; return the best-on-validation model."""
    torch.manual_seed(seed)
    x, y = train
    aug = kd_augmentation(list(x.shape[1:]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    best, best_acc = copy.deepcopy(model.state_dict()), -1.0
    for _ in progress(range(epochs), desc="train teacher"):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(aug(normalizer(x[idx]))), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, *val, normalizer)
        if acc >= best_acc:
            best, best_acc = copy.deepcopy(model.state_dict()), acc
    model.load_state_dict(best)
    return model.eval(), best_acc
