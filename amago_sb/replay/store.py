"""``TrajectoryStore``: a directory of ``.npz`` trajectory files, safe for many writers and readers at once.

One file per :class:`wrappers.trajectory.Trajectory` (a whole episode or a chunk of a long one). The contract:

* **Atomic files.** ``add`` writes through :func:`amago_sb.atomic_files.atomic_write`: a hidden temp name in the same
  directory, ``fsync`` (with ``fsync=True``), ``os.replace`` onto its final name, ``fsync`` of the directory. A reader
  listing ``*.npz`` therefore never sees a half-written file, and a crash (even ``SIGKILL``) leaves at most an
  orphaned temp file, which the next ``TrajectoryStore`` opened on the directory deletes.
* **Unique names.** ``traj_<time_ns>_<host>_<pid>_<uuid8>_T<steps>_B<bytes>.npz``: many processes (collectors)
  can write to one directory without locks; the name sorts by creation time (FIFO order) and carries the number of
  transitions and the file size, so the store's size is known from a directory listing without opening any file.
* **FIFO by steps.** After each ``add``, the oldest files are deleted while the stored transitions exceed
  ``max_steps`` (or their bytes exceed the optional ``max_bytes``); the newest file is never deleted. Deleting a file
  that another process is reading is safe on POSIX (the open handle keeps the data); a reader that opens a file
  after it was evicted gets ``None``.
* **Never crash the learner on bad files.** ``load`` returns ``None`` and warns (naming the file) for a corrupt,
  truncated or empty file; such a file is remembered as bad (never sampled again) and left for FIFO to delete.
* **Full disk.** ``ENOSPC`` / ``EDQUOT`` / ``EFBIG`` while writing raises :class:`ReplayDiskFullError` (an ``OSError``)
  that says what to do, and removes the temp file, so nothing partial is left behind.

File names and format: :mod:`amago_sb.replay.files`.
"""

from __future__ import annotations

import bisect
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from amago_sb.atomic_files import DISK_FULL_ERRNOS, DiskFullError, atomic_write, clean_temp_files, host_tag, temp_path
from amago_sb.replay.files import LOAD_ERRORS, bytes_from_name, from_arrays, to_arrays, traj_steps_from_name
from wrappers.trajectory import Trajectory

__all__ = ["TrajectoryStore", "ReplayDiskFullError", "ReplayFileWarning", "traj_steps_from_name"]


class ReplayDiskFullError(DiskFullError):
    """The replay directory's disk (or quota / file-size limit) is full; nothing partial was left behind."""


class ReplayFileWarning(UserWarning):
    """A replay file could not be read (corrupt, truncated, empty) or vanished; it is skipped."""


