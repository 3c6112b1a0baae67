"""``WindowSampler``: batches of context windows from a :class:`TrajectoryStore`, and a DataLoader dataset.

A *window* is up to ``context_len`` consecutive observation rows of one stored trajectory and the transitions
between them (``context_len - 1`` actions / rewards). Windows are right-padded with zeros to the longest window
``W <= context_len`` of the batch.

Which trajectory: chosen with probability proportional to ``max(T, context_len - 1)`` (``T`` = its transitions).
A window covers ``min(T, context_len - 1)`` of a trajectory's ``T`` transitions, so this weighting puts every
stored transition inside the same expected number of sampled windows, whatever the episode lengths (the original
AMAGO picks files uniformly, which under-samples the steps of long episodes). Window start: uniform over the
``max(1, T + 2 - context_len)`` possible starts. Trajectories that fail to load (corrupt, vanished) are skipped
and redrawn.

``padded_sampling`` (the original v3's option) lets windows of a trajectory longer than the context start before
row 0 (``"left"``), end after row ``T`` (``"right"``) or both (``"both"``); the part outside the trajectory is cut
(the window is shorter and padded, its rows masked). With ``"none"`` (default) the first and last rows of a long
trajectory lie in one window start each while the middle rows lie in ``context_len`` of them; with ``"both"`` every
row lies in the same number of window starts, at the price of shorter windows on average (more padding compute).
A window keeps at least two rows (one transition).

Relabeling (``relabel(traj, rng) -> traj``) runs on the whole trajectory before windowing. Loaded trajectories
are cached (LRU bounded by bytes) with read-only arrays, so ``relabel`` must return a new trajectory (or new
arrays) instead of editing its input in place.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from amago_sb.replay.store import TrajectoryStore
from wrappers.trajectory import Trajectory

__all__ = ["Batch", "WindowSampler", "ReplayDataset", "Relabel", "PADDED_SAMPLING"]

PADDED_SAMPLING = ("none", "left", "right", "both")

Relabel = Callable[[Trajectory, np.random.Generator], Trajectory]


class Batch(NamedTuple):
    """A batch of right-padded windows (``B`` windows, ``W`` = longest window in observation rows).

    Attributes:
        observations: ``{key: (B, W, *shape)}``; uint8 stays uint8, integer ids int64, the rest float32.
        actions: ``(B, W-1, *action_shape)``; int64 for Discrete/MultiDiscrete, float32 for Box.
        rewards: ``(B, W-1)`` float32.
        terminated: ``(B, W-1)`` float32, 1 on a transition that ended its episode by termination (not truncation).
        mask: ``(B, W)`` bool, True on valid observation rows (transition ``t`` is valid iff ``mask[:, t + 1]``).
        time_idx: ``(B, W)`` int64, absolute step index of each row in its outer episode (0 on padding).
    """

    observations: dict[str, torch.Tensor]
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    mask: torch.Tensor
    time_idx: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(
            observations={k: v.to(device, non_blocking=non_blocking) for k, v in self.observations.items()},
            actions=self.actions.to(device, non_blocking=non_blocking),
            rewards=self.rewards.to(device, non_blocking=non_blocking),
            terminated=self.terminated.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            time_idx=self.time_idx.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy (DataLoader ``pin_memory=True`` calls this)."""
        return Batch(
            observations={k: v.pin_memory() for k, v in self.observations.items()},
            actions=self.actions.pin_memory(),
            rewards=self.rewards.pin_memory(),
            terminated=self.terminated.pin_memory(),
            mask=self.mask.pin_memory(),
            time_idx=self.time_idx.pin_memory(),
        )


def _batch_dtype(dtype: np.dtype) -> np.dtype:
    """uint8 stays uint8 (images); int16..int64 / unsigned ids -> int64; bool, int8 (MultiBinary), floats -> float32."""
    if dtype == np.uint8:
        return np.dtype(np.uint8)
    if np.issubdtype(dtype, np.integer) and dtype.itemsize > 1:
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def _action_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.int64) if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


def _nbytes(traj: Trajectory) -> int:
    n = sum(a.nbytes for a in traj.observations.values()) + traj.actions.nbytes + traj.rewards.nbytes
    return n + (traj.achieved.nbytes if traj.achieved is not None else 0) + 2 * len(traj)


