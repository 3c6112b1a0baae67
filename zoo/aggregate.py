"""Aggregate scores over envs: normalized returns, IQM with 95% bootstrap intervals (rliable), win counts.

Each env's final returns are normalized as ``(return - random) / (best - random)``: ``random`` is the mean return of
uniformly random actions (measured here, seeded, and cached per env id), ``best`` the best-known return (1.0 for every
POPGym env: their episode returns are scaled into [-1, 1] and the optimum reaches 1). The IQM (the mean of the middle
50% of all normalized runs) comes with a 95% interval from rliable's stratified bootstrap with ``task_bootstrap=True``
(envs resampled, then seeds within each env), so it reflects both seed noise and which envs were picked.
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
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


def iqm_interval(scores: Mapping[str, np.ndarray], reps: int = 5000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{algo: (iqm, low, high)}`` from ``scores[algo]`` of shape ``(n_seeds, n_envs)`` (normalized): rliable's
    percentile interval from its stratified bootstrap with ``task_bootstrap`` (envs resampled, then seeds within
    each env)."""
    import warnings

    from rliable import library as rly
    from rliable import metrics

    with warnings.catch_warnings():  # arch 7 deprecates the RandomState rliable passes
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            {a: np.asarray(t, dtype=np.float64) for a, t in scores.items()},
            lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, task_bootstrap=True,
            confidence_interval_size=confidence, random_state=np.random.RandomState(seed))
    return {a: (float(point[a][0]), float(interval[a][0][0]), float(interval[a][1][0])) for a in scores}


def wins(means: Mapping[str, Mapping[str, float]], algo: str, other: str, envs: Sequence[str]) -> tuple[int, int]:
    """``(envs where algo's mean > other's, envs where both have a result)`` from ``means[env][algo]``."""
    both = [e for e in envs if algo in means.get(e, {}) and other in means.get(e, {})]
    return sum(means[e][algo] > means[e][other] for e in both), len(both)
