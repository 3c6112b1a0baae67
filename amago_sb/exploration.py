"""Exploration noise for data collection: AMAGO's per-episode random scale, annealed over training.

Each env draws a multiplier ``m ~ U(0, 1)`` at the start of every episode (so some episodes are nearly greedy and some
very noisy, AMAGO's "bilevel" schedule), and the noise level is ``eps = m * eps_t`` where ``eps_t`` goes linearly from
``eps_start`` to ``eps_end`` over ``anneal_steps`` total env steps.

* ``Discrete`` / ``MultiDiscrete``: epsilon-greedy, i.e. with probability ``eps`` a uniformly random action replaces the
  policy's (sampled) action;
* ``Box`` (policy actions in [-1, 1]): ``a + eps * N(0, 1)``, clipped to [-1, 1].

The executed (noisy) action is what the env sees, so it is also what the replay stores and what ``prev_action`` shows.
"""

from __future__ import annotations

import numpy as np

from amago_sb.networks.distributions import ActionSpec

__all__ = ["EpisodicExploration"]


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

    def level(self, num_timesteps: int) -> float:
        """``eps_t`` after ``num_timesteps`` total env steps."""
        frac = 1.0 if self.anneal_steps == 0 else min(1.0, num_timesteps / self.anneal_steps)
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def new_episodes(self, done: np.ndarray) -> None:
        """Draw fresh multipliers for the envs whose episode just ended (``done`` ``(n_envs,)`` bool)."""
        idx = np.flatnonzero(done)
        if len(idx):
            self.multiplier[idx] = self.rng.random(len(idx))

    def __call__(self, actions: np.ndarray, num_timesteps: int) -> np.ndarray:
        """Noisy copy of the policy's actions ``(n_envs, ...)`` (Box actions in [-1, 1])."""
        eps = self.multiplier * self.level(num_timesteps)  # (n_envs,)
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