class _LRU:
    """Path name -> Trajectory, evicting least recently used entries beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._d: OrderedDict[str, tuple[Trajectory, int]] = OrderedDict()

    def get(self, key: str) -> Trajectory | None:
        item = self._d.get(key)
        if item is None:
            return None
        self._d.move_to_end(key)
        return item[0]

    def put(self, key: str, traj: Trajectory) -> None:
        n = _nbytes(traj)
        if n > self.max_bytes:
            return
        self._d[key] = (traj, n)
        self.bytes += n
        while self.bytes > self.max_bytes:
            _, (_, m) = self._d.popitem(last=False)
            self.bytes -= m

    def __len__(self) -> int:
        return len(self._d)


def _freeze(traj: Trajectory) -> Trajectory:
    for a in (*traj.observations.values(), traj.actions, traj.rewards, traj.terminated, traj.truncated):
        a.flags.writeable = False
    if traj.achieved is not None:
        traj.achieved.flags.writeable = False
    return traj


class WindowSampler:
    """Sample batches of windows from a store (see the module docstring for the sampling distribution).

    Args:
        store: the :class:`TrajectoryStore` (or a directory, opened read-only).
        context_len: window length in observation rows (``>= 1``); windows hold ``context_len - 1`` transitions.
        relabel: optional ``relabel(traj, rng) -> traj`` applied to the whole trajectory before windowing.
        seed: seed of the sampler's ``np.random.Generator`` (give each DataLoader worker / DDP rank its own).
        cache_bytes: bound of the in-memory LRU of loaded trajectories (default 1 GiB).
        refresh_interval: seconds between rescans of the directory for other writers' files (``None``: the
            store's own ``refresh_interval``).
        padded_sampling: ``"none"``, ``"left"``, ``"right"`` or ``"both"``: where windows of long trajectories may
            reach past the trajectory (module docstring).
    """

    def __init__(
        self,
        store: TrajectoryStore | str | Path,
        context_len: int,
        *,
        relabel: Relabel | None = None,
        seed: int | None = 0,
        cache_bytes: int = 1 << 30,
        refresh_interval: float | None = None,
        padded_sampling: str = "none",
    ) -> None:
        if padded_sampling not in PADDED_SAMPLING:
            raise ValueError(f"padded_sampling must be one of {PADDED_SAMPLING}, got {padded_sampling!r}.")
        self.padded_sampling = padded_sampling
        if isinstance(store, (str, Path)):
            store = TrajectoryStore(store, read_only=True)
        if not isinstance(store, TrajectoryStore):
            raise TypeError(f"WindowSampler needs a TrajectoryStore or a directory, got {type(store).__name__}.")
        if not isinstance(context_len, (int, np.integer)) or isinstance(context_len, bool) or context_len < 1:
            raise ValueError(f"WindowSampler context_len must be an int >= 1, got {context_len!r}.")
        if relabel is not None and not callable(relabel):
            raise TypeError(f"relabel must be callable as relabel(traj, rng) -> Trajectory, got {type(relabel).__name__}.")
        self.store = store
        self.context_len = int(context_len)
        self.relabel = relabel
        self.rng = np.random.default_rng(seed)
        self.cache = _LRU(cache_bytes)
        self.refresh_interval = store.refresh_interval if refresh_interval is None else float(refresh_interval)
        self._last_refresh = time.monotonic()
        self._version = -1
        self._names: list[str] = []
        self._cum = np.zeros(0)

    # ------------------------------------------------------------------ choosing trajectories
    def _weights_current(self) -> None:
        if time.monotonic() - self._last_refresh >= self.refresh_interval:
            self.store.refresh()
            self._last_refresh = time.monotonic()
        if self.store.version == self._version:
            return
        names, steps, bad = self.store.index()
        w = np.maximum(np.asarray(steps, dtype=np.float64), max(self.context_len - 1, 1))
        if bad:
            w[[i for i, n in enumerate(names) if n in bad]] = 0.0
        self._names = list(names)
        self._cum = np.cumsum(w)
        self._version = self.store.version

    def _load(self, name: str) -> Trajectory | None:
        traj = self.cache.get(name)
        if traj is None:
            traj = self.store.load(self.store.directory / name, warn_missing=False)
            if traj is None:
                return None
            self.cache.put(name, _freeze(traj))
        return traj

    def sample_trajectories(self, n: int, max_tries: int = 64) -> list[Trajectory]:
        """``n`` trajectories drawn with the length weighting (before relabeling), skipping unreadable files.

        A draw that hits files evicted by other processes since the last index refresh rescans the directory at once
        (and, after 8 such rounds, backs off a little): heavy churn slows sampling down instead of ending ``learn``.
        """
        out: list[Trajectory] = []
        for attempt in range(max_tries):
            if attempt:  # the last round missed files: the index is stale
                self.store.refresh()
                self._last_refresh = time.monotonic()
                if attempt >= 8:
                    time.sleep(min(0.01 * attempt, 0.2))
            self._weights_current()
            if len(self._cum) == 0 or self._cum[-1] <= 0:
                self.store.refresh()
                self._weights_current()
                if len(self._cum) == 0 or self._cum[-1] <= 0:
                    raise RuntimeError(
                        f"Replay at {self.store.directory} holds no readable trajectories; "
                        "collect (store.add) before sampling."
                    )
            idx = np.searchsorted(self._cum, self.rng.random(n - len(out)) * self._cum[-1], side="right")
            names = self._names
            for i in idx:
                traj = self._load(names[min(int(i), len(names) - 1)])
                if traj is not None:
                    out.append(traj)
            if len(out) == n:
                return out
        raise RuntimeError(f"Could not read {n} trajectories from {self.store.directory} after {max_tries} tries "
                           "(files keep vanishing or are corrupt; see the warnings).")

    # ------------------------------------------------------------------ batching
    def sample(self, batch_size: int) -> Batch:
        """A :class:`Batch` of ``batch_size`` windows (shapes in :class:`Batch`)."""
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        trajs = self.sample_trajectories(int(batch_size))
        if self.relabel is not None:
            trajs = [self.relabel(t, self.rng) for t in trajs]
        return self.collate(trajs)

    def _windows(self, n_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window (start row, rows) per trajectory of ``n_rows`` observation rows ``(B,)`` (module docstring)."""
        L = self.context_len
        rows = np.minimum(n_rows, L)
        lo, hi = np.zeros_like(n_rows), n_rows - rows  # start range [lo, hi] of full windows
        long = n_rows > L
        if self.padded_sampling in ("left", "both"):
            lo = np.where(long, 2 - L, lo)  # may start before row 0, keeping >= 2 rows
        if self.padded_sampling in ("right", "both"):
            hi = np.where(long, n_rows - 2, hi)  # may end after the last row, keeping >= 2 rows
        starts = lo + np.floor(self.rng.random(len(n_rows)) * (hi - lo + 1)).astype(np.int64)
        first, last = np.maximum(starts, 0), np.minimum(starts + L, n_rows)
        return first, np.where(long, last - first, rows)

    def collate(self, trajs: list[Trajectory]) -> Batch:
        """Cut one random window of each trajectory and pad them into a :class:`Batch`."""
        B = len(trajs)
        starts, rows = self._windows(np.array([len(t) + 1 for t in trajs]))
        W = int(rows.max())
        first = trajs[0]
        obs = {k: np.zeros((B, W, *a.shape[1:]), dtype=_batch_dtype(a.dtype)) for k, a in first.observations.items()}
        actions = np.zeros((B, W - 1, *first.actions.shape[1:]), dtype=_action_dtype(first.actions.dtype))
        rewards = np.zeros((B, W - 1), dtype=np.float32)
        terminated = np.zeros((B, W - 1), dtype=np.float32)
        mask = np.zeros((B, W), dtype=bool)
        time_idx = np.zeros((B, W), dtype=np.int64)
        ar = np.arange(W, dtype=np.int64)
        for b, traj in enumerate(trajs):
            s, r = int(starts[b]), int(rows[b])
            for k, buf in obs.items():
                try:
                    buf[b, :r] = traj.observations[k][s:s + r]
                except KeyError:
                    raise ValueError(f"Trajectory observation keys {sorted(traj.observations)} differ from the batch's "
                                     f"{sorted(obs)}: one replay dir must hold one env's trajectories.") from None
            actions[b, :r - 1] = traj.actions[s:s + r - 1]
            rewards[b, :r - 1] = traj.rewards[s:s + r - 1]
            terminated[b, :r - 1] = traj.terminated[s:s + r - 1]
            mask[b, :r] = True
            time_idx[b, :r] = ar[:r] + (traj.time_offset + s)
        return Batch(
            observations={k: torch.from_numpy(v) for k, v in obs.items()},
            actions=torch.from_numpy(actions),
            rewards=torch.from_numpy(rewards),
            terminated=torch.from_numpy(terminated),
            mask=torch.from_numpy(mask),
            time_idx=torch.from_numpy(time_idx),
        )


