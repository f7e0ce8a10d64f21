"""Synthetic datasets on disk: safetensors shards + ``manifest.json``, resumable and exportable.

Layout of a dataset directory::

    manifest.json              method, config, seed, teacher hash, input spec, counts, shard list
    shard-00000.safetensors    images (n, C, H, W) float32 pixels in [0, 1], labels (n,) int64,
    shard-00001.safetensors    teacher_logits (n, K) float32
    samples.png                a grid of the first images, to look at

Shard ``i`` holds images ``[i * shard_size, min((i + 1) * shard_size, num_images))`` and is made
from its own seed (:func:`shard_seed`), so a dataset is the same whether it was written in one
go, resumed after a kill, or split across ranks. Every file is written atomically.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserInputError
from .utils import atomic_write, atomic_write_json, ensure_dir, settings_entry, settings_match

__all__ = [
    "SyntheticDataset",
    "check_dataset_target",
    "shard_seed",
    "export_dataset",
    "save_image_grid",
    "MANIFEST",
    "FORMAT_VERSION",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"^shard-(\d{5})\.safetensors$")
# Manifest keys that must agree for a rerun to append to an existing dataset.
_IDENTITY_KEYS = ("method", "config", "seed", "teacher_sha256", "input_shape", "num_classes", "shard_size")


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index`` of a dataset with base ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@dataclass
class SyntheticDataset:
    """A dataset directory. Use :meth:`create` to start or resume one, :meth:`open` to read one."""

    root: Path
    manifest: dict[str, Any]

    # -- creation / opening -------------------------------------------------------------------
    @classmethod
    def create(
        cls, root: str | Path, *, config_defaults: dict[str, Any] | None = None, **manifest: Any
    ) -> SyntheticDataset:
        """Start a dataset in ``root``, or reopen it to resume when its identity matches.

        Args:
            root: directory; must be absent, empty, or a dataset with the same identity.
            **manifest: ``method``, ``config``, ``seed``, ``teacher_sha256``, ``teacher``,
                ``input_shape``, ``mean``, ``std``, ``num_classes``, ``num_images``, ``shard_size``.
            config_defaults: the backend's default settings: a dataset written before a setting existed
                resumes when this run has that setting at its default.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise UserInputError(f"output {root} exists and is not a directory")
        if (root / MANIFEST).is_file():
            ds = cls.open(root)
            config = manifest.get("config") or {}
            same_config = settings_match(ds.manifest.get("config"), config, config_defaults or {})
            diff = [
                k
                for k in _IDENTITY_KEYS
                if (not same_config if k == "config" else ds.manifest.get(k) != manifest.get(k))
            ]
            if diff:
                what = [
                    settings_entry(k, ds.manifest.get(k), config, config_defaults or {})
                    if k == "config"
                    else k
                    for k in diff
                ]
                raise UserInputError(
                    f"{root} already holds a different synthetic dataset (differs in: {'; '.join(what)}); "
                    "choose another --out or delete it"
                )
            if manifest["num_images"] < ds.manifest["images_written"]:
                raise UserInputError(
                    f"{root} already holds {ds.manifest['images_written']} images, more than the "
                    f"{manifest['num_images']} requested"
                )
            ds.manifest["num_images"] = manifest["num_images"]
            ds.manifest["num_shards"] = -(-manifest["num_images"] // manifest["shard_size"])
            return ds
        logs = (
            "metrics.jsonl",
            "metrics.png",
            "tensorboard",
        )  # a run's own logs (datafree.metrics) may come first
        if root.is_dir() and any(
            p for p in root.iterdir() if not p.name.startswith(".") and p.name not in logs
        ):
            raise UserInputError(
                f"output directory {root} is not empty and holds no dataset; choose another --out"
            )
        ensure_dir(root)
        m = {"format_version": FORMAT_VERSION, **manifest}
        m["num_shards"] = -(-m["num_images"] // m["shard_size"])
        m.update(images_written=0, shards=[])
        ds = cls(root, m)
        ds.write_manifest()
        return ds

    @classmethod
    def open(cls, root: str | Path) -> SyntheticDataset:
        """Open an existing dataset directory and validate its manifest."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise UserInputError(f"{root} is not a synthetic dataset (no {MANIFEST})")
        from .validate import read_json

        try:
            m = read_json(path, "manifest")
        except UserInputError as e:
            raise UserInputError(f"{path}: unreadable manifest ({e})") from None
        _validate_manifest(m, path)
        ds = cls(root, m)
        ds.refresh()
        return ds

    # -- shards -------------------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        """Path of shard ``index``."""
        return self.root / f"shard-{index:05d}.safetensors"

    def shard_count(self, index: int) -> int:
        """Number of images shard ``index`` must hold."""
        size, n = self.manifest["shard_size"], self.manifest["num_images"]
        return max(0, min(size, n - index * size))

    def existing_shards(self) -> dict[int, int]:
        """``{index: count}`` of the shards on disk (read from their headers)."""
        from safetensors import safe_open

        found = {}
        for p in sorted(self.root.iterdir()):
            m = _SHARD_RE.match(p.name)
            if m:
                try:
                    with safe_open(str(p), "pt") as f:
                        found[int(m.group(1))] = f.get_slice("labels").get_shape()[0]
                except Exception as e:  # noqa: BLE001 - any header error means a corrupt shard
                    raise UserInputError(f"{p}: corrupt shard ({e}); delete it to regenerate") from None
        for i, count in found.items():
            if count != self.shard_count(i):
                raise UserInputError(
                    f"{self.shard_path(i)}: holds {count} images but the manifest expects "
                    f"{self.shard_count(i)} "
                    "for this shard; the dataset does not match its manifest"
                )
        return found

    def missing_shards(self) -> list[int]:
        """Indices of the shards still to be written."""
        have = self.existing_shards()
        return [i for i in range(self.manifest["num_shards"]) if i not in have]

    def write_shard(
        self, index: int, images: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor
    ) -> None:
        """Atomically write shard ``index``; ``images`` are pixels in [0, 1]."""
        from safetensors.torch import save

        expected = self.shard_count(index)
        if len(images) != expected or len(labels) != expected:
            raise ValueError(f"shard {index} must hold {expected} images, got {len(images)}")
        tensors = {
            "images": images.detach().float().cpu().contiguous(),
            "labels": labels.detach().long().cpu().contiguous(),
            "teacher_logits": teacher_logits.detach().float().cpu().contiguous(),
        }
        with atomic_write(self.shard_path(index)) as f:
            f.write(save(tensors, metadata={"index": str(index)}))

    def refresh(self) -> None:
        """Recount the shards on disk into the manifest (in memory)."""
        have = self.existing_shards()
        self.manifest["shards"] = [
            {"file": self.shard_path(i).name, "count": c} for i, c in sorted(have.items())
        ]
        self.manifest["images_written"] = sum(have.values())

    def write_manifest(self) -> None:
        """Recount shards and write ``manifest.json`` atomically."""
        self.refresh()
        atomic_write_json(self.root / MANIFEST, self.manifest)

    @property
    def complete(self) -> bool:
        """Whether every shard is on disk."""
        return self.manifest["images_written"] >= self.manifest["num_images"] and not self.missing_shards()

    # -- reading ------------------------------------------------------------------------------
    def iter_shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """Yield each shard's tensors in index order."""
        from safetensors.torch import load_file

        for entry in self.manifest["shards"]:
            path = self.root / entry["file"]
            try:
                tensors = load_file(str(path))
            except Exception as e:  # noqa: BLE001
                raise UserInputError(f"{path}: corrupt shard ({e})") from None
            _validate_shard(tensors, entry["count"], self.manifest, path)
            yield tensors

    def check_complete(self) -> None:
        """Refuse a dataset that is not finished.

        Unfinished: a listed shard missing (what a kill leaves), or fewer images on disk than the
        manifest counts.
        """
        have = self.existing_shards()
        missing = [i for i in range(self.manifest["num_shards"]) if i not in have]
        written = sum(have.values())
        if missing or written != self.manifest["num_images"]:
            shown = ", ".join(self.shard_path(i).name for i in missing[:3]) + (
                " ..." if len(missing) > 3 else ""
            )
            raise UserInputError(
                f"dataset {self.root} is incomplete: {written} of {self.manifest['num_images']} images on "
                "disk"
                + (f" (missing {shown})" if missing else "")
                + "; rerun the synthesize command that made it to finish it"
            )

    def load(self) -> dict[str, torch.Tensor]:
        """All shards concatenated: ``images`` (pixels), ``labels``, ``teacher_logits``.

        The dataset must be complete (:meth:`check_complete`) and every shard valid.
        """
        self.check_complete()
        parts = list(self.iter_shards())
        if not parts:
            raise UserInputError(f"{self.root}: the dataset holds no images yet")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def check_compatible(self, card: Any, allow_other_teacher: bool = False) -> None:
        """Refuse a dataset made for another model than ``card``.

        That is: another input spec (shape, classes) than ``card``'s, or (unless
        ``allow_other_teacher``) synthesised from another teacher than ``card``'s weights.
        """
        m = self.manifest
        if list(m["input_shape"]) != list(card.input_shape) or m["num_classes"] != card.num_classes:
            raise UserInputError(
                f"dataset {self.root} was made for input {m['input_shape']} with {m['num_classes']} classes, "
                f"but the teacher takes {card.input_shape} with {card.num_classes} classes"
            )
        sha = m.get("teacher_sha256")
        if sha and card.sha256 and sha != card.sha256 and not allow_other_teacher:
            raise UserInputError(
                f"dataset {self.root} was synthesised from another teacher (sha256 {sha[:12]}…, "
                f"this one {card.sha256[:12]}…); pass the --teacher it was made from"
            )


def check_dataset_target(root: str | Path, method: str | None = None) -> None:
    """Refuse, before any work, an output that cannot take a new dataset.

    That is: a file, the filesystem root, a non-empty directory that is not a dataset, or a dataset
    of another ``method``.

    The complete identity check happens in :meth:`SyntheticDataset.create`; this one runs before a
    long stage (training a generator) so that its outputs are not written in vain.
    """
    from .validate import check_out_path

    root = check_out_path(root)
    if root.exists() and not root.is_dir():
        raise UserInputError(f"output {root} exists and is not a directory")
    if (root / MANIFEST).is_file():
        ds = SyntheticDataset.open(root)
        if method is not None and ds.manifest.get("method") != method:
            raise UserInputError(
                f"{root} already holds a different synthetic dataset (differs in: method); choose another "
                "--out or delete it"
            )
    elif root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise UserInputError(
            f"output directory {root} is not empty and holds no dataset; choose another --out"
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_manifest(m: Any, path: Path) -> None:
    """Refuse a manifest with missing or wrongly typed fields (datasets may come from others)."""
    need = (
        "format_version",
        "method",
        "input_shape",
        "mean",
        "std",
        "num_classes",
        "num_images",
        "shard_size",
    )
    if not isinstance(m, dict) or any(k not in m for k in need):
        raise UserInputError(f"{path}: manifest lacks one of {', '.join(need)}")
    if m["format_version"] != FORMAT_VERSION:
        raise UserInputError(f"{path}: format_version {m['format_version']!r} is not supported")
    shape = m["input_shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
        raise UserInputError(f"{path}: input_shape must be [C, H, W] of positive ints, got {shape!r}")
    from .validate import MAX_CHANNELS, MAX_CLASSES, MAX_INPUT_VALUES, MAX_INT, MAX_SIDE

    for key in ("num_classes", "num_images", "shard_size"):
        if not _is_int(m[key]) or m[key] <= 0:
            raise UserInputError(f"{path}: {key} must be a positive int, got {m[key]!r}")
        if m[key] > (MAX_CLASSES if key == "num_classes" else MAX_INT):
            raise UserInputError(f"{path}: {key} {str(m[key])[:20]} is too large")
    if (
        shape[0] > MAX_CHANNELS
        or max(shape[1:]) > MAX_SIDE
        or shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES
    ):
        raise UserInputError(f"{path}: input_shape {shape} is too large")
    expected_shards = -(-m["num_images"] // m["shard_size"])
    if "num_shards" in m and m["num_shards"] != expected_shards:
        raise UserInputError(
            f"{path}: num_shards {m['num_shards']!r} disagrees with num_images / shard_size "
            f"({expected_shards})"
        )
    for key, typ in (
        ("seed", int),
        ("config", dict),
        ("teacher_sha256", str),
        ("teacher", str),
        ("shards", list),
    ):
        if m.get(key) is not None and (not isinstance(m[key], typ) or isinstance(m[key], bool)):
            raise UserInputError(f"{path}: {key} must be {typ.__name__}, got {str(m[key])[:40]!r}")
    for key in ("mean", "std"):
        vals = m[key]
        if (
            not isinstance(vals, list)
            or len(vals) != shape[0]
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vals
            )
        ):
            raise UserInputError(f"{path}: {key} must be {shape[0]} finite numbers, got {vals!r}")
    if not isinstance(m["method"], str):
        raise UserInputError(f"{path}: method must be a string, got {m['method']!r}")


def _validate_shard(t: dict[str, torch.Tensor], count: int, m: dict[str, Any], path: Path) -> None:
    """Shapes, dtypes, ranges and finiteness of one shard against its manifest."""
    want = {
        "images": ((count, *m["input_shape"]), torch.float32),
        "labels": ((count,), torch.int64),
        "teacher_logits": ((count, m["num_classes"]), torch.float32),
    }
    for key, (shape, dtype) in want.items():
        if key not in t:
            raise UserInputError(f"{path}: shard lacks the tensor {key!r}")
        if tuple(t[key].shape) != shape or t[key].dtype != dtype:
            raise UserInputError(
                f"{path}: {key} is {tuple(t[key].shape)} {t[key].dtype}, the manifest implies {shape} {dtype}"
            )
    images, labels = t["images"], t["labels"]
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise UserInputError(f"{path}: images must be finite pixels in [0, 1]")
    if not torch.isfinite(t["teacher_logits"]).all():
        raise UserInputError(f"{path}: teacher_logits hold NaN or inf")
    if len(labels) and (labels.min() < 0 or labels.max() >= m["num_classes"]):
        raise UserInputError(
            f"{path}: labels must be in [0, {m['num_classes']}), got [{labels.min().item()}, "
            f"{labels.max().item()}]"
        )


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 16, upscale: int = 2) -> None:
    """Write pixels ``(N, C, H, W)`` in [0, 1] as one PNG grid, atomically."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    x = images.detach().float().cpu().clamp(0, 1)
    if upscale > 1:
        x = F.interpolate(x, scale_factor=upscale, mode="nearest")
    buf = io.BytesIO()
    save_image(x, buf, nrow=nrow, padding=2, pad_value=1.0, format="png")
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def export_dataset(root: str | Path, fmt: str, out: str | Path, normalized: bool = False) -> Path:
    """Export a synthetic dataset for other tools.

    Args:
        root: the dataset directory.
        fmt: ``imagefolder`` (``out/<label>/<index>.png``), ``npz`` (``images`` uint8 NHWC and
            ``labels``; with ``normalized``, ``images`` float32 NCHW normalised as the teacher's
            card says) or ``npy`` (float32 NCHW normalised images only, the array calibration
            readers of ONNX Runtime / TensorRT / OpenVINO take).
        out: the file or directory to write (``.npz``/``.npy`` added when missing).
        normalized: ``npz`` only: float32 NCHW normalised images instead of uint8 pixels.

    Every ``.npz`` also records ``input_shape`` ``[C, H, W]``, ``mean``, ``std`` and ``normalized``.

    Returns:
        The path written.
    """
    from PIL import Image

    if normalized and fmt != "npz":
        raise UserInputError(f"--normalized applies to --format npz (npy is always normalised), not {fmt}")
    from .validate import check_out_path

    out = check_out_path(out)
    ds = SyntheticDataset.open(root)
    data = ds.load()
    m = ds.manifest
    spec = {
        "input_shape": np.asarray(m["input_shape"], dtype=np.int64),
        "mean": np.asarray(m["mean"], dtype=np.float32),
        "std": np.asarray(m["std"], dtype=np.float32),
    }
    images01 = data["images"].clamp(0, 1).float()
    pixels = (images01 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # NHWC
    labels = data["labels"].numpy()
    out = Path(out)
    if fmt in ("npz", "npy"):
        if out.suffix != f".{fmt}":
            out = out.with_suffix(f".{fmt}")
        if out.is_dir():
            raise UserInputError(f"export --out {out} is a directory; give a file name ending in .{fmt}")
        norm = None
        if fmt == "npy" or normalized:
            mean, std = torch.tensor(m["mean"]).view(1, -1, 1, 1), torch.tensor(m["std"]).view(1, -1, 1, 1)
            norm = ((images01 - mean) / std).numpy().astype(np.float32)  # NCHW
        buf = io.BytesIO()
        if fmt == "npy":
            np.save(buf, norm)
        else:
            images = norm if norm is not None else (pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            np.savez_compressed(
                buf, images=images, labels=labels, normalized=np.asarray(norm is not None), **spec
            )
        with atomic_write(out) as f:
            f.write(buf.getvalue())
        return out
    if fmt != "imagefolder":
        raise UserInputError(f"unknown export format {fmt!r}; use imagefolder, npz or npy")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"export --out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"export directory {out} is not empty")
    ensure_dir(out)
    width = len(str(ds.manifest["num_classes"] - 1))
    for i, (img, lab) in enumerate(zip(pixels, labels, strict=True)):
        d = out / f"{int(lab):0{width}d}"
        d.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        im.save(buf, format="png")
        with atomic_write(d / f"{i:06d}.png") as f:
            f.write(buf.getvalue())
    return out
