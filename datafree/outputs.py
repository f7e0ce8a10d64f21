"""The output directory of a job: created, or accepted when empty or already ours (a rerun resumes)."""

from __future__ import annotations

from pathlib import Path

from .distill import CHECKPOINT
from .errors import UserInputError
from .utils import ensure_dir

__all__ = ["prepare_out_dir"]

# Files datafree writes into an --out directory; a directory holding anything else is refused.
_OWN = {
    "model.json",
    "model.safetensors",
    "report.json",
    CHECKPOINT,
    "data",
    "baseline",
    "kd",
    "generator.safetensors",
    "prune",
    "quantize",
    "int8",
    "generator.json",
    "online.json",
    "finetune.json",
    "config.yaml",
    "metrics.jsonl",
    "metrics.png",
    "tensorboard",
}


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` or accept it when empty or already ours (resume); refuse anything else."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserInputError(f"--out {p} exists and is not a directory")
    if p.is_dir():
        foreign = [c.name for c in p.iterdir() if c.name not in _OWN and not c.name.startswith(".")]
        if foreign:
            raise UserInputError(
                f"--out {p} already holds other files ({', '.join(sorted(foreign)[:3])}); choose an empty or "
                "new directory"
            )
    try:
        ensure_dir(p, quiet=True)  # the user named it; what is created inside it is announced
        probe = p / ".datafree-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserInputError(f"cannot write to --out {p}: {e.strerror or e}") from None
    return p
