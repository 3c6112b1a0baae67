"""Exploration noise for data collection: AMAGO's per-episode random scale, annealed over training.

Each env draws a multiplier ``m ~ U(0, 1)`` at the start of every episode (so some episodes are nearly greedy and some
very noisy, AMAGO's "bilevel" schedule), and the noise level is ``eps = m * eps_t`` where ``eps_t`` goes linearly from
``eps_start`` to ``eps_end`` over ``anneal_steps`` total env steps.

* ``Discrete`` / ``MultiDiscrete``: epsilon-greedy, i.e. with probability ``eps`` a uniformly random action replaces the
  policy's (sampled) action;
* ``Box`` (policy actions in [-1, 1]): ``a + eps * N(0, 1)``, clipped to [-1, 1].

The executed (noisy) action is what the env sees, so it is also what the replay stores and what ``prev_action`` shows.

Custom schedules subclass :class:`EpisodicExploration` and override :meth:`~EpisodicExploration.epsilon`, which sees
each env's step within its episode (``self.episode_step``); pass the class as ``AMAGO(exploration_class=...,
exploration_kwargs=...)``. :class:`QuietCorridorExploration` is one: almost no noise in the middle of an episode and
the regular schedule at its first and last steps, the schedule the original AMAGO uses on the passive T-maze, where a
single random step in the corridor makes the junction unreachable but the choice at the junction must be explored.
"""

from __future__ import annotations

import numpy as np

from amago_sb.networks.distributions import ActionSpec

__all__ = ["EpisodicExploration", "QuietCorridorExploration"]


class EpisodicExploration:
    """Per-episode-scaled epsilon-greedy / Gaussian noise (see the module docstring).

    Args:
        spec: the policy's :class:`ActionSpec`.
        n_envs: parallel envs (one multiplier each).
        eps_start, eps_end: noise level at the start / end of the annealing.
        anneal_steps: total env steps (all envs together) over which ``eps_t`` anneals.
        seed: seed of the noise generator.
    """

    def __init__(
        self, spec: ActionSpec, n_envs: int, *, eps_start: float = 1.0, eps_end: float = 0.05, anneal_steps: int = 10_000,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= eps_end <= 1.0 or not 0.0 <= eps_start <= 1.0:
            raise ValueError(f"exploration levels must lie in [0, 1], got start={eps_start}, end={eps_end}.")
        if anneal_steps < 0:
            raise ValueError(f"exploration anneal_steps must be >= 0, got {anneal_steps}.")
        self.spec, self.n_envs = spec, n_envs
        self.eps_start, self.eps_end, self.anneal_steps = eps_start, eps_end, anneal_steps
        self.rng = np.random.default_rng(seed)
        self.multiplier = self.rng.random(n_envs)
        self.episode_step = np.zeros(n_envs, np.int64)  # steps taken so far in each env's current episode

    def level(self, num_timesteps: int) -> float:
        """``eps_t`` after ``num_timesteps`` total env steps."""
        frac = 1.0 if self.anneal_steps == 0 else min(1.0, num_timesteps / self.anneal_steps)
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def new_episodes(self, done: np.ndarray) -> None:
        """Draw fresh multipliers for the envs whose episode just ended (``done`` ``(n_envs,)`` bool)."""
        idx = np.flatnonzero(done)
        if len(idx):
            self.multiplier[idx] = self.rng.random(len(idx))
            self.episode_step[idx] = 0

    def epsilon(self, num_timesteps: int) -> np.ndarray:
        """Noise level of each env for its next action, ``(n_envs,)``: ``multiplier * eps_t``."""
        return self.multiplier * self.level(num_timesteps)

    def __call__(self, actions: np.ndarray, num_timesteps: int) -> np.ndarray:
        """Noisy copy of the policy's actions ``(n_envs, ...)`` (Box actions in [-1, 1]); advances ``episode_step``."""
        eps = self.epsilon(num_timesteps)  # (n_envs,)
        self.episode_step += 1
        if self.spec.kind == "box":
            noise = self.rng.standard_normal(actions.shape).astype(actions.dtype)
            return np.clip(actions + eps.reshape(-1, *([1] * (actions.ndim - 1))) * noise, -1.0, 1.0)
        out = actions.copy()
        swap = self.rng.random(self.n_envs) < eps
        if swap.any():
            k = int(swap.sum())
            if self.spec.kind == "discrete":
                out[swap] = self.rng.integers(0, self.spec.n, size=k)
            else:
                out[swap] = np.stack([self.rng.integers(0, n, size=k) for n in self.spec.nvec], axis=-1)
        return out


class QuietCorridorExploration(EpisodicExploration):
    """:class:`EpisodicExploration` with the level fixed at ``quiet_eps`` except on the first ``start_window`` and the
    last ``end_window`` steps of an episode of ``horizon`` steps, which keep the regular schedule (quiet: ``start_window
    <= step < horizon - end_window``, ``step`` the 0-based index of the action within its episode).

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
        super().__init__(spec, n_envs, **kwargs)
        self.horizon, self.start_window, self.end_window = int(horizon), int(start_window), int(end_window)
        self.quiet_eps = 0.5 / self.horizon if quiet_eps is None else float(quiet_eps)

    def epsilon(self, num_timesteps: int) -> np.ndarray:
        eps = super().epsilon(num_timesteps)
        quiet = (self.episode_step >= self.start_window) & (self.episode_step < self.horizon - self.end_window)
        return np.where(quiet, self.quiet_eps, eps)
