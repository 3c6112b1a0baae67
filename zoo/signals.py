"""Graceful stop on SIGTERM / SIGINT for the long-running CLIs (``zoo.collect``, ``zoo.learn``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["stop_requested_on_signals"]


@contextmanager
def stop_requested_on_signals(target: object, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Set ``target.stop_requested = True`` when one of ``signals`` arrives; restore the previous handlers on exit.

    The target finishes its current step and stops cleanly (flushing unfinished episodes, writing its final status or
    checkpoint). Restoring the handlers matters when ``main()`` runs inside another program (tests, notebooks).
    """

    def _stop(signum, frame):
        target.stop_requested = True

    previous = {sig: signal.signal(sig, _stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
