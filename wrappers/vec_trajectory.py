"""``VecTrajectoryWrapper``: the trajectory form for a whole SB3 ``VecEnv`` of plain envs.

``make_vec_env("CartPole-v1", n_envs=8)`` (what rl-zoo and most SB3 users build) holds plain envs, possibly in
subprocesses where no wrapper can be added. This ``VecEnvWrapper`` adds ``prev_action``, ``prev_reward``, ``time``
and ``reset`` around the VecEnv's batched observations, with exactly the values :class:`TrajectoryWrapper` gives
each env (module docstring of ``wrappers.trajectory_wrapper``), including the ``terminal_observation`` of an episode
that the VecEnv reset automatically. All per-step work is vectorized numpy over the envs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from wrappers.spaces import action_dim, check_action_space, check_observation_space
from wrappers.trajectory_wrapper import is_trajectory_space, trajectory_space

__all__ = ["VecTrajectoryWrapper", "ensure_trajectory_vec_env"]


def _episode_length(venv: VecEnv) -> int | None:
    """The one ``max_episode_steps`` all envs report (their spec, or a ``max_episode_length`` attribute), else None.

    Attributes are probed with ``has_attr`` first: a ``SubprocVecEnv`` worker dies on ``get_attr`` of a missing one.
    """
    specs = venv.get_attr("spec") if venv.has_attr("spec") else [None] * venv.num_envs
    found = {getattr(spec, "max_episode_steps", None) if spec is not None else None for spec in specs}
    if len(found) == 1 and (value := found.pop()):
        return int(value)
    for attr in ("max_episode_length", "max_episode_steps", "_max_episode_steps"):
        if venv.has_attr(attr):
            values = {v for v in venv.get_attr(attr)}
            if len(values) == 1 and (value := values.pop()):
                return int(value)
    return None


class VecTrajectoryWrapper(VecEnvWrapper):
    """Trajectory form for a VecEnv of plain envs.

    Args:
        venv: an SB3 VecEnv whose envs are *not* in trajectory form.
        truncated_is_done: report time-limit truncations as terminations (``info["TimeLimit.truncated"]`` becomes
            False and ``info["truncated"]`` True), as ``TrajectoryWrapper(truncated_is_done=True)`` does. None
            (default): True if every env declares ``fixed_horizon`` (POPGym), else False.

    Attributes:
        max_episode_steps: the envs' common episode length (divides ``time``), or None (``time`` is the step count).
    """

    def __init__(self, venv: VecEnv, truncated_is_done: bool | None = None) -> None:
        if is_trajectory_space(venv.observation_space):
            raise ValueError("The VecEnv is already in trajectory form; use it as it is.")
        check_observation_space(venv.observation_space)
        check_action_space(venv.action_space)
        super().__init__(venv, observation_space=trajectory_space(venv.observation_space, venv.action_space))
        if truncated_is_done is None:
            truncated_is_done = venv.has_attr("fixed_horizon") and all(bool(v) for v in venv.get_attr("fixed_horizon"))
        self.truncated_is_done = bool(truncated_is_done)
        self.max_episode_steps = _episode_length(venv)
        space, n = venv.action_space, venv.num_envs
        self._action_space = space
        self._dict_obs = isinstance(venv.observation_space, spaces.Dict)
        self._adim = action_dim(venv.action_space)
        self._step = np.zeros(n, np.int64)
        self._prev_action = np.zeros((n, self._adim), np.float32)
        self._prev_reward = np.zeros(n, np.float32)
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------------ encoding
    def _encode_actions(self, actions: np.ndarray) -> np.ndarray:
        """``(n, ...)`` env actions -> ``(n, A)`` float32 (one-hot ids from the space's start; Box values raw)."""
        space, n = self._action_space, self.num_envs
        if isinstance(space, spaces.Discrete):
            out = np.zeros((n, self._adim), np.float32)
            out[np.arange(n), np.asarray(actions).reshape(n).astype(np.int64) - int(space.start)] = 1.0
            return out
        if isinstance(space, spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
            ids = np.asarray(actions).reshape(n, -1).astype(np.int64) - np.asarray(space.start).reshape(-1)
            offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
            out = np.zeros((n, self._adim), np.float32)
            out[np.arange(n)[:, None], offsets[None, :] + ids] = 1.0
            return out
        return np.asarray(actions, np.float32).reshape(n, self._adim)

    def _time(self, steps: np.ndarray) -> np.ndarray:
        t = steps.astype(np.float32)
        return t / self.max_episode_steps if self.max_episode_steps else t

    def _wrap(self, obs: Any) -> dict[str, np.ndarray]:
        """Batched env observations -> batched trajectory form, from the current per-env state."""
        entries = {f"obs/{k}": v for k, v in obs.items()} if self._dict_obs else {"obs": obs}
        return {
            **entries,
            "prev_action": self._prev_action.copy(),
            "prev_reward": self._prev_reward[:, None].copy(),
            "time": self._time(self._step)[:, None],
            "reset": (self._step == 0).astype(np.float32)[:, None],
        }

    def _wrap_one(self, obs: Any, i: int) -> dict[str, np.ndarray]:
        entries = {f"obs/{k}": v for k, v in obs.items()} if self._dict_obs else {"obs": obs}
        return {
            **entries,
            "prev_action": self._prev_action[i].copy(),
            "prev_reward": self._prev_reward[i : i + 1].copy(),
            "time": self._time(self._step[i : i + 1]),
            "reset": np.array([1.0 if self._step[i] == 0 else 0.0], np.float32),
        }

    def _forget(self, mask: np.ndarray) -> None:
        self._step[mask] = 0
        self._prev_action[mask] = 0.0
        self._prev_reward[mask] = 0.0

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> dict[str, np.ndarray]:
        obs = self.venv.reset()
        self._forget(np.ones(self.num_envs, bool))
        return self._wrap(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.array(actions, copy=True)  # as given: an env may clip its action array in place
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._actions is None:
            raise RuntimeError("VecTrajectoryWrapper.step_wait() called without step_async().")
        self._step += 1
        self._prev_action = self._encode_actions(self._actions)
        self._prev_reward = np.asarray(rewards, np.float32).reshape(self.num_envs).copy()
        infos = list(infos)
        for i in np.flatnonzero(dones):
            info = dict(infos[i])
            if "terminal_observation" in info:
                info["terminal_observation"] = self._wrap_one(info["terminal_observation"], int(i))
            if self.truncated_is_done and info.get("TimeLimit.truncated", False):
                info["TimeLimit.truncated"], info["truncated"] = False, True
            infos[i] = info
        self._forget(np.asarray(dones, bool))
        return self._wrap(obs), rewards, dones, infos

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        if attr_name == "max_episode_steps":
            return [self.max_episode_steps] * len(list(self._get_indices(indices)))
        return self.venv.get_attr(attr_name, indices)


def ensure_trajectory_vec_env(venv: VecEnv) -> VecEnv:
    """``venv`` if it is in trajectory form, else ``VecTrajectoryWrapper(venv)``."""
    return venv if is_trajectory_space(venv.observation_space) else VecTrajectoryWrapper(venv)
