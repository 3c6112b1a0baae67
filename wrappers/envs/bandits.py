"""Bandit envs: ``MetaBandit-v0`` (a task that persists with ``keep_task``) and ``TwoArmedBandit-v0``.

Both have a constant, uninformative observation ``Box(0, 1, (1,), float32)`` filled with 0: everything the agent
can learn about the task comes from ``prev_action`` / ``prev_reward`` in the trajectory form, i.e. from memory.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["MetaBanditEnv", "TwoArmedBanditEnv", "make_meta_bandit_trial"]


class MetaBanditEnv(gym.Env):
    """k-armed Bernoulli bandit; the task is the vector of arm probabilities.

    ``reset()`` draws a new ``task_id`` (a seed) and from it the probabilities ``U(0, 1)^arms``;
    ``reset(options={"keep_task": True})`` keeps them. An episode is ``pulls`` pulls (then ``terminated``).
    ``info["arm_probs"]`` and ``info["best_arm_prob"]`` expose the task for evaluation.
    """

    metadata = {"render_modes": []}

    def __init__(self, arms: int = 5, pulls: int = 10):
        if arms < 2 or pulls < 1:
            raise ValueError(f"MetaBandit needs arms >= 2 and pulls >= 1, got arms={arms}, pulls={pulls}.")
        self.arms, self.pulls = int(arms), int(pulls)
        self.max_episode_length = self.pulls
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(self.arms)
        self.probs: np.ndarray | None = None
        self.task_id = -1
        self.t = 0

    def _info(self) -> dict:
        assert self.probs is not None, "reset() first"
        return {"arm_probs": self.probs.copy(), "best_arm_prob": float(self.probs.max()), "task_id": self.task_id}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New task unless ``options["keep_task"]`` (and a task exists)."""
        super().reset(seed=seed)
        if self.probs is None or seed is not None or not (options or {}).get("keep_task", False):
            self.task_id = int(self.np_random.integers(2**31))
            self.probs = np.random.default_rng(self.task_id).uniform(0.0, 1.0, self.arms)
        self.t = 0
        return np.zeros(1, np.float32), self._info()

    def step(self, action):
        """Pull arm ``action``: reward 1 with the arm's probability."""
        if self.probs is None:
            raise RuntimeError("MetaBandit.step called before reset().")
        self.t += 1
        reward = float(self.np_random.random() < self.probs[int(action)])
        return np.zeros(1, np.float32), reward, self.t >= self.pulls, False, self._info()


class TwoArmedBanditEnv(gym.Env):
    """Two arms paying 1 with probability ``p_good`` / ``p_bad``; the good arm is drawn at reset.

    One episode is ``pulls`` (30) pulls. ``info["oracle_return"]`` is the expected return of always pulling the good
    arm (``pulls * p_good``), ``info["good_arm"]`` the good arm.
    """

    metadata = {"render_modes": []}

    def __init__(self, pulls: int = 30, p_good: float = 0.8, p_bad: float = 0.2):
        if pulls < 1 or not 0.0 <= p_bad <= p_good <= 1.0:
            raise ValueError(f"TwoArmedBandit needs pulls >= 1 and 0 <= p_bad <= p_good <= 1, got {pulls}, {p_good}, {p_bad}.")
        self.pulls, self.p_good, self.p_bad = int(pulls), float(p_good), float(p_bad)
        self.max_episode_length = self.pulls
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.good_arm = 0
        self.t = 0

    def _info(self) -> dict:
        return {"good_arm": self.good_arm, "oracle_return": self.pulls * self.p_good}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw the good arm."""
        super().reset(seed=seed)
        self.good_arm = int(self.np_random.integers(2))
        self.t = 0
        return np.zeros(1, np.float32), self._info()

    def step(self, action):
        """Pull an arm; the episode ends after ``pulls`` pulls."""
        self.t += 1
        p = self.p_good if int(action) == self.good_arm else self.p_bad
        reward = float(self.np_random.random() < p)
        return np.zeros(1, np.float32), reward, self.t >= self.pulls, False, self._info()


def make_meta_bandit_trial(episodes: int = 3, arms: int = 5, pulls: int = 10) -> gym.Env:
    """``MetaBanditTrial-v0``: ``TrialWrapper(TrajectoryWrapper(MetaBandit), episodes)``."""
    from wrappers.trial import TrialWrapper

    return TrialWrapper(MetaBanditEnv(arms=arms, pulls=pulls), episodes=episodes)
