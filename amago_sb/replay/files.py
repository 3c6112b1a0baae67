"""The replay's file layout: names (time, host, pid, uuid, steps, bytes) and the ``.npz`` <-> Trajectory codec.

File format (``np.savez``, no pickle): ``obs:<key>`` per observation key, ``actions``, ``rewards``, ``terminated``,
``truncated``, optionally ``achieved``, ``time_offset`` (0-d int64) and ``meta`` (0-d JSON string).
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from wrappers.trajectory import Trajectory

__all__ = ["traj_steps_from_name", "bytes_from_name", "to_arrays", "from_arrays"]

NAME_RE = re.compile(r"^traj_(\d+)_[A-Za-z0-9-]+_\d+_[0-9a-f]+_T(\d+)(?:_B(\d+))?\.npz$")
LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError)


def traj_steps_from_name(name: str) -> int | None:
    """Number of transitions encoded in a store file name, or ``None`` if ``name`` is not a store file."""
    m = NAME_RE.match(name)
    return int(m.group(2)) if m else None


def bytes_from_name(name: str, directory: Path) -> int:
    """File size encoded in a store file name (``_B<bytes>``), else its size on disk (0 if it vanished)."""
    m = NAME_RE.match(name)
    if m and m.group(3) is not None:
        return int(m.group(3))
    try:  # a file named without its size (older layout): ask the file system once
        return (directory / name).stat().st_size
    except OSError:
        return 0


def to_arrays(traj: Trajectory) -> dict[str, np.ndarray]:
    """The arrays of one file (module docstring); ``TypeError`` for object arrays or non-JSON ``meta``."""
    arrays: dict[str, np.ndarray] = {f"obs:{k}": np.asarray(v) for k, v in traj.observations.items()}
    arrays["actions"] = np.asarray(traj.actions)
    arrays["rewards"] = np.asarray(traj.rewards, dtype=np.float32)
    arrays["terminated"] = np.asarray(traj.terminated, dtype=bool)
    arrays["truncated"] = np.asarray(traj.truncated, dtype=bool)
    if traj.achieved is not None:
        arrays["achieved"] = np.asarray(traj.achieved, dtype=np.int64)
    arrays["time_offset"] = np.asarray(int(traj.time_offset), dtype=np.int64)
    try:
        arrays["meta"] = np.asarray(json.dumps(traj.meta))
    except TypeError as e:
        raise TypeError(f"Trajectory.meta must be JSON-serializable to be stored, got {traj.meta!r}: {e}") from e
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"Trajectory field {k!r} has dtype object; store numeric arrays only.")
    return arrays


def from_arrays(z: np.lib.npyio.NpzFile) -> Trajectory:
    """Rebuild the Trajectory from an open ``np.load`` file; ``KeyError`` if arrays are missing."""
    obs = {k[4:]: z[k] for k in z.files if k.startswith("obs:")}
    if not obs:
        raise KeyError("no 'obs:<key>' arrays in file")
    return Trajectory(
        observations=obs,
        actions=z["actions"],
        rewards=z["rewards"],
        terminated=z["terminated"],
        truncated=z["truncated"],
        achieved=z["achieved"] if "achieved" in z.files else None,
        time_offset=int(z["time_offset"]),
        meta=json.loads(str(z["meta"])) if "meta" in z.files else {},
    )
