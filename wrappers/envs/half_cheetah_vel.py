"""HalfCheetahVel: gymnasium's MuJoCo HalfCheetah rewarded for running at a hidden target velocity.

The meta-RL benchmark of Finn et al. (MAML) and Rakelly et al. (PEARL): a target forward velocity ``v*`` is drawn
per task (``U(low, high)``, PEARL's ``[0, 3]`` by default), hidden from the observation, and the reward is
``-|v - v*| - ctrl_cost_weight * ||a||^2`` (``ctrl_cost_weight`` 0.05 as in those papers). Episodes are
``max_steps`` (200) steps. ``reset(options={"keep_task": True})`` keeps ``v*``, so ``HalfCheetahVel-v0``
(:func:`make_half_cheetah_vel`, a :class:`~wrappers.trial.TrialWrapper` of ``episodes`` episodes) asks the agent to
find the velocity from the rewards of its first episode and run at it in the next ones.

Needs MuJoCo: ``pip install -e ".[mujoco]"``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["HalfCheetahVelEnv", "make_half_cheetah_vel", "MUJOCO_HELP"]

MUJOCO_HELP = 'HalfCheetahVel needs MuJoCo, an optional dependency: pip install -e ".[mujoco]" (or pip install "mujoco<4").'


def _half_cheetah() -> gym.Env:
    try:
        from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    except (ImportError, gym.error.DependencyNotInstalled) as err:
        raise ImportError(MUJOCO_HELP) from err
    try:
        return HalfCheetahEnv()
    except (ImportError, gym.error.DependencyNotInstalled) as err:
        raise ImportError(MUJOCO_HELP) from err


class HalfCheetahVelEnv(gym.Env):
    """One episode of HalfCheetah with a hidden target velocity (module docstring).

    ``info`` holds ``task_id``, ``target_velocity`` and ``x_velocity`` (hidden from the policy, for evaluation).

    Args:
        low, high: range of the target velocity (``0 <= low <= high``).
        max_steps: steps per episode (truncated after).
        ctrl_cost_weight: weight of the squared-action cost (>= 0).
    """

    metadata = {"render_modes": []}

    def __init__(self, low: float = 0.0, high: float = 3.0, max_steps: int = 200, ctrl_cost_weight: float = 0.05):
        if not 0.0 <= low <= high:
            raise ValueError(f"HalfCheetahVel needs 0 <= low <= high (target velocities), got low={low}, high={high}.")
        if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"HalfCheetahVel max_steps must be an int >= 1, got {max_steps!r}.")
        if ctrl_cost_weight < 0:
            raise ValueError(f"HalfCheetahVel ctrl_cost_weight must be >= 0, got {ctrl_cost_weight}.")
        self.low, self.high, self.max_steps = float(low), float(high), int(max_steps)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.max_episode_length = self.max_steps
        self.cheetah = _half_cheetah()
        self.observation_space = self.cheetah.observation_space
        self.action_space = self.cheetah.action_space
        self.task_id, self.target_velocity, self.t = -1, 0.0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New target velocity unless ``options["keep_task"]``; the cheetah's own reset noise every episode."""
        super().reset(seed=seed)
        if self.task_id < 0 or seed is not None or not (options or {}).get("keep_task", False):
            self.task_id = int(self.np_random.integers(2**31))
            self.target_velocity = float(np.random.default_rng(self.task_id).uniform(self.low, self.high))
        obs, _ = self.cheetah.reset(seed=int(self.np_random.integers(2**31)))
        self.t = 0
        return obs, {"task_id": self.task_id, "target_velocity": self.target_velocity}

    def step(self, action):
        """Reward ``-|v - v*| - ctrl_cost_weight * ||a||^2``; truncated after ``max_steps``."""
        if self.task_id < 0:
            raise RuntimeError("HalfCheetahVel.step called before reset().")
        action = np.asarray(action, dtype=np.float64)
        obs, _, terminated, _, info = self.cheetah.step(action)
        self.t += 1
        velocity = float(info["x_velocity"])
        reward = -abs(velocity - self.target_velocity) - self.ctrl_cost_weight * float(np.sum(np.square(action)))
        info = {"task_id": self.task_id, "target_velocity": self.target_velocity, "x_velocity": velocity}
        return obs, reward, bool(terminated), self.t >= self.max_steps, info

    def close(self) -> None:
        self.cheetah.close()


def make_half_cheetah_vel(episodes: int = 2, low: float = 0.0, high: float = 3.0, max_steps: int = 200,
                          ctrl_cost_weight: float = 0.05) -> gym.Env:
    """``HalfCheetahVel-v0``: ``TrialWrapper`` of ``episodes`` episodes at one hidden target velocity."""
    from wrappers.trial import TrialWrapper

    return TrialWrapper(HalfCheetahVelEnv(low, high, max_steps, ctrl_cost_weight), episodes=episodes)
