"""Progress bars (tqdm on stderr, off when not a TTY or when quiet) and a global quiet switch."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress", "set_quiet", "is_quiet", "announce"]

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar off (``--quiet``)."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    """Whether progress output is off."""
    return _QUIET


def progress(it: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """``tqdm`` on stderr; disabled when quiet, and automatically when stderr is not a TTY."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", True if _QUIET else None)
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
