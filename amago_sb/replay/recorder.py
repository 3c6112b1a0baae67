"""``VecTrajectoryRecorder``: turn SB3 ``VecEnv`` steps into stored :class:`~wrappers.trajectory.Trajectory` files.

Per env it keeps preallocated numpy buffers of one chunk (``chunk_len`` transitions, ``chunk_len + 1`` observation
rows); a step is a handful of vectorized writes over all envs. An env's trajectory is written to the store when

* its episode ends (``dones[i]``): the last row is ``infos[i]["terminal_observation"]``; the last transition is
  ``truncated`` if ``infos[i]["TimeLimit.truncated"]`` else ``terminated``;
* its chunk is full (``chunk_len`` transitions): written as neither terminated nor truncated; the next chunk starts
  with the last ``overlap`` transitions of this one (``overlap + 1`` observation rows, ``time_offset`` advanced by
  ``chunk_len - overlap``), so with ``overlap >= context_len - 1`` every window of the episode lies inside a chunk;
* ``flush()`` is called: the unfinished part is written as ``truncated`` (value bootstrapped, never a fake terminal)
  and recording goes on as after a chunk cut (a second flush without new steps writes nothing).
  ``reset(obs)`` in the middle of episodes (a new ``VecEnv.reset()``) flushes them the same way first;
* its env failed and was restarted (``infos[i]["env_fault"]``, :mod:`amago_sb.vec_env_faults`): the steps before the
  failed one are written as ``truncated`` and the failed step (no real transition) is dropped.

``infos[i]["achieved"]`` (goal token rows ``(n_events, goal_len)`` or one row ``(goal_len,)``) is recorded into
``Trajectory.achieved`` ``(T, max_events, goal_len)``, padded with token 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amago_sb.replay.store import TrajectoryStore
from wrappers.trajectory import Trajectory, flatten_obs

__all__ = ["VecTrajectoryRecorder"]


def _flatten(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flatten_obs(obs).items()}


class VecTrajectoryRecorder:
    """Record ``n_envs`` parallel envs into ``store`` (see the module docstring).

    Args:
        n_envs: number of envs of the VecEnv.
        store: where finished trajectories / chunks go (``None``: keep them in ``self.finished`` only, for tests).
        chunk_len: maximum transitions per stored file.
        overlap: transitions shared by consecutive chunks of one episode (use the context length); ``< chunk_len``.
    """

    def __init__(self, n_envs: int, store: TrajectoryStore | None, *, chunk_len: int, overlap: int) -> None:
        if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"VecTrajectoryRecorder n_envs must be an int >= 1, got {n_envs!r}.")
        if not isinstance(chunk_len, (int, np.integer)) or chunk_len < 1:
            raise ValueError(f"VecTrajectoryRecorder chunk_len must be an int >= 1, got {chunk_len!r}.")
        if not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < chunk_len:
            raise ValueError(
                f"VecTrajectoryRecorder overlap must be an int in [0, chunk_len) = [0, {chunk_len}), got {overlap!r}; "
                "use overlap=context_len and chunk_len several times larger (e.g. 4 * context_len)."
            )
        self.n_envs = int(n_envs)
        self.store = store
        self.chunk_len = int(chunk_len)
        self.overlap = int(overlap)
        self.finished: list[Trajectory] = []  # filled only when store is None
        # allocated on the first reset / step (shapes come from the data); None until then
        self._obs: Any = None  # dict[str, np.ndarray] {key: (n_envs, chunk_len + 1, *shape)}
        self._actions: Any = None  # np.ndarray (n_envs, chunk_len, *action_shape)
        self._rewards = np.zeros((self.n_envs, self.chunk_len), dtype=np.float32)
        self._achieved: Any = None  # np.ndarray (n_envs, chunk_len, max_events, goal_len)
        self._has_achieved = np.zeros(self.n_envs, dtype=bool)
        self._t = np.zeros(self.n_envs, dtype=np.int64)  # transitions in the current chunk
        self._stored = np.zeros(self.n_envs, dtype=np.int64)  # of which already written (by a cut or flush)
        self._offset = np.zeros(self.n_envs, dtype=np.int64)  # time_offset of the current chunk
        self._env_idx = np.arange(self.n_envs)

    # ------------------------------------------------------------------ public API
    def reset(self, obs: Mapping[str, np.ndarray]) -> list[Path]:
        """Start every env's trajectory from the batched first timestep ``obs`` ``{key: (n_envs, ...)}``.

        Episodes still in progress (a ``VecEnv.reset()`` in the middle of them) are first written as truncated, so a
        reset never drops recorded steps. Returns the paths written by that flush.
        """
        flat = self._check_obs(obs, "reset")
        written = self.flush() if self._obs is not None and self._actions is not None else []
        if self._obs is None or set(self._obs) != set(flat) or any(
                self._obs[k].shape[2:] != v.shape[1:] for k, v in flat.items()):
            self._obs = {k: np.zeros((self.n_envs, self.chunk_len + 1, *v.shape[1:]), dtype=v.dtype) for k, v in flat.items()}
        for k, v in flat.items():
            self._obs[k][:, 0] = v
        self._t[:] = 0
        self._stored[:] = 0
        self._offset[:] = 0
        self._has_achieved[:] = False
        return written

    def step(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: Sequence[dict],
        new_obs: Mapping[str, np.ndarray],
    ) -> list[Path]:
        """Record one ``VecEnv.step``; return the paths written during it (empty list when ``store`` is None)."""
        if self._obs is None:
            raise RuntimeError("VecTrajectoryRecorder.step called before reset(obs); call reset with VecEnv.reset()'s obs.")
        actions = np.asarray(actions)
        if actions.shape[0] != self.n_envs or len(infos) != self.n_envs:
            raise ValueError(f"Expected actions and infos for {self.n_envs} envs, got {actions.shape[0]} and {len(infos)}.")
        if self._actions is None:
            self._actions = np.zeros((self.n_envs, self.chunk_len, *actions.shape[1:]), dtype=actions.dtype)
        flat = self._check_obs(new_obs, "step")
        t, env = self._t, self._env_idx
        self._actions[env, t] = actions
        self._rewards[env, t] = rewards
        for i, info in enumerate(infos):
            if "achieved" in info:
                self._record_achieved(i, int(t[i]), info["achieved"])
        dones = np.asarray(dones, dtype=bool)
        live = ~dones
        any_done = bool(dones.any())
        rows, envs = (t[live] + 1, env[live]) if any_done else (t + 1, env)
        for k, v in flat.items():  # next observation row of every env still in its episode
            self._obs[k][envs, rows] = v[live] if any_done else v
        written: list[Path] = []
        for i in np.flatnonzero(dones).tolist():
            info = infos[i]
            if info.get("env_fault") is not None:  # env restarted after failing in this step (amago_sb.vec_env_faults)
                written += self._cut_faulted(i, flat)
                continue
            if "terminal_observation" not in info:
                raise ValueError(f"infos[{i}] of a done env has no 'terminal_observation'; use an SB3 VecEnv "
                                 "(DummyVecEnv / SubprocVecEnv), which adds it on auto-reset.")
            term = _flatten(info["terminal_observation"]) if isinstance(info["terminal_observation"], Mapping) else None
            if term is None or set(term) != set(self._obs):
                raise ValueError(f"infos[{i}]['terminal_observation'] must be a dict with keys {sorted(self._obs)}.")
            n = int(t[i]) + 1
            for k, v in term.items():
                self._obs[k][i, n] = v
            truncated = bool(info.get("TimeLimit.truncated", False))
            written += self._emit(i, n, terminated=not truncated, truncated=truncated)
            for k, v in flat.items():
                self._obs[k][i, 0] = v[i]
            self._t[i] = 0
            self._stored[i] = 0
            self._offset[i] = 0
            self._has_achieved[i] = False
        self._t[live] += 1
        for i in np.flatnonzero(self._t == self.chunk_len).tolist():
            written += self._emit(i, self.chunk_len, terminated=False, truncated=False)
            self._carry(i)
        return written

    def flush(self) -> list[Path]:
        """Write every env's unfinished part (``T >= 1``) as a truncated chunk; recording continues afterwards."""
        written: list[Path] = []
        for i in np.flatnonzero(self._t > self._stored).tolist():
            written += self._emit(i, int(self._t[i]), terminated=False, truncated=True)
            self._carry(i)
        return written

    # ------------------------------------------------------------------ internals
    def _check_obs(self, obs: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
        if not isinstance(obs, Mapping):
            raise TypeError(f"VecTrajectoryRecorder.{where} expects the VecEnv's dict observation {{key: (n_envs, ...)}}, "
                            f"got {type(obs).__name__}; wrap the env in wrappers.TrajectoryWrapper.")
        flat = _flatten(obs)
        for k, v in flat.items():
            if v.shape[:1] != (self.n_envs,):
                raise ValueError(f"observation[{k!r}] has shape {v.shape}; expected leading dim n_envs={self.n_envs}.")
        if self._obs is not None and where == "step" and set(flat) != set(self._obs):
            raise ValueError(f"observation keys {sorted(flat)} differ from those at reset {sorted(self._obs)}.")
        return flat

    def _record_achieved(self, i: int, t: int, achieved: Any) -> None:
        a = np.asarray(achieved, dtype=np.int64)
        if a.size == 0 and a.ndim != 2:  # e.g. [] : no events, goal length unknown
            if self._achieved is None:
                return
            a = a.reshape(0, self._achieved.shape[-1])
        elif a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise ValueError(f"infos[{i}]['achieved'] must be goal rows (n_events, goal_len), got shape {a.shape}.")
        n_ev, goal_len = a.shape
        if self._achieved is None:
            self._achieved = np.zeros((self.n_envs, self.chunk_len, max(n_ev, 1), goal_len), dtype=np.int64)
        E, G = self._achieved.shape[2:]
        if n_ev and goal_len != G:
            raise ValueError(f"infos[{i}]['achieved'] goal length {goal_len} differs from earlier steps' {G}.")
        if n_ev > E:  # grow the event axis
            grown = np.zeros((self.n_envs, self.chunk_len, n_ev, G), dtype=np.int64)
            grown[:, :, :E] = self._achieved
            self._achieved = grown
        if not self._has_achieved[i]:
            self._achieved[i] = 0
            self._has_achieved[i] = True
        self._achieved[i, t] = 0
        self._achieved[i, t, :n_ev] = a

    def _emit(self, i: int, T: int, *, terminated: bool, truncated: bool) -> list[Path]:
        term = np.zeros(T, dtype=bool)
        trunc = np.zeros(T, dtype=bool)
        term[-1], trunc[-1] = terminated, truncated
        achieved = None
        if self._has_achieved[i]:
            achieved = self._achieved[i, :T].copy()
        traj = Trajectory(
            observations={k: v[i, :T + 1].copy() for k, v in self._obs.items()},
            actions=self._actions[i, :T].copy(),
            rewards=self._rewards[i, :T].copy(),
            terminated=term,
            truncated=trunc,
            achieved=achieved,
            time_offset=int(self._offset[i]),
            meta={"env_idx": int(i)},
        )
        if self.store is None:
            self.finished.append(traj)
            return []
        return [self.store.add(traj)]

    def _cut_faulted(self, i: int, flat: dict[str, np.ndarray]) -> list[Path]:
        """Env ``i`` failed during this step: write its steps before it as truncated, start over from ``flat[.][i]``."""
        written = self._emit(i, int(self._t[i]), terminated=False, truncated=True) if self._t[i] > self._stored[i] else []
        for k, v in flat.items():
            self._obs[k][i, 0] = v[i]
        self._t[i] = self._stored[i] = self._offset[i] = 0
        self._has_achieved[i] = False
        return written

    def _carry(self, i: int) -> None:
        """Keep the last ``overlap`` transitions of env ``i``'s chunk as the start of its next chunk."""
        T = int(self._t[i])
        keep = min(self.overlap, T)
        cut = T - keep
        self._stored[i] = keep
        if cut == 0:
            return
        for v in self._obs.values():
            v[i, :keep + 1] = v[i, cut:T + 1]
        self._actions[i, :keep] = self._actions[i, cut:T]
        self._rewards[i, :keep] = self._rewards[i, cut:T]
        if self._has_achieved[i]:
            self._achieved[i, :keep] = self._achieved[i, cut:T]
            self._achieved[i, keep:] = 0
        self._t[i] = keep
        self._offset[i] += cut
