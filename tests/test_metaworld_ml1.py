"""Meta-World ML1 / ML10 trials: task hidden and kept within a trial, redrawn across trials, held-out tasks disjoint."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

import wrappers
from wrappers.envs.metaworld_ml1 import MetaWorldML1Env, MetaWorldML10Env

wrappers.register_all()
pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                reason='needs pip install -e ".[metaworld]"')


def _goals(env: MetaWorldML1Env) -> set[tuple[float, ...]]:
    out = set()
    for task in env.tasks:
        env.world.set_task(task)
        env.world.reset(seed=0)
        out.add(tuple(np.round(env.goal(), 6)))
    return out


def test_held_out_goals_are_disjoint_from_the_training_goals():
    train, test = MetaWorldML1Env("reach-v3", "train"), MetaWorldML1Env("reach-v3", "test")
    train_goals, test_goals = _goals(train), _goals(test)
    assert len(train_goals) == 50 and len(test_goals) == 50 and not train_goals & test_goals


def test_goal_is_hidden_kept_within_a_trial_and_redrawn_across_trials():
    env = gym.make("MetaWorldML1-v0", task="reach-v3", split="test", episodes=2, max_steps=20)
    inner = env.unwrapped
    obs, _ = env.reset(seed=0)
    goals, successes = [], 0
    for _ in range(3):
        seen, done = set(), False
        while not done:
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            assert np.all(obs["obs"][-3:] == 0.0)  # the goal slots of the observation are blank
            seen.add(tuple(np.round(inner.goal(), 6)))
            successes += "is_success" in info
            done = terminated or truncated
        assert len(seen) == 1
        goals.append(seen.pop())
        env.reset()
    assert successes == 6 and len(set(goals)) >= 2  # is_success at each inner episode's end; 50 goals to draw from


@pytest.mark.parametrize("kwargs, match", [({"split": "val"}, "use 'train'"),
                                           ({"max_steps": 501}, r"in \[1, 500\]"),
                                           ({"task": "reach-v2x"}, "did you mean reach-v3")])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaWorldML1Env(**kwargs)


def test_ml10_draws_hidden_families_and_holds_out_five_others():
    env = gym.make("MetaWorldML10-v0", split="train", episodes=2, max_steps=5)
    inner = env.unwrapped
    test = MetaWorldML10Env("test", max_steps=5)
    train_families = {t.env_name for t in inner.tasks}
    assert len(train_families) == 10 and len({t.env_name for t in test.tasks}) == 5
    assert not train_families & {t.env_name for t in test.tasks}  # held-out families, not only held-out goals
    families = []
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        names = {info["task_name"]}
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs["obs"].shape == (39,) and np.all(obs["obs"][-3:] == 0.0)  # goal hidden
            names.add(info["task_name"])
            done = terminated or truncated
        assert len(names) == 1  # the family stays for both episodes of the trial
        families.append(names.pop())
    assert len(set(families)) >= 2 and set(families) <= train_families
    with pytest.raises(ValueError, match="use 'train'"):
        MetaWorldML10Env("val")
