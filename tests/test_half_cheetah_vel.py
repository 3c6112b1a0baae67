"""HalfCheetahVel: hidden target velocity kept within a trial, redrawn across trials, the meta-RL reward."""

from __future__ import annotations

import importlib.util
import sys

import gymnasium as gym
import numpy as np
import pytest

import wrappers
from wrappers.envs.half_cheetah_vel import MUJOCO_HELP, HalfCheetahVelEnv

wrappers.register_all()
needs_mujoco = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason='needs pip install -e ".[mujoco]"')


def test_missing_mujoco_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "mujoco" or m.startswith(("mujoco.", "gymnasium.envs.mujoco"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[mujoco\]"'):
        gym.make("HalfCheetahVel-v0")
    assert "[mujoco]" in MUJOCO_HELP


@needs_mujoco
def test_reward_is_minus_velocity_error_minus_control_cost():
    env = HalfCheetahVelEnv(max_steps=5)
    obs, info = env.reset(seed=0)
    assert obs.shape == (17,) and 0.0 <= info["target_velocity"] <= 3.0  # the target is not in the observation
    action = np.full(6, 0.5, np.float32)
    _, reward, _, _, info = env.step(action)
    expected = -abs(info["x_velocity"] - info["target_velocity"]) - 0.05 * float(np.sum(np.square(action)))
    assert reward == pytest.approx(expected)
    truncated = False
    for _ in range(4):
        *_, truncated, _ = env.step(action)
    assert truncated


@needs_mujoco
def test_target_persists_within_a_trial_and_changes_across_trials():
    env = gym.make("HalfCheetahVel-v0", episodes=2, max_steps=10)
    env.reset(seed=1)
    targets = []
    for _ in range(3):
        seen, done = set(), False
        while not done:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            seen.add(info["target_velocity"])
            done = terminated or truncated
        assert len(seen) == 1
        targets.append(seen.pop())
        env.reset()
    assert len(set(targets)) == 3


@needs_mujoco
@pytest.mark.parametrize("kwargs, match", [({"low": 2.0, "high": 1.0}, "0 <= low <= high"),
                                           ({"max_steps": 0}, "max_steps must be an int >= 1"),
                                           ({"ctrl_cost_weight": -1.0}, "ctrl_cost_weight must be >= 0")])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HalfCheetahVelEnv(**kwargs)
