"""Aggregate scores over envs: normalized returns, IQM with 95% bootstrap intervals (rliable), win counts.

Each env's final returns are normalized as ``(return - random) / (best - random)``: ``random`` is the mean return of
uniformly random actions (measured here, seeded, and cached per env id), ``best`` the best-known return (1.0 for every
POPGym env: their episode returns are scaled into [-1, 1] and the optimum reaches 1). The IQM (the mean of the middle
50% of all normalized runs) comes with a 95% percentile-bootstrap interval drawn as rliable's stratified bootstrap with
``task_bootstrap=True`` (envs resampled, then seeds within each env), so it reflects both seed noise and which envs
were picked. (rliable itself is installed for rl_zoo3's plots, but its bootstrap breaks with arch >= 8, which pandas 3
needs; these few lines compute the same thing.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gymnasium as gym
import numpy as np

__all__ = ["BEST_KNOWN", "best_known_return", "random_return", "normalize", "iqm", "iqm_interval", "wins"]

# best-known returns of env families (id prefix -> return); POPGym scales every episode return into [-1, 1]
BEST_KNOWN: dict[str, float] = {"popgym-": 1.0}
_RANDOM_CACHE: dict[tuple[str, int, int], float] = {}


def best_known_return(env_id: str) -> float | None:
    """The best-known episode return of ``env_id`` (``None`` when the family has none on record)."""
    return next((v for prefix, v in BEST_KNOWN.items() if env_id.startswith(prefix)), None)


def random_return(env_id: str, episodes: int = 20, seed: int = 0) -> float:
    """Mean episode return of uniformly random actions on the plain env (seeded; cached per process)."""
    key = (env_id, episodes, seed)
    if key not in _RANDOM_CACHE:
        import wrappers  # noqa: F401  (registers the ids)

        env = gym.make(env_id)
        env.action_space.seed(seed)
        returns = []
        for i in range(episodes):
            env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
        _RANDOM_CACHE[key] = float(np.mean(returns))
    return _RANDOM_CACHE[key]


def normalize(score: float, random: float, best: float) -> float:
    """``(score - random) / (best - random)``: 0 = random policy, 1 = best known."""
    if best <= random:
        raise ValueError(f"best-known return {best} must exceed the random return {random}.")
    return (score - random) / (best - random)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all values (25% trimmed from each end)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(scores, dtype=np.float64).ravel(), 0.25))


def iqm_interval(scores: Mapping[str, np.ndarray], reps: int = 5000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{algo: (iqm, low, high)}`` from ``scores[algo]`` of shape ``(n_seeds, n_envs)`` (normalized).

    The interval is the percentile bootstrap of rliable's stratified scheme with ``task_bootstrap``: each replicate
    draws the envs with replacement, then, within each drawn env, its seeds with replacement.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for algo, table in scores.items():
        table = np.asarray(table, dtype=np.float64)
        n_seeds, n_envs = table.shape
        envs = rng.integers(n_envs, size=(reps, n_envs))
        runs = rng.integers(n_seeds, size=(reps, n_seeds, n_envs))
        samples = table[runs, envs[:, None, :]]  # (reps, n_seeds, n_envs)
        from scipy.stats import trim_mean

        stats = trim_mean(samples.reshape(reps, -1), 0.25, axis=1)
        tail = (1.0 - confidence) / 2.0
        out[algo] = (iqm(table), float(np.quantile(stats, tail)), float(np.quantile(stats, 1.0 - tail)))
    return out


def wins(means: Mapping[str, Mapping[str, float]], algo: str, other: str, envs: Sequence[str]) -> tuple[int, int]:
    """``(envs where algo's mean > other's, envs where both have a result)`` from ``means[env][algo]``."""
    both = [e for e in envs if algo in means.get(e, {}) and other in means.get(e, {})]
    return sum(means[e][algo] > means[e][other] for e in both), len(both)
