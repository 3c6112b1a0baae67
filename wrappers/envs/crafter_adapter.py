"""``Crafter-v0``: a gymnasium adapter of ``crafter.Env`` (Hafner 2021), which uses the old 4-tuple gym API.

* ``step`` returns the 5-tuple: ``terminated`` when the player died (crafter's ``info["discount"] == 0``),
  ``truncated`` when crafter's episode ``length`` ran out.
* Spaces are gymnasium spaces: ``Box(0, 255, (H, W, 3), uint8)`` images and ``Discrete(17)`` actions
  (``action_names`` lists them).
* Seedable: ``reset(seed=s)`` reseeds crafter's world generator, so the same seed gives the same world.
* ``info`` (at reset too): crafter's ``inventory``, ``achievements`` (counters), ``discount``, ``semantic`` (the
  ``area`` map of material/object ids), ``player_pos`` (x, y), plus ``player_facing`` (dx, dy),
  ``new_achievements`` (names whose counter increased in this step) and ``placed`` (list of
  ``(block, (x, y))`` placed in this step, located at the cell the player faced).
"""

from __future__ import annotations

from typing import Any

import crafter
import gymnasium as gym
import numpy as np
from crafter import constants
from gymnasium import spaces

__all__ = ["CrafterEnv", "ACHIEVEMENTS"]

ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)


def _pair(value, name: str) -> tuple[int, int]:
    pair = tuple(int(v) for v in (value if hasattr(value, "__len__") else (value, value)))
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"Crafter {name} must be a positive int or a pair of them, got {value!r}.")
    return pair  # type: ignore[return-value]


class CrafterEnv(gym.Env):
    """Gymnasium version of ``crafter.Env`` (module docstring). Arguments are crafter's.

    Args:
        area: world size in cells (crafter's default 64 x 64; smaller worlds generate faster).
        view: cells visible around the player.
        size: rendered image size in pixels; needs ``size >= 2 * view`` for crafter's item icons.
        reward: crafter's reward (health change / 10 + 1 per new achievement) if True, else 0.
        length: steps before truncation.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, area=(64, 64), view=(9, 9), size=(64, 64), reward: bool = True, length: int = 10000, render_mode=None):
        area, view, size = _pair(area, "area"), _pair(view, "view"), _pair(size, "size")
        if size[0] < 2 * view[0] or size[1] < 2 * view[1]:
            raise ValueError(f"Crafter size {size} is too small for view {view}: use size >= 2 * view (e.g. {2 * view[0]}).")
        if min(area) < 12:
            raise ValueError(f"Crafter area {area} is too small: crafter's world generator needs area >= 12 x 12.")
        if length < 1:
            raise ValueError(f"Crafter length must be >= 1, got {length}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Crafter render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.render_mode = render_mode
        self.area = area
        self.max_episode_length = int(length)
        self._env = crafter.Env(area=area, view=view, size=size, reward=reward, length=length, seed=0)
        self.observation_space = spaces.Box(0, 255, (size[1], size[0], 3), np.uint8)
        self.action_space = spaces.Discrete(len(constants.actions))
        self.action_names: tuple[str, ...] = tuple(constants.actions)
        self._seeded = False
        self._last_obs: np.ndarray | None = None
        self._counts: dict[str, int] = {}

    def _info(self, info: dict | None = None) -> dict[str, Any]:
        player = self._env._player
        out = (
            dict(info)
            if info is not None
            else {
                "inventory": player.inventory.copy(),
                "achievements": player.achievements.copy(),
                "discount": 1.0,
                "semantic": self._env._sem_view(),
                "player_pos": player.pos,
                "reward": 0.0,
            }
        )
        out["player_pos"] = np.array(out["player_pos"], np.int64)
        out["player_facing"] = np.array(player.facing, np.int64)
        counts = out["achievements"]
        out["new_achievements"] = [name for name in ACHIEVEMENTS if counts.get(name, 0) > self._counts.get(name, 0)]
        target = tuple(int(v) for v in out["player_pos"] + out["player_facing"])
        out["placed"] = [(name[len("place_") :], target) for name in out["new_achievements"] if name.startswith("place_")]
        self._counts = dict(counts)
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Generate a world; with ``seed``, the world is a function of the seed."""
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self._env._seed = int(self.np_random.integers(2**31 - 1))
            self._env._episode = 0
            self._seeded = True
        self._counts = {}
        obs = self._env.reset()
        self._last_obs = obs
        return obs, self._info()

    def step(self, action):
        """One crafter step, converted to the gymnasium 5-tuple."""
        if self._last_obs is None:
            raise RuntimeError("Crafter step() called before reset().")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"Crafter action must be in 0..{self.action_space.n - 1}, got {action!r}.")
        obs, reward, done, info = self._env.step(int(action))
        terminated = bool(info["discount"] == 0.0)
        truncated = bool(done and not terminated)
        self._last_obs = obs
        return obs, float(reward), terminated, truncated, self._info(info)

    def render(self):
        """The last image observation (``render_mode="rgb_array"``)."""
        return None if self._last_obs is None else self._last_obs.copy()
