"""Keep freed tensor memory in the process heap on glibc (Linux), so large CPU tensors are not re-faulted every update.

glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps them on
``free``; PyTorch's CPU allocator has no cache, so every large activation of an update (the critic ensemble's
``(C, B * T * G, H)`` hidden layers are 30-70 MiB at POPGym shapes) costs page faults on first touch. Measured on the
2-core dev VM (1 thread, 2026-12-02): an elementwise op on 32-128 MiB tensors 6-9x slower than on reused memory; one
AMAGO update on PositionOnlyPendulumEasy (context 201, Box actions) 1.37-1.43 s -> 0.74-0.85 s, CountRecallEasy
0.132 -> 0.103 s, PositionOnlyCartPoleEasy unchanged (its tensors stay below the threshold).

:func:`keep_freed_memory` raises the mmap and trim thresholds with ``mallopt`` (the process keeps its peak heap
instead of returning it to the OS between updates). ``AMAGO`` calls it once when it is set up on CPU. It does nothing
where glibc is absent (macOS, Windows, musl) or when the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` environment variables, which then decide.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_LIMIT = 2**31 - 1  # the largest value mallopt's int argument takes
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap / trim thresholds once per process; True if they are set (now or by an earlier call)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
    return _applied
