"""Crash-safe checkpoints: atomic writes, rotation, validation on load, and the state a resumed run needs.

* **Atomic writes.** :func:`atomic_write` lets a writer fill a hidden temp file in the target's directory
  (``.<name>.<8 hex>.<host>.<pid>.tmp``), ``fsync``\\ s it, ``os.replace``\\ s it onto the final name and ``fsync``\\ s the
  directory. A crash at any moment (even ``SIGKILL``) leaves either the old file or the new one, plus at most an
  orphaned temp file that :func:`clean_temp_files` (called by :class:`CheckpointManager`) deletes later.
  A full disk (``ENOSPC`` / ``EDQUOT`` / ``EFBIG``) raises :class:`CheckpointDiskFullError` after removing the temp
  file; the previous checkpoints are untouched.
* **Rotation.** :class:`CheckpointManager` names checkpoints ``<prefix>_<num_timesteps>_steps.zip`` (SB3's
  ``CheckpointCallback`` layout) and deletes all but the newest ``keep_last`` *after* the new one is in place.
  :class:`AtomicCheckpointCallback` saves through it every ``save_freq`` calls.
* **Validation.** :func:`validate_checkpoint` checks a zip before SB3 unpickles it: a truncated or corrupt file raises
  :class:`CorruptCheckpointError` (a ``ValueError``) naming the file and the way out (the previous checkpoint).
* **Resume state.** :func:`capture_resume_state` / :func:`restore_resume_state`: the python / numpy / torch RNG
  states and, for AMAGO, the replay sampler's and the exploration's generators. ``AMAGO.save`` stores them in the
  zip's ``data`` and ``AMAGO.load`` puts them back after SB3 re-seeded everything in ``_setup_model``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from amago_sb import atomic_files
from amago_sb.atomic_files import DiskFullError, clean_temp_files

__all__ = [
    "AtomicCheckpointCallback",
    "CheckpointDiskFullError",
    "CheckpointManager",
    "CheckpointWarning",
    "CorruptCheckpointError",
    "RESUME_STATE_KEY",
    "atomic_write",
    "capture_resume_state",
    "checkpoint_path",
    "clean_temp_files",
    "restore_resume_state",
    "validate_checkpoint",
]

RESUME_STATE_KEY = "_resume_state"  # model attribute that carries the resume state through SB3's ``data`` entry


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated, not a zip, or fails its CRC / content checks."""


class CheckpointDiskFullError(DiskFullError):
    """The disk (or quota / file-size limit) filled up while writing a checkpoint; nothing partial was left."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (corrupt) while looking for the newest valid one."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The file SB3 writes for ``path``: ``.zip`` is appended when the name has no suffix."""
    p = Path(path)
    return p if p.suffix else p.with_name(p.name + ".zip")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """``amago_sb.atomic_files.atomic_write`` for checkpoints: a full disk raises :class:`CheckpointDiskFullError`."""
    return atomic_files.atomic_write(path, write, fsync=fsync, disk_full_error=CheckpointDiskFullError,
                                     what="checkpoint")


# ---------------------------------------------------------------------------------------------------- validation
def _corruption_reason(p: Path) -> str | None:
    """Why the zip ``p`` is not a complete checkpoint (None: it is)."""
    try:
        if p.stat().st_size == 0:
            return "the file is empty"
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
            names = zf.namelist()
            if bad is not None:
                return f"member {bad!r} fails its CRC check"
            if "data" not in names:
                return f"no 'data' entry (members: {names})"
            if not any(n.endswith(".pth") for n in names):
                return f"no parameters (*.pth) (members: {names})"
            json.loads(zf.read("data").decode())
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _valid_siblings(path: Path) -> list[str]:
    """The newest (up to 3) other checkpoints of ``path``'s directory that pass validation themselves."""
    try:
        others = sorted((p for p in path.parent.glob("*.zip") if p != path), key=lambda p: p.stat().st_mtime)
    except OSError:
        return []
    good: list[str] = []
    for p in reversed(others):
        if _corruption_reason(p) is None:
            good.append(p.name)
            if len(good) == 3:
                break
    return good


