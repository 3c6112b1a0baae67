"""Progress files of collector processes: ``<replay_dir>/collectors/<collector_id>.json``, one per collector.

``python -m zoo.collect`` rewrites its file every few seconds (atomically: temp file then ``os.replace``) with what it
has done: ``env_steps``, ``episodes``, ``files_written``, ``steps_written``, ``env_steps_per_s``, ``cpu_s`` (CPU
seconds of its main process), ``ep_rew_mean``, the checkpoint it acts with (``checkpoint``, ``policy_updates``,
``reloads``), ``seed``, ``pid``, ``host``, ``finished``. The learner (:mod:`amago_sb.distributed`) sums
``env_steps`` for logging and for its optional update-to-data throttle. The replay store only lists ``*.npz`` files
at the top of the directory, so the ``collectors/`` folder does not disturb it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from amago_sb.atomic_files import atomic_write

__all__ = ["STATUS_DIRNAME", "status_dir", "write_status", "read_statuses", "collected_env_steps"]

STATUS_DIRNAME = "collectors"


def status_dir(replay_dir: str | os.PathLike) -> Path:
    """``<replay_dir>/collectors``."""
    return Path(replay_dir) / STATUS_DIRNAME


def write_status(replay_dir: str | os.PathLike, collector_id: str, status: dict[str, Any]) -> Path:
    """Atomically write collector ``collector_id``'s progress (JSON) to ``<replay_dir>/collectors/<id>.json``."""
    if not collector_id or "/" in collector_id or collector_id.startswith("."):
        raise ValueError(f"collector id must be a plain file name (no '/', no leading '.'), got {collector_id!r}.")
    d = status_dir(replay_dir)
    d.mkdir(parents=True, exist_ok=True)
    text = json.dumps(status)
    return atomic_write(d / f"{collector_id}.json", lambda tmp: tmp.write_text(text), fsync=False, what="collector status")


def read_statuses(replay_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every collector's last status (files that vanish or are unreadable mid-read are skipped)."""
    d = status_dir(replay_dir)
    out: list[dict[str, Any]] = []
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return out
    for n in names:
        try:
            with open(d / n) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def collected_env_steps(replay_dir: str | os.PathLike) -> int:
    """Env steps collected so far by all collectors that report into ``replay_dir``."""
    return int(sum(int(s.get("env_steps", 0)) for s in read_statuses(replay_dir)))
