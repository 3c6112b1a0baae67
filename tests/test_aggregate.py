"""Benchmark aggregates: IQM, its bootstrap interval, normalization by real random-policy returns, win counts."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.aggregate import best_known_return, iqm, iqm_interval, normalize, random_return, wins


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 100.0]])) == pytest.approx(3.5)  # mean of 2..5


def test_interval_brackets_the_point_and_separates_distinct_algorithms():
    rng = np.random.default_rng(1)
    good, bad = rng.normal(0.8, 0.05, (3, 16)), rng.normal(0.2, 0.05, (3, 16))
    out = iqm_interval({"good": good, "bad": bad}, reps=1000)
    for point, low, high in out.values():
        assert low <= point <= high and high - low > 0
    assert out["good"][1] > out["bad"][2]  # non-overlapping
    single = iqm_interval({"one_seed": good[:1]}, reps=500)["one_seed"]
    assert single[2] - single[1] > 0  # envs are resampled too: one seed still gives an interval


def test_normalize_and_its_bad_input():
    assert normalize(1.0, -0.5, 1.0) == 1.0 and normalize(-0.5, -0.5, 1.0) == 0.0
    with pytest.raises(ValueError, match="must exceed the random return"):
        normalize(0.0, 1.0, 1.0)


def test_random_return_of_a_real_popgym_env_is_seeded():
    from zoo import aggregate

    first = random_return("popgym-RepeatPreviousEasy-v0", episodes=3, seed=7)
    aggregate._RANDOM_CACHE.clear()  # measured again, not cached
    assert first == random_return("popgym-RepeatPreviousEasy-v0", episodes=3, seed=7)
    assert -1.0 <= first < 0.0  # random guessing of 4 cards loses on average
    assert best_known_return("popgym-RepeatPreviousEasy-v0") == 1.0 and best_known_return("CartPole-v1") is None


def test_wins_counts_only_envs_with_both_results():
    means = {"a": {"amago": 1.0, "ppo": 0.5}, "b": {"amago": 0.1, "ppo": 0.2}, "c": {"amago": 1.0}}
    assert wins(means, "amago", "ppo", ["a", "b", "c"]) == (1, 2)
