"""Meta-World ML1 and ML10 as trials: a hidden task per trial, train / held-out test tasks.

metaworld 3.x's ``ML1(task)`` benchmark holds 50 train and 50 test variations (goal positions) of one task such as
``reach-v3``; the goal is hidden from the observation (its slots are zeros). :class:`MetaWorldML1Env` draws a
variation of its ``split`` at every new task (``reset()``), keeps it with ``reset(options={"keep_task": True})``,
and reports ``info["is_success"]`` at the end of each episode (Meta-World's ``success`` at any step of it).
``MetaWorldML1-v0`` (:func:`make_metaworld_ml1`) is a :class:`~wrappers.trial.TrialWrapper` of ``episodes``
episodes over one variation: train with ``split="train"``, evaluate on the held-out ``split="test"`` goals.

``ML10`` holds 10 training task families (50 variations each) and 5 held-out families: :class:`MetaWorldML10Env`
draws a family and a variation per task, so the agent must infer both from the rewards of its trial
(``MetaWorldML10-v0``, :func:`make_metaworld_ml10`; ``info["task_name"]`` names the family). Every family shares the
39-dim observation and the 4-dim action of Meta-World.

Needs metaworld: ``pip install -e ".[metaworld]"``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["MetaWorldML1Env", "MetaWorldML10Env", "make_metaworld_ml1", "make_metaworld_ml10", "METAWORLD_HELP",
           "SPLITS"]

METAWORLD_HELP = 'MetaWorldML1 needs metaworld 3.x, an optional dependency: pip install -e ".[metaworld]".'
SPLITS = ("train", "test")
_BENCHMARKS: dict[tuple[str, int], Any] = {}  # building ML1 samples its tasks (seconds): once per (task, seed)


def _ml10(seed: int):
    try:
        import metaworld
    except ImportError as err:
        raise ImportError(METAWORLD_HELP.replace("MetaWorldML1", "MetaWorldML10")) from err
    key = ("ML10", seed)
    if key not in _BENCHMARKS:
        _BENCHMARKS[key] = metaworld.ML10(seed=seed)
    return _BENCHMARKS[key]


def _benchmark(task: str, seed: int):
    try:
        import metaworld
    except ImportError as err:
        raise ImportError(METAWORLD_HELP) from err
    key = (task, seed)
    if key not in _BENCHMARKS:
        if task not in metaworld.ML1.ENV_NAMES:
            import difflib

            close = difflib.get_close_matches(task, metaworld.ML1.ENV_NAMES, n=3)
            raise ValueError(f"MetaWorldML1 task={task!r} is not a Meta-World task" +
                             (f"; did you mean {', '.join(close)}?" if close else f"; one of {metaworld.ML1.ENV_NAMES}."))
        _BENCHMARKS[key] = metaworld.ML1(task, seed=seed)
    return _BENCHMARKS[key]


class _MetaWorldTasks(gym.Env):
    """A list of Meta-World tasks (variations, possibly of several families) with one world per family; a new task
    at every ``reset()`` unless ``options["keep_task"]`` (module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, name: str, classes: dict[str, Any], tasks: list, split: str, max_steps: int):
        if not isinstance(max_steps, (int, np.integer)) or not 1 <= max_steps <= 500:
            raise ValueError(f"{name} max_steps must be an int in [1, 500] (Meta-World's limit), got {max_steps!r}.")
        self.split, self.max_steps = split, int(max_steps)
        self.max_episode_length = self.max_steps
        self.classes, self.tasks = classes, tasks
        self._worlds: dict[str, Any] = {}
        self.world = self._world(tasks[0].env_name)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, self.world.observation_space.shape, np.float32)
        self.action_space = self.world.action_space
        self.task_id, self.t, self._success = -1, 0, False

    def _world(self, family: str):
        if family not in self._worlds:  # one MuJoCo model per family, built when first drawn
            self._worlds[family] = self.classes[family]()
        return self._worlds[family]

    @property
    def task_name(self) -> str:
        """The family of the current task (e.g. ``"reach-v3"``)."""
        return self.tasks[max(self.task_id, 0)].env_name

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """A new task of the split unless ``options["keep_task"]``; Meta-World's reset every episode."""
        super().reset(seed=seed)
        if self.task_id < 0 or seed is not None or not (options or {}).get("keep_task", False):
            self.task_id = int(self.np_random.integers(len(self.tasks)))
            self.world = self._world(self.task_name)
            self.world.set_task(self.tasks[self.task_id])
        obs, _ = self.world.reset(seed=int(self.np_random.integers(2**31)))
        self.t, self._success = 0, False
        return obs.astype(np.float32), {"task_id": self.task_id, "task_name": self.task_name}

    def step(self, action):
        """Meta-World's step and reward; truncated after ``max_steps``, with ``is_success`` at the end."""
        if self.task_id < 0:
            raise RuntimeError(f"{type(self).__name__}.step called before reset().")
        obs, reward, _, _, info = self.world.step(np.asarray(action, dtype=np.float32))
        self.t += 1
        self._success = self._success or bool(info.get("success", 0.0))
        truncated = self.t >= self.max_steps
        out = {"task_id": self.task_id, "task_name": self.task_name, "success": float(info.get("success", 0.0))}
        if truncated:
            out["is_success"] = self._success
        return obs.astype(np.float32), float(reward), False, truncated, out

    def goal(self) -> np.ndarray:
        """The hidden goal position of the current task (for evaluation and tests)."""
        return np.asarray(self.world._target_pos, dtype=np.float64).copy()

    def close(self) -> None:
        for world in self._worlds.values():
            world.close()


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name} split={split!r}: use 'train' (training tasks) or 'test' (held-out tasks).")


