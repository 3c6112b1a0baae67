"""Dark Key-To-Door: a gridworld whose key and door are invisible and stay put for the k episodes of a trial.

The meta-RL task of the AMAGO paper (after Laskin et al.'s algorithm distillation): in a ``size x size`` room the
agent sees only its own position. Reaching the key cell pays +1 (once per episode); reaching the door cell with the
key pays +1 and ends the episode; an episode also ends after ``max_steps`` steps. The agent starts at a random cell
every episode. The key and door cells are the *task*: drawn at a new trial, kept by ``reset(options={"keep_task":
True})``, so an agent that remembers where it found them earlier in the trial gets there faster in later episodes
(in-context improvement). ``DarkKeyToDoor-v0`` is :func:`make_dark_key_to_door` (a :class:`~wrappers.trial.TrialWrapper`
over :class:`DarkKeyToDoorEnv`); the paper uses a 9 x 9 room, 50-step episodes and trials of 500 steps (k = 10).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["DarkKeyToDoorEnv", "make_dark_key_to_door"]

# action -> (dx, dy): stay, up, down, left, right
_MOVES = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]], np.int64)


class DarkKeyToDoorEnv(gym.Env):
    """One episode of Dark Key-To-Door (module docstring).

    Observation: the agent's cell ``(x, y)`` scaled to ``[0, 1]`` (``Box(0, 1, (2,))``). Actions: ``Discrete(5)``
    (stay, up, down, left, right; moves into a wall stay put). ``info`` holds ``task_id``, ``has_key`` and, at the
    end of an episode, ``is_success`` (the door was opened).

    Args:
        size: side of the room (>= 2).
        max_steps: steps per episode before it is truncated (>= 1).
    """

    metadata = {"render_modes": []}

    def __init__(self, size: int = 9, max_steps: int = 50):
        if not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"DarkKeyToDoor size must be an int >= 2 (cells per side), got {size!r}.")
        if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"DarkKeyToDoor max_steps must be an int >= 1, got {max_steps!r}.")
        self.size, self.max_steps = int(size), int(max_steps)
        self.max_episode_length = self.max_steps
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(5)
        self.task_id = -1
        self.key = self.door = self.pos = np.zeros(2, np.int64)
        self.has_key, self.t = False, 0

    def _obs(self) -> np.ndarray:
        return (self.pos / (self.size - 1)).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "has_key": self.has_key}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New key and door cells unless ``options["keep_task"]``; the agent starts at a random cell."""
        super().reset(seed=seed)
        if self.task_id < 0 or seed is not None or not (options or {}).get("keep_task", False):
            self.task_id = int(self.np_random.integers(2**31))
            cells = np.random.default_rng(self.task_id).choice(self.size * self.size, size=2, replace=False)
            self.key, self.door = (np.array(divmod(int(c), self.size), np.int64) for c in cells)
        self.pos = self.np_random.integers(self.size, size=2).astype(np.int64)
        self.has_key, self.t = False, 0
        return self._obs(), self._info()

    def step(self, action):
        """Move; +1 on first reaching the key, +1 (and the end) on reaching the door with it."""
        if self.task_id < 0:
            raise RuntimeError("DarkKeyToDoor.step called before reset().")
        self.t += 1
        self.pos = np.clip(self.pos + _MOVES[int(action)], 0, self.size - 1)
        reward, terminated = 0.0, False
        if not self.has_key and np.array_equal(self.pos, self.key):
            self.has_key, reward = True, 1.0
        elif self.has_key and np.array_equal(self.pos, self.door):
            reward, terminated = 1.0, True
        truncated = not terminated and self.t >= self.max_steps
        info = self._info()
        if terminated or truncated:
            info["is_success"] = terminated
        return self._obs(), reward, terminated, truncated, info


def make_dark_key_to_door(episodes: int = 10, size: int = 9, max_steps: int = 50) -> gym.Env:
    """``DarkKeyToDoor-v0``: ``TrialWrapper`` of ``episodes`` episodes over one key/door placement (trajectory form)."""
    from wrappers.trial import TrialWrapper

    return TrialWrapper(DarkKeyToDoorEnv(size=size, max_steps=max_steps), episodes=episodes)
