"""Labelled image datasets from disk: an ImageFolder tree or an ``.npz`` with images and labels."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from .digits import resize_images

__all__ = ["load_labelled"]

_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _from_array(images: np.ndarray) -> torch.Tensor:
    if images.dtype.kind not in "uif":
        raise UserInputError(f"images must be numbers (uint8 0-255 or float 0-1), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4:
        raise UserInputError(f"images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    if images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0 or min(images.shape[1:3]) < 1:
        raise UserInputError(f"images must be (N,H,W) or (N,H,W,C) with N > 0 and C in 1, 3, 4, got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    else:
        x = images.astype(np.float32)
        if not np.isfinite(x).all():
            raise UserInputError("images hold NaN or inf")
        if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise UserInputError("float images must lie in [0, 1] (uint8 images in 0-255)")
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # (N, C, H, W)


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z or "labels" not in z:
                raise UserInputError(f"{path}: an .npz dataset needs arrays 'images' and 'labels'")
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserInputError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserInputError(f"{path}: labels must be a 1-d array of integers, got {labels.dtype} of shape {labels.shape}")
    if images.ndim < 1 or len(images) != len(labels):
        raise UserInputError(f"{path}: {len(images) if images.ndim else 0} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 2**31):
        raise UserInputError(f"{path}: labels must be class indices >= 0, got [{labels.min()}, {labels.max()}]")
    try:
        x = _from_array(images)
    except UserInputError as e:
        raise UserInputError(f"{path}: {e}") from None
    return x, torch.from_numpy(labels.astype(np.int64))


def _load_image_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise UserInputError(f"{path}: an ImageFolder directory needs one sub-directory per class")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() in _IMG_EXT:
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    raise UserInputError(f"{f}: not a readable image ({' '.join(str(e).split())[:80]})") from None
                xs.append(arr)
                ys.append(label)
    if not xs:
        raise UserInputError(f"{path}: no images found in its class folders")
    shapes = {a.shape for a in xs}
    if len(shapes) != 1:
        raise UserInputError(f"{path}: images have different sizes {sorted(shapes)[:3]}")
    return _from_array(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)


def load_labelled(path: str | Path, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``(images (N,C,H,W) in [0,1], labels (N,))`` from an ImageFolder dir or ``.npz``.

    Images are resized and channel-mapped to ``input_shape``.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"dataset not found: {path}")
    if path.is_dir():
        x, y = _load_image_folder(path)
    elif path.suffix == ".npz":
        x, y = _load_npz(path)
    else:
        raise UserInputError(f"{path}: expected an ImageFolder directory or an .npz file")
    return resize_images(x, tuple(input_shape)), y


def check_labels(labels: torch.Tensor, num_classes: int, where: str | Path) -> None:
    """Refuse labels outside ``[0, num_classes)`` (the model's classes)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserInputError(
            f"{where}: labels must be in [0, {num_classes}) for this model, got [{labels.min().item()}, {labels.max().item()}]"
        )
