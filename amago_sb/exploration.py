"""Exploration noise for data collection: AMAGO's bilevel schedule (arXiv 2310.09971, App. A; ``ExplorationWrapper``).

The noise level decays on two time scales, and each episode draws its own random scale on top:

* over training (``p = min(1, num_timesteps / anneal_steps)``): the level at the *start* of an episode goes linearly
  from ``eps_start`` to ``eps_end``, the level at its *end* from ``eps_end`` to ``eps_end / 5`` (the original: 1.0 ->
  0.05 and 0.05 -> 0.01);
* within each episode (``f = min(1, episode_step / horizon)``): the level goes linearly from the start value to the end
  value, so early steps of an episode (where a task is explored) are noisier than late ones (where a mistake costs the
  outcome);
* per episode: each env draws a multiplier ``m ~ U(0, 1)`` at the start of every episode, so some episodes are nearly
  greedy and some very noisy.

``eps = m * ((1 - f) * start(p) + f * end(p))``. ``horizon`` is the env's episode length (``max_episode_steps``; for a
trial, ``episodes x`` the inner length); when the env does not know it, the within-episode decay spans ``context_len``
steps. ``AMAGO(exploration_steps=None)`` (the default) anneals over the budget of the ``learn()`` call, as the original
anneals over its whole run.

* ``Discrete`` / ``MultiDiscrete``: epsilon-greedy, i.e. with probability ``eps`` a uniformly random action replaces the
  policy's (sampled) action;
* ``Box`` (policy actions in [-1, 1]): ``a + eps * N(0, 1)``, clipped to [-1, 1].

The executed (noisy) action is what the env sees, so it is also what the replay stores and what ``prev_action`` shows.

Custom schedules subclass :class:`EpisodicExploration` and override :meth:`~EpisodicExploration.epsilon`, which sees
each env's step within its episode (``self.episode_step``); pass the class as ``AMAGO(exploration_class=...,
exploration_kwargs=...)``. :class:`QuietCorridorExploration` is one: almost no noise in the middle of an episode and
the training-level schedule ``m * start(p)`` at its first and last steps, the schedule the original AMAGO uses on the
passive T-maze, where a single random step in the corridor makes the junction unreachable but the choice at the
junction must be explored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amago_sb.networks.distributions import ActionSpec

__all__ = ["EpisodicExploration", "QuietCorridorExploration"]


class EpisodicExploration:
    """Bilevel, per-episode-scaled epsilon-greedy / Gaussian noise (see the module docstring).

    Args:
        spec: the policy's :class:`ActionSpec`.
        n_envs: parallel envs (one multiplier each).
        eps_start, eps_end: noise level at the start of an episode, at the start / end of the annealing.
        anneal_steps: total env steps (all envs together) over which the levels anneal.
        horizon: steps over which the level decays within an episode (the episode length); ``None``: no decay
            within episodes (the start level throughout).
        seed: seed of the noise generator.
    """

    def __init__(
        self, spec: ActionSpec, n_envs: int, *, eps_start: float = 1.0, eps_end: float = 0.05, anneal_steps: int = 10_000,
        horizon: int | None = None, seed: int | None = None,
    ) -> None:
        if not 0.0 <= eps_end <= 1.0 or not 0.0 <= eps_start <= 1.0:
            raise ValueError(f"exploration levels must lie in [0, 1], got start={eps_start}, end={eps_end}.")
        if anneal_steps < 0:
            raise ValueError(f"exploration anneal_steps must be >= 0, got {anneal_steps}.")
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer))
                                    or horizon < 1):
            raise ValueError(f"exploration horizon must be an int >= 1 (the episode length) or None, got {horizon!r}.")
        self.spec, self.n_envs = spec, n_envs
        self.eps_start, self.eps_end, self.anneal_steps = eps_start, eps_end, anneal_steps
        self.horizon = None if horizon is None else int(horizon)
        self.rng = np.random.default_rng(seed)
        self.multiplier = self.rng.random(n_envs)
        self.episode_step = np.zeros(n_envs, np.int64)  # steps taken so far in each env's current episode

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (saved in checkpoints): the noise generator, each env's multiplier and episode step.
        A subclass with more state extends both methods; values must be numbers, strings, dicts, lists or arrays."""
        return {"rng": self.rng.bit_generator.state, "multiplier": self.multiplier.copy(),
                "episode_step": self.episode_step.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; per-env entries are restored only for the same number of envs."""
        self.rng.bit_generator.state = state["rng"]
        for key in ("multiplier", "episode_step"):
            value = state.get(key)
            if value is not None and len(value) == self.n_envs:
                getattr(self, key)[:] = value

    def _progress(self, num_timesteps: int) -> float:
        return 1.0 if self.anneal_steps == 0 else min(1.0, num_timesteps / self.anneal_steps)

    def level(self, num_timesteps: int) -> float:
        """Level at the start of an episode after ``num_timesteps`` total env steps (before the random scale)."""
        return self.eps_start + self._progress(num_timesteps) * (self.eps_end - self.eps_start)

    def end_level(self, num_timesteps: int) -> float:
        """Level at the end of an episode after ``num_timesteps`` total env steps (before the random scale)."""
        return self.eps_end * (1.0 - 0.8 * self._progress(num_timesteps))

    def new_episodes(self, done: np.ndarray) -> None:
        """Draw fresh multipliers for the envs whose episode just ended (``done`` ``(n_envs,)`` bool)."""
        idx = np.flatnonzero(done)
        if len(idx):
            self.multiplier[idx] = self.rng.random(len(idx))
            self.episode_step[idx] = 0

    def epsilon(self, num_timesteps: int) -> np.ndarray:
        """Noise level of each env for its next action, ``(n_envs,)``: ``m * ((1 - f) * start + f * end)``."""
        start = self.level(num_timesteps)
        if self.horizon is None:
            return self.multiplier * start
        f = np.minimum(1.0, self.episode_step / self.horizon)  # (n_envs,) position in the episode
        return self.multiplier * (start + f * (self.end_level(num_timesteps) - start))

    def __call__(self, actions: np.ndarray, num_timesteps: int) -> np.ndarray:
        """Noisy copy of the policy's actions ``(n_envs, ...)`` (Box actions in [-1, 1]); advances ``episode_step``."""
        eps = self.epsilon(num_timesteps)  # (n_envs,)
        self.episode_step += 1
        return self.spec.explore(actions, eps, self.rng)  # epsilon-greedy ids / Gaussian noise on Box actions


class QuietCorridorExploration(EpisodicExploration):
    """:class:`EpisodicExploration` with the level fixed at ``quiet_eps`` except on the first ``start_window`` and the
    last ``end_window`` steps of an episode of ``horizon`` steps, which get the training-level schedule
    ``m * level(num_timesteps)`` (quiet: ``start_window <= step < horizon - end_window``, ``step`` the 0-based index of
    the action within its episode).

    Args:
        horizon: episode length in steps (e.g. ``corridor_length + 1`` for the passive T-maze).
        start_window, end_window: how many steps at the start / end of the episode keep the regular schedule.
        quiet_eps: noise level in between (default ``0.5 / horizon``: on average half a random action per episode).
        **kwargs: the arguments of :class:`EpisodicExploration`.
    """

    def __init__(self, spec: ActionSpec, n_envs: int, *, horizon: int, start_window: int = 1, end_window: int = 3,
                 quiet_eps: float | None = None, **kwargs) -> None:
        if horizon < 1 or start_window < 0 or end_window < 0:
            raise ValueError(f"QuietCorridorExploration needs horizon >= 1 and windows >= 0, got horizon={horizon}, "
                             f"start_window={start_window}, end_window={end_window}.")
        kwargs.setdefault("horizon", horizon)
        super().__init__(spec, n_envs, **kwargs)
        self.horizon, self.start_window, self.end_window = int(horizon), int(start_window), int(end_window)
        self.quiet_eps = 0.5 / self.horizon if quiet_eps is None else float(quiet_eps)

    def epsilon(self, num_timesteps: int) -> np.ndarray:
        eps = self.multiplier * self.level(num_timesteps)  # the windows explore at the episode-start level
        horizon = int(self.horizon or 0)  # always set for this scheme
        quiet = (self.episode_step >= self.start_window) & (self.episode_step < horizon - self.end_window)
        return np.where(quiet, self.quiet_eps, eps)
