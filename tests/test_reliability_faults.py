"""Faulty envs under ``FaultTolerantVecEnv`` (real worker processes): raises, NaN, hangs past the timeout, crashes;
reported with env index and step, or restarted with the interrupted episode stored as truncated (never terminal)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import wrappers
from amago_sb import AMAGO
from amago_sb.replay import TrajectoryStore, VecTrajectoryRecorder
from amago_sb.vec_env_faults import EnvFaultError, EnvFaultWarning, FaultTolerantVecEnv


class _Faulty(gym.Env):
    """Counts steps; at step ``fail_at`` of an episode it fails in the way ``mode`` says.

    ``once``: a flag file; the failure happens only if it does not exist yet (it is created just before), so a
    restarted copy of the env behaves.
    """

    observation_space = spaces.Box(-10, 10, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, mode: str | None = None, fail_at: int = 3, once: str | None = None, length: int = 50) -> None:
        self.mode, self.fail_at, self.once, self.length, self.t = mode, fail_at, once, length, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t, 1.0, -1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward, obs = 1.0, self._obs()
        if self.mode and self.t == self.fail_at and not (self.once and os.path.exists(self.once)):
            if self.once:
                Path(self.once).touch()
            if self.mode == "raise":
                raise RuntimeError(f"boom at t={self.t}")
            if self.mode == "nan_reward":
                reward = float("nan")
            if self.mode == "inf_obs":
                obs[1] = np.inf
            if self.mode == "hang":
                time.sleep(60)
            if self.mode == "crash":
                os._exit(3)
        return obs, reward, False, self.t >= self.length, {}


def _venv(mode, fail_env=1, n=2, once=None, trajectory=False, **kw):
    def make(i):
        def fn():
            env = _Faulty(mode if i == fail_env else None, once=once)
            return wrappers.TrajectoryWrapper(env) if trajectory else env
        return fn
    return FaultTolerantVecEnv([make(i) for i in range(n)], start_method="fork", **kw)


def _steps(venv, k):
    out = None
    for _ in range(k):
        out = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
    return out


@pytest.mark.parametrize("mode, kind, text", [
    ("raise", "exception", "RuntimeError: boom at t=3"),
    ("nan_reward", "nonfinite", "returned a non-finite reward nan"),
    ("inf_obs", "nonfinite", "returned a non-finite observation"),
    ("crash", "crashed", "its worker process died (exit code 3)"),
])
def test_fault_reports_env_and_step(mode, kind, text):
    venv = _venv(mode, step_timeout=20)
    venv.reset()
    _steps(venv, 2)
    where = "env 1 failed at step 3 of its episode (VecEnv step 3)"
    with pytest.raises(EnvFaultError, match=re.escape(f"{where}: {kind}: {text}")) as e:
        _steps(venv, 1)
    assert "restart_on_fault=True" in str(e.value) and e.value.fault.env_idx == 1
    if mode == "raise":
        assert "Worker traceback" in str(e.value) and "in step" in e.value.fault.traceback
    with pytest.raises(EnvFaultError, match="build a new one"):
        _steps(venv, 1)
    t0 = time.monotonic()
    venv.close()
    assert time.monotonic() - t0 < 5 and not any(p.is_alive() for p in venv.processes)


def test_hang_past_timeout_is_reported_and_killed():
    venv = _venv("hang", step_timeout=0.5)
    venv.reset()
    _steps(venv, 2)
    t0 = time.monotonic()
    with pytest.raises(EnvFaultError, match=r"env 1 failed at step 3 .*timeout: no answer within step_timeout=0.5 s"):
        _steps(venv, 1)
    assert time.monotonic() - t0 < 3  # not the env's 60 s
    assert not venv.processes[1].is_alive()
    venv.close()


def test_restart_stores_interrupted_episode_as_truncated(tmp_path):
    venv = _venv("raise", once=str(tmp_path / "failed_once"), trajectory=True, restart_on_fault=True, step_timeout=20)
    store = TrajectoryStore(tmp_path / "replay", fsync=False)
    rec = VecTrajectoryRecorder(2, store, chunk_len=100, overlap=3)
    obs = venv.reset()
    rec.reset(obs)
    old_pid = venv.processes[1].pid
    for step in range(1, 8):
        actions = np.array([step % 2, 1], np.int64)
        if step == 3:
            with pytest.warns(EnvFaultWarning, match=r"env 1 failed at step 3 .*restarting it"):
                obs, rew, dones, infos = venv.step(actions)
            assert dones.tolist() == [False, True] and rew[1] == 0.0
            assert infos[1]["env_fault"]["kind"] == "exception" and infos[1]["TimeLimit.truncated"]
            np.testing.assert_array_equal(infos[1]["terminal_observation"]["obs"], [2, 1, -1])  # last real observation
            np.testing.assert_array_equal(obs["obs"][1], [0, 1, -1])  # the restarted env's reset
            written = rec.step(actions, rew, dones, infos, obs)
            assert len(written) == 1
            traj = store.load(written[0])
            assert len(traj) == 2 and traj.truncated.tolist() == [False, True] and not traj.terminated.any()
            np.testing.assert_array_equal(traj.observations["obs"], [[0, 1, -1], [1, 1, -1], [2, 1, -1]])
            assert traj.rewards.tolist() == [1.0, 1.0]  # the failed step's (fake) reward is not stored
        else:
            obs, rew, dones, infos = venv.step(actions)
            rec.step(actions, rew, dones, infos, obs)
    assert venv.restarts.tolist() == [0, 1] and venv.processes[1].pid != old_pid
    assert [f.env_idx for f in venv.faults] == [1]
    assert obs["obs"][1][0] == 4 and obs["obs"][0][0] == 7  # the restarted env went on from its reset
    venv.close()


def test_restart_of_hung_env_and_max_restarts():
    venv = _venv("hang", step_timeout=0.5, restart_on_fault=True, max_restarts=1)
    venv.reset()
    with pytest.warns(EnvFaultWarning, match="timeout"):
        _, _, dones, infos = _steps(venv, 3)
    assert dones[1] and infos[1]["env_fault"]["kind"] == "timeout"
    with pytest.raises(EnvFaultError, match="exceeded max_restarts=1"):
        _steps(venv, 3)  # the restarted env hangs again at its step 3
    venv.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="step_timeout must be > 0"):
        FaultTolerantVecEnv([lambda: _Faulty()], step_timeout=0)
    with pytest.raises(ValueError, match="at least one env_fn"):
        FaultTolerantVecEnv([])


class _FailOnce(gym.Wrapper):
    """Raise once (flag file) at step ``at`` of the wrapped trajectory-form env."""

    def __init__(self, env, at: int, flag: str) -> None:
        super().__init__(env)
        self.at, self.flag, self.t = at, flag, 0

    def reset(self, **kw):
        self.t = 0
        return self.env.reset(**kw)

    def step(self, action):
        self.t += 1
        if self.t == self.at and not os.path.exists(self.flag):
            Path(self.flag).touch()
            raise RuntimeError("simulator lost its license server")
        return self.env.step(action)


def test_amago_learns_through_a_restarted_env(tmp_path):
    flag = str(tmp_path / "flag")
    fns = [lambda: wrappers.make_env("TMazePassive-v0"),
           lambda: _FailOnce(wrappers.make_env("TMazePassive-v0"), 5, flag)]
    venv = FaultTolerantVecEnv(fns, start_method="fork", restart_on_fault=True, step_timeout=30)
    model = AMAGO("Transformer", venv, seed=0, replay_dir=str(tmp_path / "replay"), batch_size=4, context_len=8,
                  train_freq=4, gradient_steps=1, learning_starts=16,
                  policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
    with pytest.warns(EnvFaultWarning, match="simulator lost its license server"):
        model.learn(40)
    assert model.num_timesteps >= 40 and venv.restarts.tolist() == [0, 1]
    trajs = [model.replay.load(p) for p in model.replay.paths()]
    cut = [t for t in trajs if t.meta.get("env_idx") == 1 and t.time_offset == 0 and len(t) == 4 and t.truncated[-1]]
    assert cut and not cut[0].terminated.any()  # the 4 real steps before the failed 5th, stored as truncated
    venv.close()


def test_nan_caught_by_trajectory_wrapper_is_reported_with_its_message():
    venv = _venv("nan_reward", trajectory=True, step_timeout=20)
    venv.reset()
    with pytest.raises(EnvFaultError, match=r"env 1 failed at step 3 of its episode .*exception: ValueError: .*(NaN|nan)"):
        _steps(venv, 3)
    venv.close()
