"""TrajectoryWrapper: the timestep contract over every supported space, check_env, and bad input."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import wrappers
from wrappers import TrajectoryWrapper, UnsupportedSpaceError, ensure_trajectory_env, is_trajectory_space, make_env


class ToyEnv(gym.Env):
    """Seedable env with arbitrary spaces; reward = step index; ends after ``length`` steps."""

    def __init__(self, obs_space: spaces.Space, act_space: spaces.Space, length: int = 5, bad: str | None = None):
        self.observation_space = obs_space
        self.action_space = act_space
        self.length = length
        self.bad = bad
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(1 << 30)))
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        obs = self.observation_space.sample()
        reward = float(self.t)
        if self.bad == "obs" and self.t == 2:
            obs = np.full(self.observation_space.shape, np.nan, np.float32)
        if self.bad == "reward" and self.t == 3:
            reward = float("inf")
        return obs, reward, self.t >= self.length, False, {}


OBS_SPACES = {
    "box": spaces.Box(-1, 1, (3,), np.float32),
    "discrete": spaces.Discrete(4),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(5),
    "image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
    "dict": spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "inner": spaces.Dict({"id": spaces.Discrete(3)})}),
}
ACT_SPACES = {
    "discrete": (spaces.Discrete(3, start=1), 3),
    "multidiscrete": (spaces.MultiDiscrete([2, 4]), 6),
    "box": (spaces.Box(-1, 1, (2, 2), np.float32), 4),
}


@pytest.mark.parametrize("obs_name", OBS_SPACES)
@pytest.mark.parametrize("act_name", ACT_SPACES)
def test_contract_over_spaces(obs_name, act_name):
    act_space, dim = ACT_SPACES[act_name]
    env = TrajectoryWrapper(ToyEnv(OBS_SPACES[obs_name], act_space), max_episode_steps=5)
    original = OBS_SPACES[obs_name]
    if isinstance(original, spaces.Dict):  # kept flat as obs/<key> (SB3 VecEnvs reject nested Dict spaces)
        leaves = wrappers.flatten_keys(original, prefix="obs/")
        obs_keys = set(leaves)
        for k, sub in leaves.items():
            assert env.observation_space[k] == sub
    else:
        obs_keys = {"obs"}
        assert env.observation_space["obs"] == original
    assert set(env.observation_space.spaces) == obs_keys | {"prev_action", "prev_reward", "time", "reset"}
    assert env.observation_space["prev_action"].shape == (dim,)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    assert obs["reset"][0] == 1 and obs["time"][0] == 0 and obs["prev_reward"][0] == 0
    assert not obs["prev_action"].any()
    action = act_space.sample()
    obs, reward, *_ = env.step(action)
    assert obs in env.observation_space
    assert obs["reset"][0] == 0 and obs["prev_reward"][0] == reward == 1.0
    assert obs["time"][0] == pytest.approx(1 / 5)
    if act_name == "discrete":
        assert obs["prev_action"].tolist() == [1.0 if i == action - 1 else 0.0 for i in range(3)]
    elif act_name == "multidiscrete":
        expected = np.zeros(6)
        expected[action[0]] = 1
        expected[2 + action[1]] = 1
        assert obs["prev_action"].tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(obs["prev_action"], action.reshape(-1))


@pytest.mark.parametrize("obs_name", OBS_SPACES)
def test_check_env(obs_name):
    check_env(TrajectoryWrapper(ToyEnv(OBS_SPACES[obs_name], spaces.Discrete(2))), skip_render_check=True)


def test_time_sources():
    base = ToyEnv(OBS_SPACES["box"], spaces.Discrete(2))
    env = TrajectoryWrapper(base)  # unknown length: raw count
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[0]["time"][0] == 2.0
    env = TrajectoryWrapper(gym.wrappers.TimeLimit(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2)), 4))
    assert env.max_episode_steps == 4
    gym.register("ToyTimeLimit-v0", entry_point=lambda: ToyEnv(OBS_SPACES["box"], spaces.Discrete(2)), max_episode_steps=8)
    env = TrajectoryWrapper(gym.make("ToyTimeLimit-v0"))
    env.reset(seed=0)
    assert env.step(0)[0]["time"][0] == pytest.approx(1 / 8)
    base.max_episode_length = 10
    assert TrajectoryWrapper(base).max_episode_steps == 10


def test_reset_after_episode_clears_previous():
    env = TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2), length=2))
    env.reset(seed=1)
    env.step(1)
    obs, _ = env.reset()
    assert obs["reset"][0] == 1 and not obs["prev_action"].any() and obs["prev_reward"][0] == 0


@pytest.mark.parametrize(
    "space, fix",
    [
        (spaces.Tuple([spaces.Discrete(2), spaces.Discrete(3)]), "gymnasium.wrappers.FlattenObservation"),
        (spaces.Text(5), "Text observations"),
        (spaces.Sequence(spaces.Discrete(2)), "Sequence observations"),
        (spaces.Graph(spaces.Box(0, 1, (2,)), None), "Graph observations"),
        (spaces.Dict({"a": spaces.Tuple([spaces.Discrete(2)])}), "observation['a']"),
    ],
)
def test_unsupported_observation_spaces(space, fix):
    with pytest.raises(UnsupportedSpaceError, match=re.escape(fix)):
        TrajectoryWrapper(ToyEnv(space, spaces.Discrete(2)))
    with pytest.raises(ValueError):  # also a ValueError (and a TypeError)
        TrajectoryWrapper(ToyEnv(space, spaces.Discrete(2)))


@pytest.mark.parametrize(
    "space, fix",
    [
        (spaces.MultiBinary(3), "MultiDiscrete([2] * n)"),
        (spaces.Tuple([spaces.Discrete(2), spaces.Discrete(3)]), "flatten the action"),
        (spaces.Box(0, 3, (2,), np.int64), "float dtype"),
    ],
)
def test_unsupported_action_spaces(space, fix):
    with pytest.raises(TypeError, match=re.escape(fix)):
        TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], space))


def test_nonfinite_observation_and_reward():
    env = TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2), bad="obs"))
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ValueError, match=re.escape("ToyEnv returned a non-finite (NaN/inf) value in obs at step 2")):
        env.step(0)
    env = TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2), bad="reward"))
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    with pytest.raises(ValueError, match=re.escape("ToyEnv returned a non-finite reward (inf) at step 3")):
        env.step(0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_episode_steps must be a positive int"):
        TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2)), max_episode_steps=0)
    env = TrajectoryWrapper(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2)))
    with pytest.raises(ValueError, match="already in trajectory form"):
        TrajectoryWrapper(env)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the Discrete action space"):
        env.step(5)
    with pytest.raises(TypeError, match="gymnasium id"):
        make_env(3)
    with pytest.raises(TypeError, match="pass them to its constructor"):
        make_env(ToyEnv(OBS_SPACES["box"], spaces.Discrete(2)), foo=1)


def test_make_env_and_ensure():
    env = make_env("CartPole-v1")
    assert is_trajectory_space(env.observation_space)
    assert env.max_episode_steps == 500
    assert ensure_trajectory_env(env) is env
    inst = ToyEnv(OBS_SPACES["box"], spaces.Discrete(2))
    wrapped = make_env(inst)
    assert isinstance(wrapped, TrajectoryWrapper) and wrapped.env is inst
    assert not is_trajectory_space(spaces.Dict({"obs": spaces.Discrete(2)}))
    assert "TrajectoryWrapper" in wrappers.__all__


def test_dict_observations_stay_flat_for_sb3_vec_envs():
    """A Dict observation becomes obs/<key> entries, so SB3's VecEnvs (which reject nested Dicts) accept the env."""
    from stable_baselines3.common.env_util import make_vec_env

    space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "inner": spaces.Dict({"id": spaces.Discrete(3)})})
    venv = make_vec_env(lambda: TrajectoryWrapper(ToyEnv(space, spaces.Discrete(2))), n_envs=2)
    obs = venv.reset()
    assert {"obs/pos", "obs/inner/id"} <= set(obs) and obs["obs/pos"].shape == (2, 2)
    assert is_trajectory_space(venv.observation_space)
