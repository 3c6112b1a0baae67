"""Dark Key-To-Door: the task persists within a trial and changes across trials, rewards, bad arguments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wrappers
from wrappers.envs.dark_key_to_door import DarkKeyToDoorEnv

wrappers.register_all()


def _walk_to(env: DarkKeyToDoorEnv, target: np.ndarray) -> tuple[float, bool]:
    """Step straight to ``target``; returns (reward collected, terminated)."""
    total = 0.0
    while not np.array_equal(env.pos, target):
        dx, dy = np.sign(target - env.pos)
        action = 4 if dx > 0 else 3 if dx < 0 else 2 if dy > 0 else 1
        _, reward, terminated, truncated, _ = env.step(action)
        total += reward
        if terminated or truncated:
            return total, terminated
    return total, False


def test_plain_env_passes_gymnasium_checks_and_pays_key_then_door():
    env = DarkKeyToDoorEnv(size=6, max_steps=200)
    check_env(env, skip_render_check=True)
    env.reset(seed=3)
    reward, terminated = _walk_to(env, env.door) if not np.array_equal(env.pos, env.door) else (0.0, False)
    assert reward == 0.0 and not terminated  # the door without the key: nothing
    reward, terminated = _walk_to(env, env.key)
    assert reward == 1.0 and env.has_key and not terminated
    reward, terminated = _walk_to(env, env.door)
    assert reward == 1.0 and terminated


def test_task_persists_within_a_trial_and_changes_across_trials():
    env = gym.make("DarkKeyToDoor-v0", episodes=3, size=5, max_steps=10)
    inner = env.unwrapped
    env.reset(seed=0)
    trials = []
    for _ in range(3):
        cells, episodes, done = set(), 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            cells.add((tuple(inner.key), tuple(inner.door), info["task_id"]))
            episodes += bool(info.get("is_success") is not None)
            done = terminated or truncated
        assert len(cells) == 1 and episodes == 3  # one key/door placement over the trial's 3 episodes
        trials.append(cells.pop())
        env.reset()
    assert len(set(trials)) == 3


def test_the_agent_respawns_at_random_each_episode():
    env = DarkKeyToDoorEnv(size=9)
    env.reset(seed=1)
    starts = {tuple(env.reset(options={"keep_task": True})[0]) for _ in range(20)}
    assert len(starts) > 5


@pytest.mark.parametrize("kwargs, match", [({"size": 1}, "size must be an int >= 2"),
                                           ({"max_steps": 0}, "max_steps must be an int >= 1"),
                                           ({"size": 2.5}, "size must be an int")])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DarkKeyToDoorEnv(**kwargs)
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        gym.make("DarkKeyToDoor-v0", episodes=0)
