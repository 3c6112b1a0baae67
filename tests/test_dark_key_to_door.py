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


def test_enjoy_splits_trial_returns_into_inner_episodes():
    from amago_sb import AMAGO
    from zoo.enjoy import run_episodes
    from zoo.envs import make_vec_env

    env = make_vec_env("DarkKeyToDoor-v0", "amago", 1, seed=0, env_kwargs={"episodes": 3, "size": 3, "max_steps": 8})
    model = AMAGO("Transformer", env, seed=0, batch_size=4, context_len=25,
                  policy_kwargs={"d_model": 16, "n_layers": 1, "n_heads": 2})
    inner: list[list[float]] = []
    returns, lengths, _ = run_episodes(model, env, 4, deterministic=False, inner=inner)
    assert len(inner) == 4 and all(len(trial) == 3 for trial in inner)
    assert [sum(t) for t in inner] == pytest.approx(returns) and max(returns) > 0  # a 3 x 3 room: keys get found
