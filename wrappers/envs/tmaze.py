"""``TMazePassive-v0``: the passive T-maze of Ni et al. 2023 ("When do Transformers shine in RL?"), a pure memory test.

The agent starts at the left end of a corridor of ``corridor_length`` cells. The cue (+1 = goal up, -1 = goal down) is
shown only in the first observation. At the junction (right end) it must choose up or down: reward +1 for the cued
side, ``wrong_choice_reward`` (default -1) for the other, and the episode terminates. Every other step costs
``step_penalty`` (default 0). The episode is truncated after ``corridor_length + 1`` steps (the optimal length) unless
``max_episode_length`` says otherwise.

Ni et al.'s version, the one the original AMAGO solves at corridor 100, differs in three ways (all off by default):

* ``behind_schedule_penalty=True``: ``-1 / corridor_length`` on every non-final step on which the agent is behind the
  optimal schedule (position ``x < t``). Without it, exploration must walk right ``corridor_length`` times in a row to
  see any reward, which no learner does at corridor 100.
* ``time_limit_terminates=True``: the time limit ends the episode as ``terminated`` instead of ``truncated``. The limit
  is part of this task (the agent sees the time), and a learner that bootstraps through truncation values "wait at
  the junction one more step" almost like choosing now.
* ``wrong_choice_reward=0.0``: the wrong side earns nothing (Ni et al.: reward ``1[correct side]``). With -1, a learner
  that is not yet sure of the cue (and, like AMAGO, takes a pessimistic minimum over its critics) values a guess
  below the sure ``-1 / corridor_length`` of not choosing and learns to wait at the junction.

Actions ``Discrete(4)``: 0 right (forward), 1 left, 2 up, 3 down (up/down do nothing inside the corridor).
Observation ``Box(-1, 1, (3,), float32)``: ``[cue (first step only), in corridor, at junction]``.
``info["success"]`` (the cued side was chosen) and ``info["chose"]`` (a side was chosen at all, rather than running out
of time) are set on the last step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["TMazePassiveEnv"]


class TMazePassiveEnv(gym.Env):
    """Passive T-maze (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        corridor_length: int = 10,
        step_penalty: float = 0.0,
        max_episode_length: int | None = None,
        behind_schedule_penalty: bool = False,
        time_limit_terminates: bool = False,
        wrong_choice_reward: float = -1.0,
    ):
        if corridor_length < 1:
            raise ValueError(f"TMazePassive corridor_length must be >= 1, got {corridor_length}.")
        self.corridor_length = int(corridor_length)
        self.step_penalty = float(step_penalty)
        self.behind_schedule_penalty = bool(behind_schedule_penalty)
        self.time_limit_terminates = bool(time_limit_terminates)
        self.wrong_choice_reward = float(wrong_choice_reward)
        self.max_episode_length = int(max_episode_length or self.corridor_length + 1)
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.cue, self.x, self.t = 1, 0, 0

    def _obs(self) -> np.ndarray:
        at_junction = self.x == self.corridor_length
        cue = float(self.cue) if self.t == 0 else 0.0
        return np.array([cue, 0.0 if at_junction else 1.0, 1.0 if at_junction else 0.0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw the cue and go back to the start."""
        super().reset(seed=seed)
        self.cue = 1 if self.np_random.random() < 0.5 else -1
        self.x, self.t = 0, 0
        return self._obs(), {"cue": self.cue}

    def step(self, action):
        """Move or choose (module docstring)."""
        action = int(action)
        if not 0 <= action < 4:
            raise ValueError(f"TMazePassive action must be in 0..3, got {action!r}.")
        self.t += 1
        info: dict[str, Any] = {"cue": self.cue}
        if self.x == self.corridor_length and action in (2, 3):
            success = (action == 2) == (self.cue == 1)
            info["success"], info["chose"] = success, True
            return self._obs(), 1.0 if success else self.wrong_choice_reward, True, False, info
        if action == 0:
            self.x = min(self.x + 1, self.corridor_length)
        elif action == 1:
            self.x = max(self.x - 1, 0)
        reward = -self.step_penalty
        if self.behind_schedule_penalty and self.x < self.t:
            reward -= 1.0 / self.corridor_length
        out_of_time = self.t >= self.max_episode_length
        if out_of_time:
            info["success"], info["chose"] = False, False
        terminated = out_of_time and self.time_limit_terminates
        return self._obs(), reward, terminated, out_of_time and not terminated, info
