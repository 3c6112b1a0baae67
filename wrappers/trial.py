"""``TrialWrapper``: meta-RL trials. One outer episode = ``episodes`` inner episodes of the same task.

Between inner episodes the env is reset with ``options={"keep_task": True}`` and the outer episode goes on, so the
agent's memory spans the whole trial (RL^2 / AMAGO "rolling through resets"). The timestep at an inner start has
``reset=1`` but ``prev_action`` / ``prev_reward`` are those of the last transition of the previous inner episode, so
the agent sees how it ended. ``time`` counts outer steps, divided by ``episodes * max_episode_steps`` of the inner
env when that is known (else the raw outer step count).

The trial has a fixed horizon of ``episodes`` inner episodes: when the last one ends by a time limit, the trial ends as
``terminated`` (nothing follows it to bootstrap from, as in the original AMAGO's fixed-horizon rollouts), unless
``truncated_is_done=False``.

``info`` keys added: ``"trial_episode"`` (index of the inner episode the returned observation belongs to),
``"inner_episode_done"`` (True on the step that ended an inner episode), ``"inner_terminated"``,
``"inner_truncated"`` and, on that step, ``"inner_final_observation"`` (the inner episode's last timestep).
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import numpy as np

from wrappers.trajectory_wrapper import ensure_trajectory_env, env_name

__all__ = ["TrialWrapper", "KeepTaskError"]


class KeepTaskError(ValueError):
    """The wrapped env does not keep its task when reset with ``options={"keep_task": True}``."""


def _task_id(env: gym.Env) -> Any:
    try:
        return env.get_wrapper_attr("task_id")
    except AttributeError:
        return None


def _accepts_options(env: gym.Env) -> bool:
    params = inspect.signature(type(env.unwrapped).reset).parameters
    return "options" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class TrialWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """k inner episodes of one task per outer episode (module docstring).

    Args:
        env: an env whose ``reset(options={"keep_task": True})`` keeps the task (wrapped with ``TrajectoryWrapper``
            here if it is not in trajectory form yet). Envs that expose a ``task_id`` attribute are checked: a
            ``task_id`` that changes on an inner reset raises :class:`KeepTaskError`.
        episodes: inner episodes per trial (``k >= 1``).
        truncated_is_done: the end of the trial by the last inner episode's time limit is a termination.
    """

    def __init__(self, env: gym.Env, episodes: int = 2, truncated_is_done: bool = True):
        gym.utils.RecordConstructorArgs.__init__(self, episodes=episodes, truncated_is_done=truncated_is_done)
        env = ensure_trajectory_env(env)
        gym.Wrapper.__init__(self, env)
        if not isinstance(episodes, (int, np.integer)) or episodes < 1:
            raise ValueError(f"TrialWrapper episodes must be a positive int, got {episodes!r}.")
        if not _accepts_options(env):
            raise KeepTaskError(
                f"{env_name(env)}.reset does not accept `options`, so it cannot keep its task between the episodes of "
                "a trial; add `options=None` to its reset and keep the task when options.get('keep_task') is true."
            )
        self.episodes = int(episodes)
        self.truncated_is_done = bool(truncated_is_done)
        try:
            inner = env.get_wrapper_attr("max_episode_steps")
        except AttributeError:
            inner = None
        self.max_episode_steps: int | None = self.episodes * int(inner) if inner else None
        self.trial_episode = 0
        self._outer_step = 0
        self._task = None

    def _time(self) -> np.ndarray:
        t = float(self._outer_step)
        return np.array([t / self.max_episode_steps if self.max_episode_steps else t], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a trial: reset the env with a new task (``options`` pass through)."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.trial_episode, self._outer_step = 0, 0
        self._task = _task_id(self.env)
        obs = {**obs, "time": self._time()}
        return obs, {**info, "trial_episode": 0, "inner_episode_done": False}

    def step(self, action):
        """Step; when an inner episode ends before the last one, reset the env with ``keep_task`` and go on."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._outer_step += 1
        info = {**info, "inner_episode_done": bool(terminated or truncated)}
        info.update(inner_terminated=bool(terminated), inner_truncated=bool(truncated))
        if (terminated or truncated) and self.trial_episode < self.episodes - 1:
            info["inner_final_observation"] = obs
            new_obs, reset_info = self.env.reset(options={"keep_task": True})
            task = _task_id(self.env)
            if self._task is not None and task != self._task:
                raise KeepTaskError(
                    f"{env_name(self.env)} changed its task_id from {self._task!r} to {task!r} on reset(options="
                    "{'keep_task': True}); it ignores keep_task. Keep the task in reset when options.get('keep_task')."
                )
            self.trial_episode += 1
            obs = {**new_obs, "prev_action": obs["prev_action"], "prev_reward": obs["prev_reward"]}
            info.update({f"reset_{key}": value for key, value in reset_info.items()})
            terminated = truncated = False
        elif truncated and self.truncated_is_done:  # the trial's fixed horizon is over: nothing to bootstrap from
            terminated, truncated = True, False
        obs = {**obs, "time": self._time()}
        info["trial_episode"] = self.trial_episode
        return obs, reward, bool(terminated), bool(truncated), info