class MetaWorldML1Env(_MetaWorldTasks):
    """One Meta-World task family with a hidden goal (module docstring).

    Args:
        task: a Meta-World v3 task name, e.g. ``"reach-v3"``, ``"push-v3"``, ``"pick-place-v3"``.
        split: ``"train"`` (the 50 training goals) or ``"test"`` (the 50 held-out goals).
        max_steps: steps per episode (Meta-World allows at most 500).
        benchmark_seed: seed of ``metaworld.ML1`` (which goals make up the splits).
    """

    def __init__(self, task: str = "reach-v3", split: str = "train", max_steps: int = 500, benchmark_seed: int = 0):
        _check_split("MetaWorldML1", split)
        benchmark = _benchmark(task, int(benchmark_seed))
        tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        super().__init__("MetaWorldML1", {task: benchmark.train_classes[task]}, tasks, split, max_steps)


class MetaWorldML10Env(_MetaWorldTasks):
    """Meta-World ML10: a hidden family and goal per task (module docstring).

    Args:
        split: ``"train"`` (10 families x 50 goals) or ``"test"`` (5 held-out families x 50 goals).
        max_steps: steps per episode (Meta-World allows at most 500).
        benchmark_seed: seed of ``metaworld.ML10``.
    """

    def __init__(self, split: str = "train", max_steps: int = 500, benchmark_seed: int = 0):
        _check_split("MetaWorldML10", split)
        benchmark = _ml10(int(benchmark_seed))
        classes = benchmark.train_classes if split == "train" else benchmark.test_classes
        tasks = benchmark.train_tasks if split == "train" else benchmark.test_tasks
        super().__init__("MetaWorldML10", dict(classes), list(tasks), split, max_steps)


def make_metaworld_ml1(task: str = "reach-v3", split: str = "train", episodes: int = 3, max_steps: int = 500,
                       benchmark_seed: int = 0) -> gym.Env:
    """``MetaWorldML1-v0``: ``TrialWrapper`` of ``episodes`` episodes at one hidden goal of ``split``."""
    from wrappers.trial import TrialWrapper

    return TrialWrapper(MetaWorldML1Env(task, split, max_steps, benchmark_seed), episodes=episodes)


def make_metaworld_ml10(split: str = "train", episodes: int = 3, max_steps: int = 500, benchmark_seed: int = 0) -> gym.Env:
    """``MetaWorldML10-v0``: ``TrialWrapper`` of ``episodes`` episodes at one hidden task (family and goal) of
    ``split``."""
    from wrappers.trial import TrialWrapper

    return TrialWrapper(MetaWorldML10Env(split, max_steps, benchmark_seed), episodes=episodes)
