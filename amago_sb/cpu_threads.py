"""Intra-op thread counts of the two CPU phases of training: acting (one thread) and gradient updates (several).

Measured on the 2-core dev VM (torch 2.13 CPU, 2026-12-03, MultiarmedBanditEasy at context 201, default network):

* one run alone: an update takes 124 ms with 1 thread and 72-85 ms with 2 (1.5-1.7x faster; PositionOnlyPendulumEasy,
  Box actions: 254-294 -> 153-159 ms), while acting (batched one-token KV-cache steps) is *slower* with 2 threads
  (8,019 -> 7,066 env steps/s): its ops are too small to split, so threads only add wake-up latency;
* two runs side by side, 2 threads each (4 threads on 2 cores): updates 301-308 ms and acting 1,350 env steps/s,
  against 127-129 ms and 7,900-8,300 env steps/s with 1 thread each. Oversubscribed cores cost far more than the
  second thread gains, so runs that share cores should each pass ``num_threads=1`` (``zoo.benchmark --num-threads 1``).

``"auto"`` therefore acts with one thread and updates with torch's current thread count (its default is the number
of physical cores; ``torch.set_num_threads``, ``OMP_NUM_THREADS`` or rl_zoo3's ``--num-threads`` set before the model
is built lower it), capped at :data:`MAX_UPDATE_THREADS` because the updates of these small models are a few
milliseconds of work per matmul (more threads were not measured: the dev machine has two cores). The choice depends on
the machine only, never on timings, so a seeded run repeats on the same machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

__all__ = ["MAX_UPDATE_THREADS", "PhaseThreads"]

MAX_UPDATE_THREADS = 4


class PhaseThreads:
    """Thread counts of the acting and updating phases; each phase restores the previous count when it ends.

    Args:
        num_threads: ``"auto"`` (1 thread acting, ``min(torch.get_num_threads(), MAX_UPDATE_THREADS)`` updating, read
            when this object is built), an int (set once, process-wide, for everything) or None (leave torch alone).
    """

    def __init__(self, num_threads: int | str | None) -> None:
        self.acting_threads: int | None = None
        self.update_threads: int | None = None
        if num_threads == "auto":
            self.acting_threads, self.update_threads = 1, max(1, min(torch.get_num_threads(), MAX_UPDATE_THREADS))
        elif num_threads is not None:
            torch.set_num_threads(int(num_threads))

    @staticmethod
    @contextmanager
    def _threads(n: int | None) -> Iterator[None]:
        before = torch.get_num_threads()
        if n is None or n == before:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def acting(self) -> AbstractContextManager[None]:
        """Context for collecting env steps (and the callbacks that run between them)."""
        return self._threads(self.acting_threads)

    def updating(self) -> AbstractContextManager[None]:
        """Context for gradient updates."""
        return self._threads(self.update_threads)