def validate_checkpoint(path: str | os.PathLike) -> Path:
    """Check that ``path`` (or ``path.zip``) is a complete SB3-layout checkpoint; return the file's path.

    Reads the zip's central directory, verifies every member's CRC, and checks that ``data`` is JSON and that
    parameters (``*.pth``) are present. Costs one read of the file.

    Raises:
        FileNotFoundError: neither ``path`` nor ``path.zip`` exists.
        CorruptCheckpointError: truncated, empty, not a zip, CRC mismatch, or missing parts; the message names the
            file and the other checkpoints of its directory that are themselves valid, to load instead.
    """
    p = Path(path)
    if not p.is_file() and Path(f"{p}.zip").is_file():
        p = Path(f"{p}.zip")
    if not p.is_file():
        raise FileNotFoundError(f"Checkpoint {p} does not exist (nor {p}.zip).")
    reason = _corruption_reason(p)
    if reason is not None:
        others = _valid_siblings(p)
        hint = (f"load an earlier checkpoint of {p.parent} instead (newest valid: {', '.join(others)}; "
                "CheckpointManager(dir).latest() returns the newest valid one)" if others else
                "no valid checkpoint is left in its directory; start a new run (a kept replay_dir still holds the data)")
        raise CorruptCheckpointError(
            f"Checkpoint {p} is corrupt or truncated ({reason}). A crash or a full disk cut it off while it was "
            f"written without an atomic writer, or it was damaged later. Delete it and {hint}.")
    return p


# ---------------------------------------------------------------------------------------------------- rotation
class CheckpointManager:
    """Atomic, rotated checkpoints of an SB3 model in one directory.

    Args:
        directory: where checkpoints go (created if missing); orphaned temp files of dead writers are deleted.
        name_prefix: file names are ``<name_prefix>_<num_timesteps>_steps.zip``.
        keep_last: newest checkpoints kept; older ones are deleted after each successful save (``None``: keep all).
        fsync: flush files and directory (keep on for real runs).
    """

    def __init__(self, directory: str | os.PathLike, name_prefix: str = "amago", keep_last: int | None = 3,
                 fsync: bool = True) -> None:
        if keep_last is not None and (not isinstance(keep_last, (int, np.integer)) or keep_last < 1):
            raise ValueError(f"keep_last must be an int >= 1 or None (keep every checkpoint), got {keep_last!r}.")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name_prefix):
            raise ValueError(f"name_prefix must use only letters, digits, '_', '.', '-', got {name_prefix!r}.")
        self.directory, self.name_prefix, self.keep_last, self.fsync = Path(directory), name_prefix, keep_last, fsync
        self._re = re.compile(rf"^{re.escape(name_prefix)}_(\d+)_steps\.zip$")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.removed_temp_files = clean_temp_files(self.directory)

    def checkpoints(self) -> list[Path]:
        """This manager's checkpoint files, oldest (fewest steps) first."""
        found = []
        for name in os.listdir(self.directory):
            m = self._re.match(name)
            if m:
                found.append((int(m.group(1)), name))
        return [self.directory / n for _, n in sorted(found)]

    def save(self, model: Any) -> Path:
        """Write ``model`` (an SB3 algorithm) as ``<prefix>_<num_timesteps>_steps.zip`` atomically, then rotate."""
        path = self.directory / f"{self.name_prefix}_{int(model.num_timesteps)}_steps.zip"
        save_model(model, path, fsync=self.fsync)
        if self.keep_last is not None:
            for old in self.checkpoints()[:-self.keep_last]:
                if old != path:
                    old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        """Newest checkpoint that passes :func:`validate_checkpoint` (corrupt ones are skipped with a warning)."""
        for p in reversed(self.checkpoints()):
            try:
                return validate_checkpoint(p)
            except (CorruptCheckpointError, FileNotFoundError) as e:
                warnings.warn(f"Skipping checkpoint {p}: {e}", CheckpointWarning, stacklevel=2)
        return None


