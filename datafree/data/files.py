"""Labelled image datasets from disk, loaded whole: an ImageFolder tree or an ``.npz`` with images and labels.

For evaluation, :func:`datafree.data.evalsets.open_eval_data` streams the same forms (and CIFAR,
ImageNet) in batches instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from .digits import resize_images

__all__ = ["load_labelled"]

_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _from_array(images: np.ndarray) -> torch.Tensor:
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4:
        raise UserInputError(f"images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    else:
        x = images.astype(np.float32)
        if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise UserInputError("float images must lie in [0, 1] (uint8 images in 0-255)")
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # (N, C, H, W)


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z or "labels" not in z:
                raise UserInputError(f"{path}: an .npz dataset needs arrays 'images' and 'labels'")
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable .npz file ({e})") from None
    if len(images) != len(labels):
        raise UserInputError(f"{path}: {len(images)} images but {len(labels)} labels")
    return _from_array(images), torch.from_numpy(labels.astype(np.int64))


def _load_image_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    from .evalsets import folder_class_index

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise UserInputError(f"{path}: an ImageFolder directory needs one sub-directory per class")
    # labels follow the folder names (folder "3" is class 3 even without folder "2"), as in evaluation
    k = max(int(c) for c in classes) + 1 if all(c.isdigit() for c in classes) else len(classes)
    index = folder_class_index(classes, k, None, str(path))
    xs, ys = [], []
    for cls in classes:
        label = index[cls]
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() in _IMG_EXT:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
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
