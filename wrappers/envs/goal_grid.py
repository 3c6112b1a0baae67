"""``GoalGrid-v0``: a small gridworld with coloured objects, the goal env for instructions and relabeling tests.

The agent moves on a ``size x size`` grid (actions 0 stay, 1 up, 2 down, 3 left, 4 right). ``n_objects`` objects of
distinct colours sit on distinct random cells (drawn at reset). Stepping *onto* an object's cell achieves the goal
``("reach", <colour>)``, reported in ``info["achieved_goals"]``. The plain env has reward 0; use
``GoalGridInstruction-v0`` (``InstructionWrapper`` around it). Episodes are truncated after ``max_episode_length``
steps (50) for instructions such as
``[("reach", "red"), ("reach", "blue")]``.

Observation: ``Box(0, 1, (2 + 2 * n_objects,), float32)``, the agent's (row, col) then each object's (row, col),
divided by ``size - 1``.

Held-out instructions: ``split="train"`` never draws an instruction in which one of :data:`HELD_OUT_PAIRS` follows
the other (e.g. "reach red, then reach blue"); ``split="test"`` draws only such instructions (2..k goals). Train on
``"train"`` and evaluate on ``"test"`` to measure generalization to unseen goal sequences: hindsight relabeling can
still produce the held-out sequences from what the agent happened to achieve, training on them never does.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["GoalGridEnv", "COLOURS", "GOAL_GRID_VOCABULARY", "HELD_OUT_PAIRS", "has_held_out_pair",
           "make_goal_grid_instruction"]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
GOAL_GRID_VOCABULARY: tuple[str, ...] = ("reach", *COLOURS)
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({("red", "blue"), ("green", "red")})
SPLITS = ("all", "train", "test")
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])


class GoalGridEnv(gym.Env):
    """Gridworld with coloured objects; reaching an object is an achieved goal (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 5, n_objects: int = 4, max_episode_length: int = 50):
        if size < 2:
            raise ValueError(f"GoalGrid size must be >= 2, got {size}.")
        if not 1 <= n_objects <= min(len(COLOURS), size * size - 1):
            raise ValueError(f"GoalGrid n_objects must be in 1..{min(len(COLOURS), size * size - 1)}, got {n_objects}.")
        if max_episode_length < 1:
            raise ValueError(f"GoalGrid max_episode_length must be >= 1, got {max_episode_length}.")
        self.size, self.n_objects = int(size), int(n_objects)
        self.max_episode_length = int(max_episode_length)
        self.t = 0
        self.colours = COLOURS[: self.n_objects]
        self.observation_space = spaces.Box(0.0, 1.0, (2 + 2 * self.n_objects,), np.float32)
        self.action_space = spaces.Discrete(5)
        self.agent = np.zeros(2, np.int64)
        self.objects = np.zeros((self.n_objects, 2), np.int64)

    def _obs(self) -> np.ndarray:
        return (np.concatenate([self.agent, self.objects.reshape(-1)]) / (self.size - 1)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Place the agent and the objects on distinct random cells."""
        super().reset(seed=seed)
        cells = self.np_random.choice(self.size * self.size, size=self.n_objects + 1, replace=False)
        coords = np.stack([cells // self.size, cells % self.size], axis=1)
        self.agent, self.objects = coords[0].copy(), coords[1:].copy()
        self.t = 0
        return self._obs(), {"achieved_goals": []}

    def step(self, action):
        """Move (walls block); ``info["achieved_goals"]`` lists the object reached by this move, if any."""
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"GoalGrid action must be in 0..4, got {action!r}.")
        old = self.agent.copy()
        self.agent = np.clip(self.agent + _MOVES[int(action)], 0, self.size - 1)
        achieved = []
        if not np.array_equal(old, self.agent):
            hit = np.flatnonzero(np.all(self.objects == self.agent, axis=1))
            achieved = [("reach", self.colours[i]) for i in hit]
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.max_episode_length, {"achieved_goals": achieved}

    def sample_instruction(self, rng: np.random.Generator, k: int = 3, split: str = "all") -> list[tuple[str, str]]:
        """1..k ``("reach", colour)`` goals, no colour twice in a row; ``split`` as in the module docstring."""
        if split not in SPLITS:
            raise ValueError(f"GoalGrid split must be one of {SPLITS}, got {split!r}.")
        if split == "test" and (k < 2 or not any(a in self.colours and b in self.colours for a, b in HELD_OUT_PAIRS)):
            raise ValueError(f"GoalGrid split='test' needs instruction_len >= 2 and n_objects >= 3 (the colours of "
                             f"{sorted(HELD_OUT_PAIRS)}), got k={k}, n_objects={self.n_objects}.")
        while True:
            goals: list[tuple[str, str]] = []
            for _ in range(int(rng.integers(2 if split == "test" else 1, k + 1))):
                options = [c for c in self.colours if not goals or goals[-1][1] != c]
                goals.append(("reach", options[int(rng.integers(len(options)))]))
            if split == "all" or has_held_out_pair(goals) == (split == "test"):
                return goals


def has_held_out_pair(goals: list[tuple[str, str]]) -> bool:
    """Whether one of :data:`HELD_OUT_PAIRS` occurs as consecutive goals of ``goals``."""
    colours = [g[1] for g in goals]
    return any(pair in HELD_OUT_PAIRS for pair in zip(colours, colours[1:]))


def make_goal_grid_instruction(
    instruction_len: int = 3, size: int = 5, n_objects: int = 4, max_episode_length: int = 50, split: str = "all"
) -> gym.Env:
    """``GoalGridInstruction-v0``: GoalGrid in trajectory + instruction form (goals of 2 tokens); ``split``: which
    instructions it draws (``"all"``, ``"train"`` or held-out ``"test"``, module docstring)."""
    from wrappers.instruction import InstructionWrapper
    from wrappers.trajectory_wrapper import TrajectoryWrapper

    inner = GoalGridEnv(size=size, n_objects=n_objects, max_episode_length=max_episode_length)
    inner.sample_instruction(np.random.default_rng(0), instruction_len, split)  # bad split / sizes fail here, not at reset
    return InstructionWrapper(
        TrajectoryWrapper(inner),
        GOAL_GRID_VOCABULARY,
        instruction_len=instruction_len,
        goal_len=2,
        sampler=lambda rng: inner.sample_instruction(rng, instruction_len, split),
        max_events=2,
    )
