"""Continuous-control memory tasks: ``Box`` actions, the information needed is shown only at the first step.

Both are small and fast (pure numpy, microseconds per step), with dense negative rewards, so that the quality of a
continuous-action learner with memory shows within tens of thousands of env steps.

``PointMassCue-v0`` (:class:`PointMassCueEnv`)
    A 2-D point mass with momentum starts at rest at the origin. A goal on the circle of radius ``goal_radius`` is
    shown in the first observation only. Action: a force in ``[-1, 1]^2``; ``v <- damping * v + accel * a``,
    ``p <- clip(p + v, -1.5, 1.5)``. Reward ``-|p - goal|`` (Euclidean) after every step, ``episode_length`` steps
    (truncated: a time limit of a task without a terminal state). The agent must remember the goal, accelerate
    toward it and brake. A memoryless policy can do no better than stay near the origin (about ``-goal_radius`` per
    step); a policy that remembers the goal reaches it in a few steps.
    Observation ``Box(-inf, inf, (6,))``: ``[p (2), v (2), goal (2) on the first step, zeros later]``.

``ContinuousRecall-v0`` (:class:`ContinuousRecallEnv`)
    A cue ``c ~ U[-1, 1]^dim`` is shown in the first observation with a flag 1; later observations show uniform
    noise in the cue's place with the flag 0 (a distractor the agent must ignore). Reward ``-mean_i |a_i - c_i|`` on
    every step, ``episode_length`` steps (truncated). Oracle 0; a memoryless policy gets about ``-0.5`` per step
    after the first.
    Observation ``Box(-1, 1, (dim + 1,))``: ``[cue or noise (dim), flag (1)]``.

Both put ``info["final_distance"]`` / ``info["final_error"]`` on every step (distance to the goal / mean absolute
error of the last action), so an evaluation can report the end state as well as the return.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["PointMassCueEnv", "ContinuousRecallEnv"]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return int(value)


class PointMassCueEnv(gym.Env):
    """Reach a goal seen only at the first step, with momentum (module docstring).

    Args:
        episode_length: steps per episode (the time limit; the episode is truncated there).
        goal_radius: distance of the goal from the start.
        damping: velocity kept from one step to the next, in [0, 1).
        accel: velocity added per unit of action.
    """

    metadata = {"render_modes": []}

    def __init__(self, episode_length: int = 25, goal_radius: float = 0.7, damping: float = 0.8, accel: float = 0.06):
        self.max_episode_length = _check_positive_int("PointMassCue episode_length", episode_length)
        if not 0.0 < goal_radius <= 1.5:
            raise ValueError(f"PointMassCue goal_radius must lie in (0, 1.5], got {goal_radius!r}.")
        if not 0.0 <= damping < 1.0 or accel <= 0.0:
            raise ValueError(f"PointMassCue needs 0 <= damping < 1 and accel > 0, got damping={damping!r}, "
                             f"accel={accel!r}.")
        self.goal_radius, self.damping, self.accel = float(goal_radius), float(damping), float(accel)
        self.observation_space = spaces.Box(-np.inf, np.inf, (6,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._goal = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        goal = self._goal if self._t == 0 else np.zeros(2)
        return np.concatenate([self._pos, self._vel, goal]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        angle = self.np_random.uniform(0.0, 2.0 * np.pi)
        self._goal = self.goal_radius * np.array([np.cos(angle), np.sin(angle)])
        self._pos, self._vel, self._t = np.zeros(2), np.zeros(2), 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._vel = self.damping * self._vel + self.accel * a
        self._pos = np.clip(self._pos + self._vel, -1.5, 1.5)
        self._t += 1
        distance = float(np.linalg.norm(self._pos - self._goal))
        truncated = self._t >= self.max_episode_length
        return self._obs(), -distance, False, truncated, {"final_distance": distance}


class ContinuousRecallEnv(gym.Env):
    """Output a continuous cue seen only at the first step, ignoring distractors (module docstring).

    Args:
        episode_length: steps per episode (the time limit; the episode is truncated there).
        dim: size of the cue and of the action.
    """

    metadata = {"render_modes": []}

    def __init__(self, episode_length: int = 16, dim: int = 2):
        self.max_episode_length = _check_positive_int("ContinuousRecall episode_length", episode_length)
        self.dim = _check_positive_int("ContinuousRecall dim", dim)
        self.observation_space = spaces.Box(-1.0, 1.0, (self.dim + 1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.dim,), np.float32)
        self._cue = np.zeros(self.dim)
        self._t = 0

    def _obs(self) -> np.ndarray:
        if self._t == 0:
            return np.concatenate([self._cue, [1.0]]).astype(np.float32)
        return np.concatenate([self.np_random.uniform(-1.0, 1.0, self.dim), [0.0]]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._cue = self.np_random.uniform(-1.0, 1.0, self.dim)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.dim), -1.0, 1.0)
        error = float(np.mean(np.abs(a - self._cue)))
        self._t += 1
        truncated = self._t >= self.max_episode_length
        return self._obs(), -error, False, truncated, {"final_error": error}
