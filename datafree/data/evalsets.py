"""Labelled evaluation data, streamed in batches at a model card's input: the user's own data.

Forms of ``spec`` (:func:`open_eval_data`):

- ``digits`` or ``digits:SPLIT``: scikit-learn's digits (``test`` by default), upsampled to the card.
- ``DIR``: an ImageFolder tree ``DIR/<class>/<image>``; images are read one batch at a time by a
  ``DataLoader`` (``workers`` processes), converted to RGB or grayscale to match the card's
  channels and resized to the card's ``H x W``.
- ``imagenet:VALDIR``: ImageNet validation images in class folders (``VALDIR/n01440764/...``);
  resize of the shorter side then a centre crop to the card's input, as the card says
  (``resize_size``, or ``crop_pct``; default ``crop_pct`` 0.875, i.e. 256 -> 224), bilinear or the
  card's ``interpolation``.
- ``cifar10:ROOT`` / ``cifar100:ROOT``: torchvision's on-disk layout
  (``ROOT/cifar-10-batches-py/test_batch``, ``ROOT/cifar-100-python/test``); the test split, or
  ``cifar10:ROOT:train`` for the training batches. The files are pickles: they are read with an
  unpickler that only admits plain containers and numpy arrays, so a file cannot run code.
- ``FILE.npz``: arrays ``images`` (N,H,W[,C], uint8 0-255 or float in [0, 1]) and ``labels``.

Labels of a class-folder tree follow the folder *names* (torchvision's ``class_to_idx``, made
robust to missing classes): with a ``classes`` list in the card, a folder named like a class gets
that class's index; otherwise a folder named by an integer is that class (folder ``3`` is class 3
even when folder ``2`` is missing); otherwise, when there is one folder per class, the sorted order.
Anything else is refused rather than scored against the wrong labels.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from .digits import resize_images
from .files import folder_class_index, normalized_npz_pixels, read_npz

__all__ = ["EvalData", "check_eval_data", "open_eval_data", "folder_class_index", "IMG_EXTENSIONS"]

IMG_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py",
                {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]},
                "labels", 10),
    "cifar100": ("cifar-100-python", {"test": ["test"], "train": ["train"]}, "fine_labels", 100),
}  # fmt: skip


@dataclasses.dataclass
class EvalData:
    """A labelled dataset streamed as ``(pixels (B, C, H, W) float in [0, 1], labels (B,) int64)``.

    Attributes:
        name: what the data is, as reports print it (``digits:test``, ``cifar10:/data:test``, a path).
        num_samples: images in the set.
        batches: a callable returning a fresh iterator over the batches (one pass).
        num_classes: labels are in ``[0, num_classes)``.
    """

    name: str
    num_samples: int
    batches: Any
    num_classes: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches())


# --- label mapping ---------------------------------------------------------------------------------


class _FolderDataset(torch.utils.data.Dataset):
    """Decodes one image per item to ``uint8 (C, H, W)`` at the target size (for DataLoader workers)."""

    def __init__(
        self, items: list[tuple[str, int]], shape: tuple[int, int, int], crop: dict[str, Any] | None
    ) -> None:
        self.items, self.shape, self.crop = items, shape, crop
        self.raise_errors = True  # False in worker processes: an unreadable image comes back as label -1-i

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        c, h, w = self.shape
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB")
                im = _resize_crop(im, h, w, self.crop) if self.crop else im.resize((w, h), Image.BILINEAR)
                arr = np.array(im, dtype=np.uint8)  # a writable copy
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            if not self.raise_errors:  # a worker's exception would reach the user wrapped in a traceback
                return torch.zeros(self.shape, dtype=torch.uint8), -1 - i
            raise UserInputError(f"cannot read image {path}: {e}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), label


def _resize_crop(im: Any, h: int, w: int, crop: dict[str, Any]) -> Any:
    """Resize the shorter side to ``crop['resize']`` then take the centre ``h x w`` (torchvision's eval)."""
    from PIL import Image

    interp = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[
        crop["interpolation"]
    ]
    size = int(crop["resize"])
    iw, ih = im.size
    if iw <= ih:
        nw, nh = size, max(1, int(size * ih / iw))
    else:
        nw, nh = max(1, int(size * iw / ih)), size
    im = im.resize((nw, nh), interp)
    left, top = int(round((nw - w) / 2.0)), int(round((nh - h) / 2.0))
    return im.crop((left, top, left + w, top + h))  # PIL pads with black where the crop overhangs


def _crop_spec(card: Any) -> dict[str, Any]:
    """``{"resize", "interpolation"}`` of an ImageNet-style evaluation from the card's fields."""
    extra = getattr(card, "extra", {}) or {}
    h = int(card.input_shape[1])
    interp = str(extra.get("interpolation", "bilinear")).lower()
    if interp not in ("bilinear", "bicubic", "nearest"):
        raise UserInputError(f"card interpolation must be bilinear, bicubic or nearest, got {interp!r}")
    if extra.get("resize_size") is not None:
        resize = extra["resize_size"]
        resize = resize[0] if isinstance(resize, list) else resize
    else:
        pct = float(extra.get("crop_pct", 0.875))
        if not 0 < pct <= 1:
            raise UserInputError(f"card crop_pct must be in (0, 1], got {pct}")
        resize = int(h / pct)
    if not isinstance(resize, (int, float)) or resize < h:
        raise UserInputError(f"card resize_size must be a number >= the input height {h}, got {resize!r}")
    return {"resize": int(resize), "interpolation": interp}


def _image_folder(path: Path, card: Any, batch_size: int, workers: int, crop: bool, name: str) -> EvalData:
    if not path.is_dir():
        raise UserInputError(f"{path}: not a directory (an ImageFolder tree has one sub-directory per class)")
    folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserInputError(f"{path}: an ImageFolder directory needs one sub-directory per class")
    index = folder_class_index(folders, card.num_classes, _card_classes(card), str(path))
    items: list[tuple[str, int]] = []
    for folder in folders:
        for f in sorted((path / folder).iterdir()):
            if f.suffix.lower() in IMG_EXTENSIONS and f.is_file():
                items.append((str(f), index[folder]))
    if not items:
        raise UserInputError(f"{path}: no images ({', '.join(sorted(IMG_EXTENSIONS))}) in its class folders")
    c = int(card.input_shape[0])
    if c not in (1, 3):
        raise UserInputError(
            f"{path}: images convert to 1 (grayscale) or 3 (RGB) channels, but the card wants {c}"
        )
    shape = (c, int(card.input_shape[1]), int(card.input_shape[2]))
    ds = _FolderDataset(items, shape, _crop_spec(card) if crop else None)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds.raise_errors = workers == 0
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
        for x, y in loader:
            if (y < 0).any():  # a worker could not read an image: raise its error here, as one line
                ds.raise_errors = True
                ds[int(-1 - y[y < 0][0])]
            yield x.float().div_(255.0), y.long()

    return EvalData(name, len(items), batches, card.num_classes)


def _card_classes(card: Any) -> list[str] | None:
    classes = (getattr(card, "extra", {}) or {}).get("classes")
    if classes is None:
        return None
    if not isinstance(classes, list) or len(classes) != card.num_classes:
        raise UserInputError(f"card 'classes' must be a list of {card.num_classes} names")
    return [str(c) for c in classes]


# --- in-memory arrays (digits, CIFAR, .npz), converted one batch at a time ------------------------------


def _array_batches(images: np.ndarray, labels: np.ndarray, card: Any, batch_size: int, name: str) -> EvalData:
    """``images`` uint8 or float NHWC/NCHW-free (N,H,W[,C]); kept as they are, converted per batch."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise UserInputError(f"{name}: images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    if len(images) != len(labels):
        raise UserInputError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise UserInputError(f"{name}: holds no images (N > 0 needed)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserInputError(f"{name}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= card.num_classes):
        raise UserInputError(
            f"{name}: labels must lie in [0, {card.num_classes}), got {labels.min()}..{labels.max()}"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise UserInputError(
                f"{name}: images must be uint8 (0-255) or float in [0, 1], got {images.dtype}"
            )
        if not np.isfinite(images).all():
            raise UserInputError(f"{name}: images hold NaN or inf values")
        if images.size and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
            raise UserInputError(f"{name}: float images must lie in [0, 1] (uint8 images in 0-255)")
    if images.shape[-1] not in (1, 3) and images.shape[-1] != card.input_shape[0]:
        raise UserInputError(
            f"{name}: cannot map {images.shape[-1]}-channel images to {card.input_shape[0]} channels"
        )
    shape = tuple(int(v) for v in card.input_shape)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float()
            if chunk.dtype == np.uint8:
                x = x.div_(255.0)
            yield resize_images(x, shape), torch.from_numpy(labels[i : i + batch_size].astype(np.int64))

    return EvalData(name, len(labels), batches, card.num_classes)


class _SafeUnpickler(pickle.Unpickler):
    """Admits plain containers and numpy arrays only: a CIFAR batch file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_file(path: Path) -> dict[Any, Any]:
    if not path.is_file():
        raise UserInputError(f"CIFAR file not found: {path} (expected torchvision's on-disk layout)")
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UserInputError(f"{path}: not a CIFAR batch file ({e})") from None
    if not isinstance(obj, dict):
        raise UserInputError(f"{path}: not a CIFAR batch file (a dict was expected)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar(kind: str, rest: str, card: Any, batch_size: int) -> EvalData:
    root_s, _, split = rest.rpartition(":") if rest.endswith((":test", ":train")) else (rest, "", "test")
    split = split or "test"
    if not root_s:
        raise UserInputError(
            f"{kind}:ROOT needs the directory that holds torchvision's files, got {kind}:{rest}"
        )
    folder, files, label_key, k = _CIFAR[kind]
    root = Path(root_s)
    base = root / folder if (root / folder).is_dir() else root
    if card.num_classes != k:
        raise UserInputError(f"{kind} has {k} classes but the model has {card.num_classes}")
    xs, ys = [], []
    for f in files[split]:
        d = _read_cifar_file(base / f)
        if "data" not in d or label_key not in d:
            raise UserInputError(f"{base / f}: a CIFAR batch needs 'data' and '{label_key}'")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise UserInputError(f"{base / f}: CIFAR data must be (N, 3072) uint8, got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    return _array_batches(np.concatenate(xs), np.concatenate(ys), card, batch_size, f"{kind}:{root}:{split}")


def _npz(path: Path, card: Any, batch_size: int) -> EvalData:
    z = read_npz(path)
    if "images" not in z or "labels" not in z:
        raise UserInputError(f"{path}: an .npz dataset needs arrays 'images' and 'labels'")
    images, labels = z["images"], z["labels"]
    pixels = normalized_npz_pixels(z, path)  # datafree export --normalized
    return _array_batches(images if pixels is None else pixels, labels, card, batch_size, str(path))


def _digits(split: str, card: Any, batch_size: int) -> EvalData:
    from .digits import digits_split

    if card.num_classes != 10:
        raise UserInputError(f"digits has 10 classes but the model has {card.num_classes}")
    x, y = digits_split(split or "test", tuple(int(v) for v in card.input_shape))  # type: ignore[arg-type]

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(y), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    return EvalData(f"digits:{split or 'test'}", len(y), batches, 10)


def check_eval_data(spec: str | Path | None, card: Any) -> None:
    """Open ``spec`` (when given) so that a bad ``--eval-data`` fails before a job writes anything.

    Args:
        spec: see :func:`open_eval_data`; None checks nothing (the card's default data is used).
        card: the model's card.
    """
    if spec is not None:
        open_eval_data(spec, card)


def open_eval_data(spec: str | Path, card: Any, *, batch_size: int = 256, workers: int = 0) -> EvalData:
    """Open labelled evaluation data for a model with this card (nothing is decoded yet).

    Args:
        spec: ``digits[:SPLIT]``, an ImageFolder directory, ``imagenet:VALDIR``, ``cifar10:ROOT[:SPLIT]``,
            ``cifar100:ROOT[:SPLIT]`` or a ``.npz`` file (see the module docstring).
        card: the model's card (input shape, number of classes, optional ``classes``).
        batch_size: images per batch.
        workers: DataLoader worker processes for image folders (0: in this process).

    Returns:
        The :class:`EvalData`; iterate it for ``(pixels, labels)`` batches at the card's input.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise UserInputError(f"--batch-size must be > 0, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserInputError(f"--workers must be >= 0, got {workers!r}")
    s = str(spec)
    kind, sep, rest = s.partition(":")
    if sep and kind in ("digits", "imagenet", "cifar10", "cifar100") and not Path(s).exists():
        if kind == "digits":
            return _digits(rest, card, batch_size)
        if kind == "imagenet":
            if not rest:
                raise UserInputError("imagenet:VALDIR needs the validation directory (one folder per class)")
            return _image_folder(Path(rest), card, batch_size, workers, True, f"imagenet:{rest}")
        return _cifar(kind, rest, card, batch_size)
    if s == "digits" and not Path(s).exists():
        return _digits("test", card, batch_size)
    path = Path(s)
    if not path.exists():
        raise UserInputError(
            f"evaluation data not found: {s} (give an ImageFolder dir, a .npz, digits, imagenet:DIR, "
            "cifar10:ROOT or "
            "cifar100:ROOT)"
        )
    if path.is_dir():
        return _image_folder(path, card, batch_size, workers, False, str(path))
    if path.suffix == ".npz":
        return _npz(path, card, batch_size)
    raise UserInputError(f"{path}: expected an ImageFolder directory or an .npz file")