class TrajectoryStore:
    """A directory of trajectory files with FIFO eviction by total stored transitions.

    Args:
        directory: the replay directory; created (with parents) if missing.
        max_steps: size cap in transitions (sum of ``len(traj)`` over files); oldest files are deleted beyond it.
        max_bytes: optional cap on the files' total size on disk (image replays); FIFO evicts beyond either cap.
        fsync: ``fsync`` each file and the directory after the rename. Costs a few ms per file on real disks; turn it
            off only for throwaway runs (a power loss may then lose the newest files, never corrupt old ones).
        compress: ``np.savez_compressed`` instead of ``np.savez`` (smaller image replays, slower writes and loads).
        read_only: open for reading only (no cleanup, ``add`` raises); works on a directory the process cannot write.
        stale_tmp_seconds: temp files older than this are treated as orphans even if their writer pid is alive
            (pid reuse, or a writer on another host of a shared filesystem).
        refresh_interval: seconds between directory rescans done implicitly by ``add`` when evicting; readers call
            :meth:`refresh` (the sampler does so every ``refresh_interval`` seconds too).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_steps: int = 1_000_000,
        fsync: bool = True,
        *,
        max_bytes: int | None = None,
        compress: bool = False,
        read_only: bool = False,
        stale_tmp_seconds: float = 3600.0,
        refresh_interval: float = 1.0,
    ) -> None:
        if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"TrajectoryStore max_steps must be a positive int, got {max_steps!r}.")
        self.directory = Path(directory)
        self.max_steps = int(max_steps)
        if max_bytes is not None and (not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1):
            raise ValueError(f"TrajectoryStore max_bytes must be a positive int or None, got {max_bytes!r}.")
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.fsync = bool(fsync)
        self.compress = bool(compress)
        self.read_only = bool(read_only)
        self.stale_tmp_seconds = float(stale_tmp_seconds)
        self.refresh_interval = float(refresh_interval)
        self._host = host_tag()
        self._names: list[str] = []  # sorted oldest -> newest
        self._steps: dict[str, int] = {}
        self._total = 0
        self._sizes: dict[str, int] = {}  # bytes on disk per file (encoded in the name)
        self._total_bytes = 0
        self._bad: set[str] = set()
        self._foreign: set[str] = set()  # .npz names in the directory that are not store files
        self._version = 0  # bumped on every index change (the sampler caches weights per version)
        self._last_refresh = 0.0
        if read_only:
            if not os.path.isdir(self.directory):
                raise FileNotFoundError(f"Replay directory {self.directory} does not exist (opened with read_only=True).")
        else:
            self._open_writable()
        self.refresh()

    # ------------------------------------------------------------------ opening
    def _open_writable(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(
                f"Cannot create replay directory {self.directory}: {e.strerror or e}. "
                "Choose a writable replay_dir, or open the store with read_only=True to only sample from it."
            ) from e
        if not self.directory.is_dir():
            raise NotADirectoryError(f"Replay path {self.directory} exists and is not a directory.")
        probe = temp_path(self.directory / "probe")
        try:
            with open(probe, "wb") as f:
                f.write(b"0")
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise ReplayDiskFullError(e.errno, f"Replay directory {self.directory} is on a full disk; free space.") from e
            raise PermissionError(
                f"Replay directory {self.directory} is not writable ({e.strerror or e}). Fix its permissions, choose "
                "another replay_dir, or open the store with read_only=True to only sample from it."
            ) from e
        finally:
            probe.unlink(missing_ok=True)
        self.clean_orphans()

    def clean_orphans(self) -> list[Path]:
        """Delete temp files left by crashed writers (dead pid on this host, or older than ``stale_tmp_seconds``).

        Returns the deleted paths. Temp files of live writers on this host are kept, so opening a store while other
        processes write into the same directory is safe.
        """
        return clean_temp_files(self.directory, self.stale_tmp_seconds)

    # ------------------------------------------------------------------ index
    def refresh(self) -> None:
        """Rescan the directory so that files written or evicted by other processes are seen."""
        try:
            listing = os.listdir(self.directory)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Replay directory {self.directory} was removed while in use; recreate it (stored trajectories are lost) "
                "or point the run at another replay_dir."
            ) from None
        found = {n for n in listing if n.endswith(".npz")} - self._foreign
        if found != self._steps.keys():
            steps: dict[str, int] = {}
            for n in found:
                s = self._steps.get(n)
                if s is None:
                    s = traj_steps_from_name(n)
                    if s is None:  # some other .npz: not ours, never touched
                        self._foreign.add(n)
                        continue
                steps[n] = s
            self._names = sorted(steps)
            self._steps = steps
            self._total = sum(steps.values())
            self._sizes = {n: self._sizes[n] if n in self._sizes else bytes_from_name(n, self.directory) for n in steps}
            self._total_bytes = sum(self._sizes.values())
            self._bad &= found
            self._version += 1
        self._last_refresh = time.monotonic()

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._last_refresh >= self.refresh_interval:
            self.refresh()

    def _insert(self, name: str, steps: int, nbytes: int) -> None:
        if not self._names or name > self._names[-1]:
            self._names.append(name)
        else:
            bisect.insort(self._names, name)
        self._steps[name] = steps
        self._total += steps
        self._sizes[name] = nbytes
        self._total_bytes += nbytes
        self._version += 1

    def _forget(self, name: str) -> None:
        s = self._steps.pop(name, None)
        if s is None:
            return
        self._names.remove(name)
        self._total -= s
        self._total_bytes -= self._sizes.pop(name, 0)
        self._bad.discard(name)
        self._version += 1

    def paths(self, refresh: bool = True) -> list[Path]:
        """Stored files, oldest first (rescans the directory unless ``refresh=False``)."""
        if refresh:
            self.refresh()
        return [self.directory / n for n in self._names]

    @property
    def num_trajectories(self) -> int:
        """Number of stored files as of the last ``add`` / ``refresh`` (no disk access)."""
        return len(self._names)

    @property
    def num_steps(self) -> int:
        """Stored transitions as of the last ``add`` / ``refresh`` (no disk access)."""
        return self._total

    @property
    def num_bytes(self) -> int:
        """Stored bytes on disk as of the last ``add`` / ``refresh`` (no disk access)."""
        return self._total_bytes

    @property
    def version(self) -> int:
        """Counter bumped whenever the index changes (files added, evicted, vanished or found bad)."""
        return self._version

    def index(self) -> tuple[list[str], list[int], set[str]]:
        """``(names oldest first, their step counts, names known to be bad)`` of the current index (no disk access)."""
        return self._names, [self._steps[n] for n in self._names], self._bad

    # ------------------------------------------------------------------ writing
    def add(self, traj: Trajectory) -> Path:
        """Write ``traj`` atomically as one new file, evict the oldest files beyond ``max_steps``; return its path."""
        if self.read_only:
            raise PermissionError(f"TrajectoryStore({self.directory}) was opened with read_only=True; cannot add.")
        if not isinstance(traj, Trajectory):
            raise TypeError(f"TrajectoryStore.add expects a wrappers.trajectory.Trajectory, got {type(traj).__name__}.")
        traj.validate()
        T = len(traj)
        if T < 1:
            raise ValueError("TrajectoryStore.add got a trajectory with 0 transitions; store only trajectories with T >= 1.")
        arrays = to_arrays(traj)
        stem = f"traj_{time.time_ns():020d}_{self._host}_{os.getpid()}_{uuid.uuid4().hex[:8]}_T{T}"

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                save: Any = np.savez_compressed if self.compress else np.savez
                save(f, **arrays)

        def final_name(tmp: Path) -> Path:  # the name carries the file's size (the store's size without a stat)
            return self.directory / f"{stem}_B{tmp.stat().st_size}.npz"

        final = atomic_write(final_name, write, fsync=self.fsync, directory=self.directory,
                             disk_full_error=ReplayDiskFullError, what="a replay file into")
        name, nbytes = final.name, int(final.name.rsplit("_B", 1)[1][: -len(".npz")])
        self._insert(name, T, nbytes)
        if self._over_cap(self._total, self._total_bytes):
            self._evict(keep=name)
        return final

    def enforce_cap(self) -> None:
        """Rescan the directory and evict the oldest files until the cap holds.

        ``add`` evicts from this writer's view, refreshed every ``refresh_interval`` s, so with several writers the cap
        can be exceeded by about that much writing; writers call this when they stop so the cap holds afterwards.
        """
        self.refresh()
        self._evict(keep="")

    def _over_cap(self, steps: int, nbytes: int) -> bool:
        return steps > self.max_steps or (self.max_bytes is not None and nbytes > self.max_bytes)

    def _evict(self, keep: str) -> None:
        self._maybe_refresh()
        i, total, total_bytes, names = 0, self._total, self._total_bytes, self._names
        while self._over_cap(total, total_bytes) and i < len(names) and names[i] != keep:
            total -= self._steps[names[i]]
            total_bytes -= self._sizes[names[i]]
            i += 1
        victims = names[:i]
        for n in victims:
            try:
                os.unlink(self.directory / n)
            except FileNotFoundError:
                pass  # another writer evicted it first
        if victims:
            del self._names[:i]
            for n in victims:
                self._steps.pop(n, None)
                self._sizes.pop(n, None)
                self._bad.discard(n)
            self._total = total
            self._total_bytes = total_bytes
            self._version += 1

    # ------------------------------------------------------------------ reading
    def load(self, path: str | os.PathLike, *, warn_missing: bool = True) -> Trajectory | None:
        """Read one file; ``None`` (with a :class:`ReplayFileWarning` naming it) if it is corrupt or vanished.

        A corrupt file is marked bad (excluded from sampling, still evicted by FIFO); a vanished one is dropped from
        the index. ``warn_missing=False`` silences the warning for vanished files (expected with concurrent FIFO).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                traj = from_arrays(z)
            traj.validate()
            return traj
        except FileNotFoundError:
            self._forget(path.name)
            if warn_missing:
                warnings.warn(f"Replay file {path} vanished (evicted by FIFO or removed); skipping it.",
                              ReplayFileWarning, stacklevel=2)
            return None
        except LOAD_ERRORS as e:
            if path.name in self._steps and path.name not in self._bad:
                self._bad.add(path.name)
                self._version += 1
            warnings.warn(f"Replay file {path} is corrupt or truncated ({type(e).__name__}: {e}); skipping it.",
                          ReplayFileWarning, stacklevel=2)
            return None

    def __repr__(self) -> str:
        return (f"TrajectoryStore({str(self.directory)!r}, trajectories={self.num_trajectories}, steps={self.num_steps}, "
                f"bytes={self.num_bytes}, max_steps={self.max_steps}, max_bytes={self.max_bytes})")