class ReplayDataset(IterableDataset):
    """An endless stream of :class:`Batch` es for ``torch.utils.data.DataLoader(ds, batch_size=None, num_workers=n)``.

    Each worker opens the directory read-only and samples with its own seed (``SeedSequence([seed, rank, worker])``),
    so workers (and DDP ranks, via ``rank``) never draw the same stream.
    """

    def __init__(
        self,
        directory: str | Path,
        context_len: int,
        batch_size: int,
        *,
        relabel: Relabel | None = None,
        seed: int = 0,
        rank: int = 0,
        cache_bytes: int = 1 << 30,
        refresh_interval: float = 1.0,
        padded_sampling: str = "none",
    ) -> None:
        super().__init__()
        self.padded_sampling = padded_sampling
        self.directory = Path(directory)
        self.context_len = context_len
        self.batch_size = batch_size
        self.relabel = relabel
        self.seed = seed
        self.rank = rank
        self.cache_bytes = cache_bytes
        self.refresh_interval = refresh_interval

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        seed = int(np.random.SeedSequence([self.seed, self.rank, worker]).generate_state(1)[0])
        sampler = WindowSampler(
            TrajectoryStore(self.directory, read_only=True, refresh_interval=self.refresh_interval),
            self.context_len,
            relabel=self.relabel,
            seed=seed,
            cache_bytes=self.cache_bytes,
            padded_sampling=self.padded_sampling,
        )
        while True:
            yield sampler.sample(self.batch_size)
