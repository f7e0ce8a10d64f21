"""Keep large CPU tensor buffers in the heap instead of a fresh ``mmap`` per allocation (glibc).

glibc's ``malloc`` serves every block above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with
its own ``mmap`` and returns it to the kernel on ``free``; a heap top above the trim threshold is also
given back. A training step on CPU allocates and frees activations of that size every step (a
128 x 64 x 32 x 32 fp32 activation is 32 MiB), so each one costs page faults and zeroing of fresh pages
again: on the development machine a 33 MiB elementwise op took 63-100 ms instead of 2-6 ms
(docs/speed.md). :func:`tune_malloc` raises both thresholds once per process, so freed buffers are
reused. The resident set then stays at its peak instead of shrinking between steps.

The CLI calls it at the set-up of every command that runs a model; library users can call it
themselves. It is a no-op where glibc's ``mallopt`` is not available (macOS, Windows, musl) and when
the environment variable ``DATAFREE_MALLOC_TUNING`` is ``0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: every activation of a CPU-sized batch stays in the heap
_DONE: bool | None = None


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); whether they were set."""
    global _DONE
    if _DONE is not None:
        return _DONE
    _DONE = False
    if os.environ.get("DATAFREE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _DONE = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _DONE
