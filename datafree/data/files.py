"""Labelled image datasets from disk, loaded whole: an ImageFolder tree or an ``.npz`` with images and labels.

For evaluation, :func:`datafree.data.evalsets.open_eval_data` streams the same forms (and CIFAR,
ImageNet) in batches instead.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from .digits import resize_images

__all__ = ["load_labelled", "load_normalized_npz", "normalized_npz_pixels"]

_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _from_array(images: np.ndarray) -> torch.Tensor:
    if images.dtype.kind not in "uif":
        raise UserInputError(f"images must be numbers (uint8 0-255 or float 0-1), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    if images.ndim != 4:
        raise UserInputError(f"images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    if images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0 or min(images.shape[1:3]) < 1:
        raise UserInputError(
            f"images must be (N,H,W) or (N,H,W,C) with N > 0 and C in 1, 3, 4, got shape {images.shape}"
        )
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    else:
        x = images.astype(np.float32)
        if not np.isfinite(x).all():
            raise UserInputError("images hold NaN or inf")
        if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise UserInputError("float images must lie in [0, 1] (uint8 images in 0-255)")
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # (N, C, H, W)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), or a one-line :class:`UserInputError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserInputError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _normalized_spec(z: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)`` of an ``.npz`` of normalised float32 NCHW images (``datafree export --normalized``)."""
    if "normalized" not in z or not bool(z["normalized"]):
        return None
    if "mean" not in z or "std" not in z or z["images"].ndim != 4:
        raise UserInputError(f"{path}: a normalised .npz needs NCHW 'images', 'mean' and 'std'")
    return z["mean"].astype(np.float32).reshape(-1), z["std"].astype(np.float32).reshape(-1)


def normalized_npz_pixels(z: dict[str, np.ndarray], path: Path) -> np.ndarray | None:
    """The pixels (float32 NHWC in [0, 1]) of a normalised ``.npz`` export; ``None`` for a pixel ``.npz``."""
    spec = _normalized_spec(z, path)
    if spec is None:
        return None
    mean, std = (v.reshape(1, -1, 1, 1) for v in spec)
    return np.clip(z["images"].astype(np.float32) * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    z = read_npz(path)
    if "images" not in z or "labels" not in z:
        raise UserInputError(f"{path}: an .npz dataset needs arrays 'images' and 'labels'")
    images, labels = z["images"], z["labels"]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UserInputError(
            f"{path}: labels must be a 1-d array of integers, got {labels.dtype} of shape {labels.shape}"
        )
    if images.ndim < 1 or len(images) != len(labels):
        raise UserInputError(f"{path}: {len(images) if images.ndim else 0} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 2**31):
        raise UserInputError(
            f"{path}: labels must be class indices >= 0, got [{labels.min()}, {labels.max()}]"
        )
    spec = _normalized_spec(z, path)
    if spec is not None:  # back to pixels in [0, 1]
        mean, std = (torch.from_numpy(v).view(1, -1, 1, 1) for v in spec)
        x = (torch.from_numpy(images.astype(np.float32)) * std + mean).clamp(0, 1)
        return x, torch.from_numpy(labels.astype(np.int64))
    try:
        x = _from_array(images)
    except UserInputError as e:
        raise UserInputError(f"{path}: {e}") from None
    return x, torch.from_numpy(labels.astype(np.int64))


def load_normalized_npz(path: str | Path, card: Any) -> torch.Tensor | None:
    """The images of a normalised ``.npz`` export, checked against ``card``; ``None`` for a pixel ``.npz``.

    Raises:
        UserInputError: the file was normalised for another input shape, mean or std.
    """
    path = Path(path)
    z = read_npz(path)
    if "images" not in z:
        raise UserInputError(f"{path}: an .npz needs an array 'images'")
    spec = _normalized_spec(z, path)
    if spec is None:
        return None
    shape = list(z["images"].shape[1:])
    if shape != list(card.input_shape) or not (
        np.allclose(spec[0], card.mean, atol=1e-6) and np.allclose(spec[1], card.std, atol=1e-6)
    ):
        raise UserInputError(
            f"{path}: normalised for input {shape}, mean {spec[0].tolist()}, std {spec[1].tolist()}; the "
            "model needs "
            f"{list(card.input_shape)}, mean {card.mean}, std {card.std} (export it again, or as pixels)"
        )
    return torch.from_numpy(z["images"].astype(np.float32))


def _load_image_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

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
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    raise UserInputError(
                        f"{f}: not a readable image ({' '.join(str(e).split())[:80]})"
                    ) from None
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


def folder_class_index(
    names: list[str], num_classes: int, classes: list[str] | None, where: str
) -> dict[str, int]:
    """Class index of each class folder (see the module docstring for the rules).

    Args:
        names: the class folder names.
        num_classes: the model's number of classes.
        classes: the card's class names, when it has them.
        where: the dataset, for error messages.

    Returns:
        ``{folder name: class index}``.
    """
    if classes:
        lookup = {str(c): i for i, c in enumerate(classes)}
        unknown = [n for n in names if n not in lookup]
        if not unknown:
            return {n: lookup[n] for n in names}
        if not all(n.isdigit() for n in names):
            raise UserInputError(
                f"{where}: class folder(s) {', '.join(sorted(unknown)[:3])} are not among the card's classes "
                f"({', '.join(map(str, classes[:3]))}, ...); name folders by class name or class index"
            )
    if all(n.isdigit() for n in names):
        index = {n: int(n) for n in names}
        bad = sorted((n for n, i in index.items() if i >= num_classes), key=int)
        if bad:
            raise UserInputError(
                f"{where}: class folder {bad[0]} is not a class of a {num_classes}-class model"
            )
        return index
    if len(names) == num_classes:
        return {n: i for i, n in enumerate(sorted(names))}
    raise UserInputError(
        f"{where}: {len(names)} class folders for a {num_classes}-class model and no way to tell which "
        "class each "
        "is; name folders 0..K-1 or add a 'classes' list to the card"
    )


# --- ImageFolder (streamed) ---------------------------------------------------------------------------


def check_labels(labels: torch.Tensor, num_classes: int, where: str | Path) -> None:
    """Refuse labels outside ``[0, num_classes)`` (the model's classes)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserInputError(
            f"{where}: labels must be in [0, {num_classes}) for this model, got [{labels.min().item()}, "
            f"{labels.max().item()}]"
        )
