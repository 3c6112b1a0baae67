"""Every POPGym env through the registered ``popgym-<Name>-v0`` ids (real popgym package)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import popgym.envs
import pytest
from gymnasium.utils.env_checker import check_env

import wrappers  # noqa: F401  (registers the ids)
from wrappers import is_trajectory_space
from wrappers.envs.popgym_adapter import make_popgym, popgym_env_ids


def test_all_popgym_envs_make_and_step():
    ids = popgym_env_ids()
    assert len(ids) == len(popgym.envs.ALL) == 48  # the 6 Labyrinth envs included (mazelib)
    for env_id in ids:
        assert not is_trajectory_space(gym.make(env_id).observation_space), env_id  # plain by default, as every id
        env = gym.make(env_id, trajectory=True)
        assert is_trajectory_space(env.observation_space), env_id
        obs, _ = env.reset(seed=0)
        assert obs in env.observation_space, env_id
        assert obs["reset"][0] == 1
        max_len = env.unwrapped.max_episode_length if hasattr(env.unwrapped, "max_episode_length") else None
        for t in range(1, 4):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert obs in env.observation_space, env_id
            assert obs["prev_reward"][0] == np.float32(reward)
            # time is normalized: strictly below the raw count, and exact where popgym states the length
            assert 0 < obs["time"][0] < t, env_id
            if max_len:
                assert obs["time"][0] == pytest.approx(t / max_len), env_id
            if terminated or truncated:
                break
        env.close()


def test_check_env_all_adapters():
    for env_id in popgym_env_ids():
        check_env(make_popgym(env_id[len("popgym-") : -len("-v0")], trajectory=False), skip_render_check=True)
    check_env(make_popgym("AutoencodeEasy", trajectory=True), skip_render_check=True)  # around a Tuple -> Dict env


def test_tuple_observation_becomes_dict_and_plain_form():
    env = gym.make("popgym-AutoencodeEasy-v0", trajectory=True)
    # Tuple -> Dict("0", "1"), kept flat in trajectory form (SB3 VecEnvs reject nested Dict spaces)
    assert {"obs/0", "obs/1"} <= set(env.observation_space.spaces) and "obs" not in env.observation_space.spaces
    plain = gym.make("popgym-RepeatPreviousEasy-v0")
    assert plain.observation_space == gym.spaces.Discrete(4)
    obs, _ = plain.reset(seed=0)
    assert obs in plain.observation_space


def test_lengthless_popgym_envs_get_a_length():
    # HigherLower (one deck) and Concentration (episode_length) have no max_episode_length in popgym itself.
    for name in ("HigherLowerEasy", "ConcentrationEasy"):
        env = gym.make(f"popgym-{name}-v0", trajectory=True)
        length = env.get_wrapper_attr("max_episode_steps")
        assert isinstance(length, int) and length > 10
        obs, _ = env.reset(seed=0)
        steps = 0
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            steps += 1
            done = term or trunc
        assert steps <= length and obs["time"][0] <= 1.0


def test_popgyms_own_spelling_of_an_id_gives_our_adapter():
    """popgym registers VelocityOnlyCartpole* (lowercase p) for its class VelocityOnlyCartPole."""
    for env_id in ("popgym-VelocityOnlyCartpoleEasy-v0", "popgym-VelocityOnlyCartPoleEasy-v0"):
        env = gym.make(env_id, trajectory=True)
        assert is_trajectory_space(env.observation_space) and env.get_wrapper_attr("fixed_horizon"), env_id


def test_unknown_popgym_name():
    with pytest.raises(ValueError, match="Unknown POPGym env 'Nope'"):
        make_popgym("Nope")
