"""``CrafterInstruction-v0``: Crafter with multi-goal instructions (AMAGO's Crafter experiment, our own version).

Goals (up to 4 tokens each):

* the 22 Crafter achievements, split on ``_``: ``("collect", "wood")``, ``("make", "wood", "pickaxe")``,
  ``("place", "table")``, ``("wake", "up")``, ... achieved when the achievement's counter increases;
* ``("travel", "x<X>", "y<Y>")``: the player is within ``radius`` (Euclidean, cells) of the grid point ``(X, Y)``;
  grid points are every ``grid_spacing`` cells (``X, Y in 0, s, 2s, ... < area``); achieved at every such step;
* ``("place", <stone|table|plant|furnace>, "x<X>", "y<Y>")``: that block was placed on a cell within ``radius`` of
  ``(X, Y)`` (the placed cell is the one the player faced).

Instructions have 1..``instruction_len`` goals drawn by :class:`CrafterGoals` (achievements / travel / place-at with
probabilities ``task_probs``), or come from one family (``family=``: one achievement, one travel, one place-at, 2-4
mixed goals), with a fifth of the multi-goal instructions held out (``split="train"`` / ``"test"``). Everything
else is :class:`wrappers.InstructionWrapper`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from wrappers.envs.crafter_adapter import ACHIEVEMENTS, CrafterEnv

__all__ = ["CrafterGoals", "make_crafter_instruction", "PLACE_BLOCKS", "FAMILIES", "INSTRUCTION_SPLITS", "is_held_out"]

PLACE_BLOCKS: tuple[str, ...] = ("stone", "table", "plant", "furnace")


class CrafterGoals:
    """Vocabulary, achieved-goal function and instruction sampler for Crafter on an ``area`` world.

    Args:
        area: world size (cells), as given to :class:`CrafterEnv`.
        grid_spacing: distance between travel / placement grid points.
        radius: how close (Euclidean, cells) to a grid point counts as reaching it.
        task_probs: probabilities of an (achievement, travel, place-at) goal when sampling.
    """

    def __init__(
        self,
        area: Sequence[int] = (64, 64),
        grid_spacing: int = 8,
        radius: float = 2.0,
        task_probs: Sequence[float] = (0.6, 0.25, 0.15),
    ):
        if grid_spacing < 1 or radius < 0:
            raise ValueError(f"grid_spacing must be >= 1 and radius >= 0, got {grid_spacing}, {radius}.")
        probs = np.asarray(task_probs, np.float64)
        if probs.shape != (3,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"task_probs must be 3 non-negative numbers summing to 1, got {task_probs!r}.")
        self.xs = np.arange(0, int(area[0]), grid_spacing)
        self.ys = np.arange(0, int(area[1]), grid_spacing)
        self.radius, self.task_probs = float(radius), probs
        self.center = (int(area[0]) // 2, int(area[1]) // 2)  # crafter's start cell
        words: list[str] = []
        for name in ACHIEVEMENTS:
            words += [w for w in name.split("_") if w not in words]
        words.append("travel")
        coords = sorted({f"x{x}" for x in self.xs} | {f"y{y}" for y in self.ys}, key=lambda s: (s[0], int(s[1:])))
        self.vocabulary: list[str] = words + coords

    def near_points(self, pos: Sequence[int]) -> list[tuple[str, str]]:
        """Grid points within ``radius`` of cell ``pos`` as ``("x<X>", "y<Y>")`` tokens."""
        x, y = float(pos[0]), float(pos[1])
        return [
            (f"x{gx}", f"y{gy}")
            for gx in self.xs
            if abs(gx - x) <= self.radius
            for gy in self.ys
            if (gx - x) ** 2 + (gy - y) ** 2 <= self.radius**2
        ]

    def achieved(self, env: gym.Env, obs: dict, info: dict) -> list[tuple[str, ...]]:
        """Goals achieved by the last step, from :class:`CrafterEnv`'s info (``achieved_fn`` of the wrapper)."""
        goals: list[tuple[str, ...]] = [tuple(name.split("_")) for name in info["new_achievements"]]
        for block, cell in info["placed"]:
            goals += [("place", block, *point) for point in self.near_points(cell)]
        goals += [("travel", *point) for point in self.near_points(info["player_pos"])]
        return goals

    def _goal(self, rng: np.random.Generator, kind: int, points: list[tuple[str, str]]) -> tuple[str, ...]:
        point = points[int(rng.integers(len(points)))]
        if kind == 0:
            return tuple(ACHIEVEMENTS[int(rng.integers(len(ACHIEVEMENTS)))].split("_"))
        if kind == 1:
            return ("travel", *point)
        return ("place", PLACE_BLOCKS[int(rng.integers(len(PLACE_BLOCKS)))], *point)

    def sample(self, rng: np.random.Generator, k: int, family: str = "mixed", split: str = "all") -> list[tuple[str, ...]]:
        """An instruction of ``family`` (``FAMILIES``): ``"mixed"``, 1..k goals of the three kinds mixed by
        ``task_probs``; ``"achievement"`` / ``"travel"`` / ``"place"``, one goal of that kind; ``"multi"``,
        2..min(k, 4) mixed goals.

        ``split`` holds out a fifth of the multi-goal instructions (by a stable hash of their text): ``"train"``
        never draws them, ``"test"`` draws only them (single-goal instructions are not split: their test is on
        unseen worlds), ``"all"`` ignores the split. Travel / place-at goals avoid the grid points next to the start
        cell (trivially reached at the first step).
        """
        if family not in FAMILIES:
            raise ValueError(f"Crafter instruction family={family!r}: use one of {FAMILIES}.")
        if split not in INSTRUCTION_SPLITS:
            raise ValueError(f"Crafter instruction split={split!r}: use one of {INSTRUCTION_SPLITS}.")
        if family == "multi" and k < 2:
            raise ValueError(f"family='multi' needs instruction_len >= 2, got {k}.")
        start = set(self.near_points(self.center))
        points = [(f"x{x}", f"y{y}") for x in self.xs for y in self.ys if (f"x{x}", f"y{y}") not in start] or sorted(start)
        single = {"achievement": 0, "travel": 1, "place": 2}
        while True:
            if family in single:
                return [self._goal(rng, single[family], points)]
            n = int(rng.integers(1, k + 1)) if family == "mixed" else int(rng.integers(2, min(k, 4) + 1))
            goals = [self._goal(rng, int(rng.choice(3, p=self.task_probs)), points) for _ in range(n)]
            if n == 1 or split == "all" or is_held_out(goals) == (split == "test"):
                return goals


