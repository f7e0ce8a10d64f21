"""Progress a person can follow anywhere, and a global quiet switch.

* On a terminal: tqdm bars on stderr.
* Anywhere else (nohup, SLURM, CI logs, a notebook's subprocess): one line on stderr every
  ``--log-every`` seconds (30 by default) with the stage, step/total, the main loss, the rate and
  the ETA, e.g. ``[datafree] distill: 120/1200 (10%) loss 0.4121, 3.2 step/s, ETA 5m38s``. At most
  one line per interval is written for the whole process, whichever bar is moving.
* ``--quiet``: nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["progress", "set_quiet", "is_quiet", "set_log_every", "LineProgress", "announce", "note"]

T = TypeVar("T")
_QUIET = False
_LOG_EVERY = 30.0
_LAST_LINE = [0.0]  # time of the last line written by any LineProgress (process-wide)


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar off (``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    """Whether progress output is off."""
    return _QUIET


def set_log_every(seconds: float) -> None:
    """Seconds between two progress lines when stderr is not a terminal (``--log-every``)."""
    global _LOG_EVERY
    if not seconds > 0:
        raise ValueError(f"log interval must be > 0, got {seconds}")
    _LOG_EVERY = float(seconds)


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class LineProgress:
    """A tqdm-like progress object that writes one plain line every ``interval`` seconds.

    It has tqdm's ``update``, ``set_postfix``, ``set_description``, ``close`` and iteration, and
    writes to ``stream`` instead of redrawing a bar.

    Args:
        iterable: optional iterable to wrap.
        total: number of steps (taken from ``len(iterable)`` when possible).
        desc: the stage label.
        initial: steps already done (a resumed run).
        unit: the unit of the rate (``it`` by default).
        stream: where lines go (``sys.stderr`` by default).
        interval: seconds between lines (the ``--log-every`` value by default).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | None = None,
        desc: str | None = None,
        initial: int = 0,
        unit: str = "it",
        stream: TextIO | None = None,
        interval: float | None = None,
        **_: Any,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc or ""
        self.n = initial
        self._start_n = initial
        self.unit = unit
        self.stream = stream
        self.interval = interval
        self.postfix: dict[str, Any] = {}
        self._t0 = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """Values shown after the rate (the main loss)."""
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the stage label."""
        self.desc = desc or ""

    def line(self) -> str:
        """The progress line for the current state."""
        elapsed = time.monotonic() - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        where = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        parts = [f"[datafree] {self.desc}: {where}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.postfix.items()]
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {_fmt_seconds((self.total - self.n) / rate)}")
        return parts[0] + " " + ", ".join(parts[1:])

    def update(self, n: int = 1) -> None:
        """Advance; write a line when the interval has passed since the last line of any bar."""
        self.n += n
        now = time.monotonic()
        interval = self.interval if self.interval is not None else _LOG_EVERY
        if now - max(_LAST_LINE[0], self._t0) >= interval:  # the first line one interval after the start
            _LAST_LINE[0] = now
            stream = self.stream or sys.stderr
            stream.write(self.line() + "\n")
            stream.flush()

    def refresh(self) -> None:  # noqa: D102 - tqdm compatibility
        pass

    def close(self) -> None:
        """Nothing to tear down (kept for tqdm compatibility)."""


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(it: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """Tqdm on stderr when it is a terminal, a :class:`LineProgress` otherwise; nothing when quiet."""
    from tqdm.auto import tqdm

    if _QUIET or kwargs.get("disable"):
        kwargs["disable"] = True
        return tqdm(it, **kwargs)
    if not _is_tty(sys.stderr):
        return LineProgress(it, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(it, **kwargs)


def announce(message: str) -> None:
    """One line on stderr for what a run does to the file system.

    ``created directory X``, ``removed stale X (why)``: from the main process only, and shown
    even when quiet (it is not progress).
    """
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def note(message: str) -> None:
    """One line on stderr about a decision the run took for the user (the compute budget's plan).

    From the main process only; nothing when quiet (``--quiet``), like the progress it comes with.
    """
    if not _QUIET:
        announce(message)
