"""``metrics.jsonl`` (and optionally TensorBoard) for every run: one JSON object per logged step.

The command line opens a sink for the run's ``--out`` directory (:func:`open_run`); the training
loops call :func:`log_step` every step with *tensors* (no host synchronisation); only every
``every``-th step (and the last) is turned into numbers and written::

    {"stage": "distill", "step": 40, "total_steps": 1200, "loss": 0.41, "lr": 0.0499, "images_per_s": 812.3,
     "time": 12.5}

``stage`` names the loop (``synthesize``, ``distill``, ``noise baseline``, ...), ``step`` counts
from 1 within it, every loss term is a key of its own (``ce``, ``bn``, ``tv_l2``, ... for
DeepInversion), ``lr`` is the learning rate, ``images_per_s`` the images through the loop per
second since its previous logged step. Stage-end records (``"event": "end"``) carry accuracy
where the loop evaluates (the KD epochs' ``accuracy``). Without an open sink nothing is done.

``--tensorboard`` writes the same scalars (``stage/term``) and the synthetic samples grid to
``OUT/tensorboard/`` (extra ``datafree[tensorboard]``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from .errors import UserInputError

__all__ = [
    "MetricsSink",
    "open_run",
    "close_run",
    "current",
    "log_step",
    "log_event",
    "log_image",
    "METRICS_FILE",
]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _number(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach()
        v = v.item() if v.numel() == 1 else v.float().mean().item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    return v


class MetricsSink:
    """Appends records to ``root/metrics.jsonl`` (and TensorBoard scalars when ``tensorboard``).

    Args:
        root: the run's output directory (created on the first write).
        every: log every ``every``-th step of each loop (and its last step).
        tensorboard: also write TensorBoard event files to ``root/tensorboard``.
    """

    def __init__(self, root: str | Path, every: int = 10, tensorboard: bool = False) -> None:
        if every <= 0:
            raise UserInputError(f"metrics interval must be > 0 steps, got {every}")
        self.root = Path(root)
        self.every = every
        self.tensorboard = tensorboard
        self._writer: Any = None
        self._last: dict[str, tuple[float, int]] = {}  # stage -> (time, images) at its last logged step
        self._global: dict[str, int] = {}  # stage -> TensorBoard global step (resumes stay monotone)
        self._t0 = time.monotonic()
        if tensorboard:
            require_tensorboard()

    @property
    def path(self) -> Path:
        """The ``metrics.jsonl`` file."""
        return self.root / METRICS_FILE

    def _tb(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.root / TENSORBOARD_DIR))
        return self._writer

    def wants(self, step: int, total: int | None) -> bool:
        """Whether step ``step`` (1-based) of a loop of ``total`` steps is logged."""
        return step % self.every == 0 or (total is not None and step == total) or step == 1

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (numbers converted, NaN/inf as strings), mirror it to TensorBoard, return it."""
        record = {k: _number(v) for k, v in record.items()}
        record.setdefault("time", round(time.monotonic() - self._t0, 3))
        self.root.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard and "step" in record:
            stage = str(record.get("stage", "run"))
            w = self._tb()
            at = self._global.get(stage, int(record["step"]))
            for k, v in record.items():
                if k not in ("stage", "step", "total_steps", "time", "event", "epoch") and isinstance(
                    v, (int, float)
                ):
                    w.add_scalar(f"{stage}/{k}", v, at)
            w.flush()
        return record

    def step(
        self,
        stage: str,
        step: int,
        terms: dict[str, Any],
        *,
        total: int | None = None,
        lr: float | None = None,
        images: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Record step ``step`` of ``stage`` if it is a logged one; ``images`` is this step's batch size.

        Returns the record written (numbers; the caller may show its loss), or None.
        """
        last_t, last_n = self._last.get(stage, (None, 0))
        count = last_n + images
        self._global[stage] = self._global.get(stage, 0) + 1
        if not self.wants(step, total):
            self._last[stage] = (last_t if last_t is not None else time.monotonic(), count)
            return None
        now = time.monotonic()
        record: dict[str, Any] = {"stage": stage, "step": step}
        if total is not None:
            record["total_steps"] = total
        record.update(terms)
        if lr is not None:
            record["lr"] = lr
        if last_t is not None and now > last_t and count:
            record["images_per_s"] = round(count / (now - last_t), 2)
        if extra:
            record.update(extra)
        self._last[stage] = (now, 0)
        return self.write(record)

    def image(self, tag: str, images: torch.Tensor, nrow: int = 8) -> None:
        """A grid of images in [0, 1] to TensorBoard (nothing without ``--tensorboard``)."""
        if not self.tensorboard:
            return
        from torchvision.utils import make_grid

        self._tb().add_image(tag, make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow), 0)
        self._tb().flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def require_tensorboard() -> None:
    """Raise a one-line error naming the extra when tensorboard is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserInputError(
            "--tensorboard needs the tensorboard package: pip install 'datafree[tensorboard]'"
        ) from None


_SINK: MetricsSink | None = None


def open_run(root: str | Path, every: int = 10, tensorboard: bool = False) -> MetricsSink:
    """Start logging the process's loops into ``root/metrics.jsonl`` (replaces an open sink)."""
    global _SINK
    close_run()
    _SINK = MetricsSink(root, every, tensorboard)
    return _SINK


def close_run() -> None:
    """Stop logging (closes TensorBoard)."""
    global _SINK
    if _SINK is not None:
        _SINK.close()
    _SINK = None


def current() -> MetricsSink | None:
    """The open sink, or None."""
    return _SINK


def log_step(stage: str, step: int, terms: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
    """:meth:`MetricsSink.step` on the open sink (None when none is open or on ranks other than 0)."""
    if _SINK is None:
        return None
    from . import distributed as dist

    if not dist.is_main():
        return None
    return _SINK.step(stage, step, terms, **kw)


def log_event(stage: str, event: str, **values: Any) -> None:
    """A non-step record (e.g. ``event="epoch"`` with the accuracy) on the open sink."""
    if _SINK is None:
        return
    from . import distributed as dist

    if dist.is_main():
        _SINK.write({"stage": stage, "event": event, **values})


def log_image(tag: str, images: torch.Tensor) -> None:
    """Samples grid to TensorBoard on the open sink."""
    if _SINK is not None:
        _SINK.image(tag, images)


def _read_hwm_bytes() -> int | None:
    """This process's peak resident set (VmHWM) in bytes, or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the peak resident set to the current one (Linux ``clear_refs`` 5); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class StagePeakMemory:
    """Peak memory of the code inside the ``with`` block.

    CUDA ``max_memory_allocated`` on a GPU, else the process's peak resident set (reset at entry on
    Linux; otherwise the peak since start).

    After the block, ``result`` is ``{"peak_memory_mb": float, "memory": "cuda_max_allocated" | "rss" |
    "rss_since_start"}`` (empty when nothing could be measured).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.result: dict[str, Any] = {}
        self._reset = False

    def __enter__(self) -> StagePeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reset = _reset_hwm()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(self.device), "cuda_max_allocated"
        else:
            hwm = _read_hwm_bytes()
            if hwm is None:
                import resource

                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                self._reset = False
            peak, kind = hwm, "rss" if self._reset else "rss_since_start"
        self.result = {"peak_memory_mb": round(peak / 2**20, 1), "memory": kind}
