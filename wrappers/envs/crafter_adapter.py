"""``Crafter-v0``: a gymnasium adapter of ``crafter.Env`` (Hafner 2021), which uses the old 4-tuple gym API.

* ``step`` returns the 5-tuple: ``terminated`` when the player died (crafter's ``info["discount"] == 0``),
  ``truncated`` when crafter's episode ``length`` ran out.
* Spaces are gymnasium spaces: ``Box(0, 255, (H, W, 3), uint8)`` images and ``Discrete(17)`` actions
  (``action_names`` lists them).
* ``obs_mode="symbolic"``: no rendering at all (crafter renders an image in every ``step``; this mode skips it, the
  expensive part of a step). The observation is a ``Dict``: ``map`` (``MultiDiscrete``, the material / object id of
  each cell of the player's local view, the same ``view[0] x (view[1] - item rows)`` cells the image shows, 0 off the
  world; ids as crafter's semantic map: 1-12 materials, 13-18 player, cow, zombie, skeleton, arrow, plant),
  ``inventory`` (the 16 counts of ``constants.items``), ``position`` (player cell / area, in [0, 1)) and ``facing``
  (dx, dy). The world, the dynamics and the infos are those of the pixel mode, step for step.
  ``render()`` (``render_mode="rgb_array"``) draws the image on demand in both modes.
* Seedable: ``reset(seed=s)`` reseeds crafter's world generator, so the same seed gives the same world.
* Deterministic: crafter keeps each world chunk's objects in a ``set`` of objects hashed by memory address, and picks
  creatures to despawn by index into it, so two runs with the same seed and actions diverge after a few dozen steps
  (measured: step 9). Importing this module gives crafter's objects a hash that is their creation number within their
  world (:func:`_deterministic_object_hashes`), which makes a seed and an action sequence determine the episode.
* Fast resets: worlds come from ``wrappers.envs.crafter_worldgen`` (crafter's recipe with the noise evaluated in
  compiled batches: the same worlds and random draws, tested; about 3.5x faster).
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
from crafter import objects as crafter_objects
from gymnasium import spaces

from wrappers.envs import crafter_worldgen

__all__ = ["CrafterEnv", "ACHIEVEMENTS", "OBS_MODES"]

OBS_MODES = ("pixels", "symbolic")

ACHIEVEMENTS: tuple[str, ...] = tuple(constants.achievements)


def _deterministic_object_hashes() -> None:
    """Hash crafter objects by their creation number within their world (module docstring): same seed and actions,
    same set iteration order, same episode. Equality stays identity; applied once per process."""
    if getattr(crafter_objects.Object, "_amago_deterministic", False):
        return
    original_init = crafter_objects.Object.__init__

    def __init__(self, world, pos):
        original_init(self, world, pos)
        world._amago_next_uid = getattr(world, "_amago_next_uid", 0) + 1
        self._amago_uid = world._amago_next_uid

    def distance(self, target):  # crafter's L1 distance of two cells, in integer arithmetic (same values, ~10x faster)
        t = target.pos if hasattr(target, "pos") else target
        return abs(int(t[0]) - int(self.pos[0])) + abs(int(t[1]) - int(self.pos[1]))

    crafter_objects.Object.__init__ = __init__
    crafter_objects.Object.__hash__ = lambda self: self._amago_uid
    crafter_objects.Object.distance = distance
    crafter_objects.Object._amago_deterministic = True


_deterministic_object_hashes()
crafter_worldgen.install()  # the same worlds, generated ~3x faster


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

    def __init__(self, area=(64, 64), view=(9, 9), size=(64, 64), reward: bool = True, length: int = 10000, render_mode=None,
                 obs_mode: str = "pixels"):
        area, view, size = _pair(area, "area"), _pair(view, "view"), _pair(size, "size")
        if size[0] < 2 * view[0] or size[1] < 2 * view[1]:
            raise ValueError(f"Crafter size {size} is too small for view {view}: use size >= 2 * view (e.g. {2 * view[0]}).")
        if min(area) < 12:
            raise ValueError(f"Crafter area {area} is too small: crafter's world generator needs area >= 12 x 12.")
        if length < 1:
            raise ValueError(f"Crafter length must be >= 1, got {length}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"Crafter render_mode must be None or 'rgb_array', got {render_mode!r}.")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"Crafter obs_mode must be one of {OBS_MODES}, got {obs_mode!r}.")
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.area = area
        self.max_episode_length = int(length)
        self._env = crafter.Env(area=area, view=view, size=size, reward=reward, length=length, seed=0)
        if obs_mode == "symbolic":
            self._env._obs = self._skip_render  # crafter's per-step render, skipped (render() still draws on demand)
            self._grid = np.array(self._env._local_view._grid)  # (w, h) cells of the local view
            n_ids = len(self._env._world._mat_ids) + len(self._env._sem_view._obj_ids)
            self.observation_space = spaces.Dict({
                "map": spaces.MultiDiscrete(np.full((int(self._grid[0]), int(self._grid[1])), n_ids), np.int64),
                "inventory": spaces.Box(0.0, 9.0, (len(constants.items),), np.float32),
                "position": spaces.Box(0.0, 1.0, (2,), np.float32),
                "facing": spaces.Box(-1.0, 1.0, (2,), np.float32),
            })
        else:
            self.observation_space = spaces.Box(0, 255, (size[1], size[0], 3), np.uint8)
        self.action_space = spaces.Discrete(len(constants.actions))
        self.action_names: tuple[str, ...] = tuple(constants.actions)
        self._seeded = False
        self._last_obs: Any = None  # the last observation (image, or the symbolic dict)
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
        self._env._world._amago_next_uid = 0  # creation numbers restart with every world
        obs = self._env.reset()
        info = self._info()
        self._last_obs = obs if self.obs_mode == "pixels" else self._symbolic(info["semantic"])
        return self._last_obs, info

    def step(self, action):
        """One crafter step, converted to the gymnasium 5-tuple."""
        if self._last_obs is None:
            raise RuntimeError("Crafter step() called before reset().")
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"Crafter action must be in 0..{self.action_space.n - 1}, got {action!r}.")
        obs, reward, done, info = self._env.step(int(action))
        terminated = bool(info["discount"] == 0.0)
        truncated = bool(done and not terminated)
        info = self._info(info)
        self._last_obs = obs if self.obs_mode == "pixels" else self._symbolic(info["semantic"])
        return self._last_obs, float(reward), terminated, truncated, info

    def _skip_render(self) -> None:
        """Stand-in for crafter's per-step render that draws the same random numbers from the world's generator (at
        night the image gets noise from it), so that the symbolic mode's worlds evolve exactly as the pixel mode's."""
        env = self._env
        if env._world.daylight < 0.5:
            unit = np.asarray(env._size) // np.asarray(env._view)
            env._world.random.uniform(32, 127, tuple(self._grid * unit))

    def _symbolic(self, semantic: np.ndarray) -> dict[str, np.ndarray]:
        """The symbolic observation (module docstring) from crafter's semantic map of the whole area."""
        player = self._env._player
        w, h = int(self._grid[0]), int(self._grid[1])
        x0, y0 = int(player.pos[0]) - w // 2, int(player.pos[1]) - h // 2
        local = np.zeros((w, h), np.int64)  # 0 off the world, as the image shows black there
        xs, ys = slice(max(x0, 0), min(x0 + w, semantic.shape[0])), slice(max(y0, 0), min(y0 + h, semantic.shape[1]))
        local[xs.start - x0: xs.stop - x0, ys.start - y0: ys.stop - y0] = semantic[xs, ys]
        return {
            "map": local,
            "inventory": np.array([player.inventory[k] for k in constants.items], np.float32),
            "position": (np.asarray(player.pos, np.float32) / np.asarray(self.area, np.float32)),
            "facing": np.asarray(player.facing, np.float32),
        }

    def render(self):
        """The current image (``render_mode="rgb_array"``): the observation in pixel mode, drawn on demand otherwise."""
        if self._last_obs is None:
            return None
        if self.obs_mode == "pixels":
            return self._last_obs.copy()
        random = self._env._world.random  # drawing uses it at night: keep the world's future unchanged
        state = random.get_state()
        try:
            return self._env.render()
        finally:
            random.set_state(state)