FAMILIES = ("mixed", "achievement", "travel", "place", "multi")
INSTRUCTION_SPLITS = ("all", "train", "test")


def is_held_out(goals: Sequence[Sequence[str]]) -> bool:
    """Whether a multi-goal instruction belongs to the held-out fifth (``zlib.crc32`` of its text: stable across
    processes and machines, unlike ``hash``)."""
    text = " | ".join(" ".join(g) for g in goals)
    return len(goals) > 1 and zlib.crc32(text.encode()) % 5 == 0


def make_crafter_instruction(
    instruction_len: int = 5,
    area=(64, 64),
    size=(64, 64),
    view=(9, 9),
    length: int = 10000,
    grid_spacing: int = 8,
    radius: float = 2.0,
    task_probs: Sequence[float] = (0.6, 0.25, 0.15),
    max_events: int = 8,
    obs_mode: str = "pixels",
    render_mode: str | None = None,
    instruction: Sequence[str | Sequence[str]] | None = None,
    family: str = "mixed",
    split: str = "all",
) -> gym.Env:
    """``CrafterInstruction-v0``: ``InstructionWrapper(TrajectoryWrapper(CrafterEnv))`` with :class:`CrafterGoals`;
    ``obs_mode="symbolic"`` for the fast, render-free observation, ``render_mode="rgb_array"`` for videos, and
    ``instruction`` (e.g. ``["collect sapling", "place plant", "eat cow"]``) to give every episode that instruction
    instead of a sampled one; ``family`` / ``split``: which instructions are sampled (``CrafterGoals.sample``: e.g.
    train on ``split="train"``, evaluate multi-goal following on ``family="multi", split="test"``)."""
    from wrappers.instruction import InstructionWrapper

    goals = CrafterGoals(
        area=area if hasattr(area, "__len__") else (area, area),
        grid_spacing=grid_spacing,
        radius=radius,
        task_probs=task_probs,
    )
    goals.sample(np.random.default_rng(0), instruction_len, family, split)  # bad family / split raise here
    env = CrafterEnv(area=area, view=view, size=size, reward=False, length=length, obs_mode=obs_mode,
                     render_mode=render_mode)
    wrapped = InstructionWrapper(
        env,
        goals.vocabulary,
        instruction_len=instruction_len,
        goal_len=4,
        achieved_fn=goals.achieved,
        sampler=lambda rng: goals.sample(rng, instruction_len, family, split),
        max_events=max_events,
    )
    if instruction is not None:
        fixed = [g if isinstance(g, str) else tuple(g) for g in instruction]
        if isinstance(instruction, str) or not 1 <= len(fixed) <= instruction_len:
            raise ValueError(f"instruction must be a list of 1..instruction_len={instruction_len} goals (e.g. "
                             f"['collect sapling', 'eat cow']), got {instruction!r}.")
        for goal in fixed:
            wrapped.encode_goal(goal)  # unknown tokens raise here, naming the vocabulary
        wrapped.sampler = lambda rng: list(fixed)
    wrapped.crafter_goals = goals  # type: ignore[attr-defined]
    return wrapped