def save_model(model: Any, path: str | os.PathLike, exclude: Any = None, include: Any = None, *,
               fsync: bool = True) -> Path | None:
    """SB3 ``BaseAlgorithm.save`` of ``model`` with its resume state, written atomically; returns the file's path.

    A file object (``io.BufferedIOBase``) is written directly (no atomicity possible); the return value is then ``None``.
    """
    from stable_baselines3.common.base_class import BaseAlgorithm

    write = getattr(model, "_write_checkpoint", None)  # AMAGO: the pickle-free format (amago_sb.serialization)
    if write is None:
        def write(target: Any, exclude: Any, include: Any) -> None:
            BaseAlgorithm.save(model, target, exclude, include)
    setattr(model, RESUME_STATE_KEY, capture_resume_state(model))
    try:
        if not isinstance(path, (str, os.PathLike)):
            write(path, exclude, include)
            return None
        return atomic_write(checkpoint_path(path), lambda tmp: write(tmp, exclude, include), fsync=fsync)
    finally:
        model.__dict__.pop(RESUME_STATE_KEY, None)


class AtomicCheckpointCallback(BaseCallback):
    """Save every ``save_freq`` callback calls (vector-env steps) through a :class:`CheckpointManager`.

    Args:
        save_freq: calls between saves (one call = one ``VecEnv.step``, i.e. ``n_envs`` env steps).
        save_path: checkpoint directory.
        name_prefix, keep_last: see :class:`CheckpointManager`.
        save_on_end: also save when ``learn`` returns.
        stop_signals: signals (e.g. ``(signal.SIGTERM,)``, what a cluster scheduler sends before preempting a job) on
            which the run saves a checkpoint at the next step and stops ``learn`` normally (the recorder then writes
            unfinished episodes as truncated). Handlers are installed for the duration of ``learn`` only, from the
            main thread; empty (default): signals keep their usual effect.
    """

    def __init__(self, save_freq: int, save_path: str | os.PathLike, name_prefix: str = "amago",
                 keep_last: int | None = 3, save_on_end: bool = True, stop_signals: tuple[int, ...] = (),
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1 (callback calls between checkpoints), got {save_freq}.")
        self.save_freq, self.save_on_end, self.stop_signals = int(save_freq), save_on_end, tuple(stop_signals)
        self.manager = CheckpointManager(save_path, name_prefix, keep_last)
        self.last_path: Path | None = None
        self.stopped_by: int | None = None  # the signal that stopped the last learn() call
        self._saved_at: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    def _save(self) -> None:
        self.last_path = self.manager.save(self.model)
        self._saved_at = self.model.num_timesteps
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {self.last_path}")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopped_by = signum

    def _on_training_start(self) -> None:
        self.stopped_by = None
        if self.stop_signals and threading.current_thread() is threading.main_thread():
            for sig in self.stop_signals:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0 or self.stopped_by is not None:
            self._save()
        return self.stopped_by is None

    def _on_training_end(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        if self.save_on_end and self._saved_at != self.model.num_timesteps:
            self._save()


# ---------------------------------------------------------------------------------------------------- resume state
def capture_resume_state(model: Any) -> dict[str, Any]:
    """RNG states a resumed run needs: python, numpy, torch (CPU and CUDA), the replay sampler's and the exploration's."""
    state: dict[str, Any] = {
        "version": 1,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    sampler = getattr(model, "sampler", None)
    if sampler is not None and hasattr(sampler, "rng"):
        state["sampler"] = sampler.rng.bit_generator.state
    exploration = getattr(model, "exploration", None)
    if exploration is not None and hasattr(exploration, "state_dict"):
        state["exploration"] = exploration.state_dict()  # the exploration scheme says what it needs
    return state


def restore_resume_state(model: Any, state: dict[str, Any] | None) -> bool:
    """Put back what :func:`capture_resume_state` captured; False (nothing done) for checkpoints without it.

    The env cannot be restored (a loaded model starts fresh episodes), so a seeded env is re-seeded with
    ``seed + num_timesteps``: a resumed run does not replay the episodes of its start.
    """
    if not state:
        return False
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    sampler = getattr(model, "sampler", None)
    if "sampler" in state and sampler is not None:
        sampler.rng.bit_generator.state = state["sampler"]
    exploration = getattr(model, "exploration", None)
    if "exploration" in state and exploration is not None:
        exploration.load_state_dict(state["exploration"])
    env, seed = getattr(model, "env", None), getattr(model, "seed", None)
    if env is not None and seed is not None:
        env.seed(int(seed) + int(model.num_timesteps))
    return True
