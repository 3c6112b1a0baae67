"""``TrajectoryWrapper``: put any gymnasium env into the AMAGO *trajectory form* (the timestep contract).

The observation becomes a ``Dict`` with exactly these keys (see docs/ARCHITECTURE.md, "Timestep contract"):

==============  ============================  ==============================================================
key             space                         value
==============  ============================  ==============================================================
``obs``         the original space            the env's observation, unchanged (a ``Dict`` observation is
                                              kept flat as ``obs/<key>`` entries, since SB3 VecEnvs reject
                                              nested Dict spaces)
``prev_action`` ``Box((A,), float32)``        previous action (one-hot / concatenated one-hots / raw); 0 at reset
``prev_reward`` ``Box((1,), float32)``        reward of the previous transition; 0 at reset
``time``        ``Box((1,), float32)``        step / max_episode_steps when known, else the raw step count
``reset``       ``Box(0, 1, (1,), float32)``  1 at the first step of an episode
==============  ============================  ==============================================================

Actions pass through unchanged.

Episode ends: ``truncated_is_done=True`` reports a truncation (a time limit) as a termination, so that a learner does
not bootstrap a value past it. Use it when the horizon is part of the task (a fixed-length game whose remaining time
the agent sees, as in POPGym, where the original AMAGO does the same); keep the default (``False``: bootstrap) for
time limits that only cut an open-ended task short. The wrapped env's own flag is kept in ``info["truncated"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wrappers.spaces import UnsupportedSpaceError, action_dim, check_action_space, check_observation_space, encode_action
from wrappers.trajectory import flatten_keys, flatten_obs

__all__ = [
    "TrajectoryWrapper",
    "trajectory_space",
    "fixed_horizon",
    "find_max_episode_steps",
    "is_trajectory_space",
    "has_trajectory_keys",
    "ensure_trajectory_env",
    "TRAJECTORY_KEYS",
    "env_name",
    "UnsupportedSpaceError",
]

TRAJECTORY_KEYS: tuple[str, ...] = ("obs", "prev_action", "prev_reward", "time", "reset")


def has_trajectory_keys(keys: Iterable[str]) -> bool:
    """True if ``keys`` hold the trajectory-form keys (``obs`` itself, or ``obs/<sub>`` keys for Dict observations)."""
    keys = set(keys)
    has_obs = "obs" in keys or any(k.startswith("obs/") for k in keys)
    return has_obs and all(k in keys for k in TRAJECTORY_KEYS if k != "obs")


def is_trajectory_space(space: spaces.Space) -> bool:
    """True if ``space`` is a ``Dict`` holding (at least) the five trajectory-form keys."""
    return isinstance(space, spaces.Dict) and has_trajectory_keys(space.spaces)


def _obs_entries(space: spaces.Space) -> dict[str, spaces.Space]:
    """``{"obs": space}``, or ``{"obs/<sub>": leaf}`` for a ``Dict`` observation (kept flat: SB3 VecEnvs reject nesting)."""
    return flatten_keys(space, prefix="obs/") if isinstance(space, spaces.Dict) else {"obs": space}


def trajectory_space(observation_space: spaces.Space, action_space: spaces.Space) -> spaces.Dict:
    """The trajectory-form ``Dict`` space of an env with these spaces (module docstring)."""
    return spaces.Dict(
        {
            **_obs_entries(observation_space),
            "prev_action": spaces.Box(-np.inf, np.inf, (action_dim(action_space),), np.float32),
            "prev_reward": spaces.Box(-np.inf, np.inf, (1,), np.float32),
            "time": spaces.Box(0.0, np.inf, (1,), np.float32),
            "reset": spaces.Box(0.0, 1.0, (1,), np.float32),
        }
    )


def fixed_horizon(env: gym.Env) -> bool:
    """True if ``env`` (or a wrapper of it) declares ``fixed_horizon = True``: its episode length is part of the task."""
    try:
        return bool(env.get_wrapper_attr("fixed_horizon"))
    except AttributeError:
        return False


def ensure_trajectory_env(env: gym.Env) -> gym.Env:
    """Return ``env`` if it is already in trajectory form, else ``TrajectoryWrapper(env)``."""
    if not isinstance(env, gym.Env):
        raise TypeError(f"Expected a gymnasium.Env, got {type(env).__name__}; create it with gymnasium.make(...) first.")
    return env if is_trajectory_space(env.observation_space) else TrajectoryWrapper(env)


def env_name(env: gym.Env) -> str:
    """A readable name for error messages: the registered id, else the class name of the unwrapped env."""
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return str(spec.id)
    return type(getattr(env, "unwrapped", env)).__name__


def find_max_episode_steps(env: gym.Env) -> int | None:
    spec = getattr(env, "spec", None)
    if spec is not None and spec.max_episode_steps:
        return int(spec.max_episode_steps)
    for attr in ("max_episode_length", "max_episode_steps", "_max_episode_steps"):
        try:
            value = env.get_wrapper_attr(attr)
        except AttributeError:
            continue
        if value:
            return int(value)
    return None


def _first_nonfinite(obs: Any, path: str = "obs") -> str | None:
    if isinstance(obs, dict):
        for key, value in obs.items():
            bad = _first_nonfinite(value, f"{path}[{key!r}]")
            if bad:
                return bad
        return None
    arr = np.asarray(obs)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        return path
    return None


class TrajectoryWrapper(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Adds ``prev_action``, ``prev_reward``, ``time`` and ``reset`` to the observation (module docstring).

    Args:
        env: any gymnasium env with a Box / Discrete / MultiDiscrete / MultiBinary / Dict / uint8-image observation
            space and a Discrete / MultiDiscrete / Box action space.
        max_episode_steps: divides ``time``; defaults to ``env.spec.max_episode_steps`` or the env's
            ``max_episode_length`` attribute (POPGym). When none is known ``time`` is the raw step count.
        truncated_is_done: report truncations as terminations (fixed-horizon tasks; module docstring). None
            (default): the env's ``fixed_horizon`` attribute (True for POPGym), else False.

    Raises:
        UnsupportedSpaceError: (a ``ValueError`` and ``TypeError``) for spaces the agent cannot embed.
        ValueError: when the wrapped env returns a NaN/inf observation or reward.
    """

    def __init__(self, env: gym.Env, *, max_episode_steps: int | None = None, truncated_is_done: bool | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, max_episode_steps=max_episode_steps,
                                                 truncated_is_done=truncated_is_done)
        gym.ObservationWrapper.__init__(self, env)
        if is_trajectory_space(env.observation_space):
            raise ValueError(
                f"{env_name(env)} is already in trajectory form (its observation has keys {TRAJECTORY_KEYS}); "
                "use wrappers.ensure_trajectory_env(env) to wrap only when needed."
            )
        check_observation_space(env.observation_space)
        check_action_space(env.action_space)
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps <= 0):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}.")
        self.max_episode_steps: int | None = (
            int(max_episode_steps) if max_episode_steps is not None else find_max_episode_steps(env)
        )
        if truncated_is_done is None:
            truncated_is_done = fixed_horizon(env)
        if not isinstance(truncated_is_done, (bool, np.bool_)):
            raise TypeError(f"truncated_is_done must be a bool or None, got {truncated_is_done!r}.")
        self.truncated_is_done = bool(truncated_is_done)
        self._action_dim = action_dim(env.action_space)
        self._dict_obs = isinstance(env.observation_space, spaces.Dict)
        self.observation_space = trajectory_space(env.observation_space, env.action_space)
        self._step = 0
        self._prev_action = np.zeros(self._action_dim, np.float32)
        self._prev_reward = 0.0
        self._is_reset = True

    # -- gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the env; the timestep has ``reset=1``, zero ``prev_action``/``prev_reward`` and ``time=0``."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._step = 0
        self._prev_action = np.zeros(self._action_dim, np.float32)
        self._prev_reward = 0.0
        self._is_reset = True
        return self.observation(obs), info

    def step(self, action):
        """Step the env; the timestep carries this action and reward as ``prev_action``/``prev_reward``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if isinstance(reward, (str, bytes)) or (isinstance(reward, np.ndarray) and reward.dtype.kind not in "biuf"):
            raise TypeError(f"{env_name(self.env)} returned the reward {reward!r} ({type(reward).__name__}) at step "
                            f"{self._step + 1}; rewards must be numbers (float(...) would silently parse a string).")
        try:
            reward_f = float(reward)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{env_name(self.env)} returned a non-scalar reward {reward!r} at step {self._step + 1}; "
                "rewards must be one float per step."
            ) from err
        if not np.isfinite(reward_f):
            raise ValueError(
                f"{env_name(self.env)} returned a non-finite reward ({reward_f}) at step {self._step + 1}; "
                "fix the env or clip/replace rewards with a gymnasium.RewardWrapper before wrapping."
            )
        self._step += 1
        self._prev_action = encode_action(self.env.action_space, action)
        self._prev_reward = reward_f
        self._is_reset = False
        terminated, truncated = bool(terminated), bool(truncated)
        if self.truncated_is_done and truncated:
            info = {**info, "truncated": True}
            terminated, truncated = True, False
        return self.observation(obs), reward_f, terminated, truncated, info

    def observation(self, observation: Any) -> dict[str, Any]:
        """Build the trajectory-form ``Dict`` around the env's ``observation``."""
        bad = _first_nonfinite(observation)
        if bad:
            raise ValueError(
                f"{env_name(self.env)} returned a non-finite (NaN/inf) value in {bad} at step {self._step}; "
                "fix the env or sanitize observations with a gymnasium.ObservationWrapper before wrapping."
            )
        t = float(self._step) / self.max_episode_steps if self.max_episode_steps else float(self._step)
        return {
            **(flatten_obs(observation, "obs/") if self._dict_obs else {"obs": observation}),
            "prev_action": self._prev_action.copy(),
            "prev_reward": np.array([self._prev_reward], np.float32),
            "time": np.array([t], np.float32),
            "reset": np.array([1.0 if self._is_reset else 0.0], np.float32),
        }
