"""VecTrajectoryRecorder on a real SB3 DummyVecEnv of a TrajectoryWrapper'd toy env: episodes, chunks, flush."""

from __future__ import annotations

from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from amago_sb.replay import TrajectoryStore, VecTrajectoryRecorder, WindowSampler
from wrappers.trajectory_wrapper import TrajectoryWrapper


class CountEnv(gym.Env):
    """obs = [episode id, t]; reward of transition t = t; terminates after a random length in [3, 40).

    Every third step reports ``info["achieved"] = [[t, t + 1]]``. Under ``TimeLimit(25)`` long episodes truncate.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, env_id: int) -> None:
        self.env_id = env_id
        self.episode = -1
        self.rng = np.random.default_rng(env_id)
        self.t = 0
        self.length = 0

    def _obs(self) -> np.ndarray:
        return np.array([1000 * self.env_id + self.episode, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.rng.integers(3, 40))
        return self._obs(), {}

    def step(self, action):
        assert action == (self.t + self.env_id) % 3
        reward = float(self.t)
        info = {"achieved": np.array([[self.t, self.t + 1]])} if self.t % 3 == 0 else {}
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, info


def _make(i: int):
    return lambda: TrajectoryWrapper(gym.wrappers.TimeLimit(CountEnv(i), max_episode_steps=25))


def _policy(obs: dict, n_envs: int) -> np.ndarray:
    return ((obs["obs"][:, 1].astype(np.int64) + np.arange(n_envs)) % 3).astype(np.int64)


def _run(store, n_envs=3, steps=300, chunk_len=10, overlap=4, flush_at=(150,)):
    venv = DummyVecEnv([_make(i) for i in range(n_envs)])
    rec = VecTrajectoryRecorder(n_envs, store, chunk_len=chunk_len, overlap=overlap)
    obs = venv.reset()
    rec.reset(obs)
    ended = {}  # episode id -> "terminated" / "truncated"
    for step in range(steps):
        act = _policy(obs, n_envs)
        new_obs, rew, dones, infos = venv.step(act)
        for i in np.flatnonzero(dones):
            ep = int(infos[i]["terminal_observation"]["obs"][0])
            ended[ep] = "truncated" if infos[i].get("TimeLimit.truncated") else "terminated"
        rec.step(act, rew, dones, infos, new_obs)
        obs = new_obs
        if step in flush_at:
            assert rec.flush() and rec.flush() == []  # a second flush without new steps writes nothing
    rec.flush()
    return ended


def test_recorder_on_dummy_vec_env(tmp_path):
    store = TrajectoryStore(tmp_path, max_steps=10**6, fsync=False)
    chunk_len, overlap = 10, 4
    ended = _run(store, chunk_len=chunk_len, overlap=overlap)
    episodes = defaultdict(list)
    for p in store.paths():
        traj = store.load(p)
        episodes[int(traj.observations["obs"][0, 0])].append(traj)
    assert set(ended) <= set(episodes) and len(ended) > 20
    assert "truncated" in ended.values() and "terminated" in ended.values()
    n_chunked = 0
    for ep, chunks in episodes.items():
        chunks.sort(key=lambda c: (c.time_offset, len(c)))
        env_id = ep // 1000
        for k, c in enumerate(chunks):
            T = len(c)
            t = c.observations["obs"][:, 1]
            assert 1 <= T <= chunk_len and c.meta["env_idx"] == env_id
            np.testing.assert_array_equal(t, np.arange(c.time_offset, c.time_offset + T + 1))  # rows consecutive
            np.testing.assert_array_equal(c.observations["obs"][:, 0], ep)  # never mixes episodes (incl. final row)
            np.testing.assert_array_equal(c.actions, (t[:-1] + env_id) % 3)
            np.testing.assert_array_equal(c.rewards, t[:-1])
            np.testing.assert_array_equal(c.observations["prev_reward"][1:, 0], c.rewards)  # row t+1 follows action t
            assert c.observations["reset"][0, 0] == (1.0 if c.time_offset == 0 else 0.0)
            assert not c.terminated[:-1].any() and not c.truncated[:-1].any()
            last = k == len(chunks) - 1
            if not last:
                assert not c.terminated[-1]
                nxt = chunks[k + 1]
                assert nxt.time_offset == c.time_offset + T - min(overlap, T)  # chunks overlap by `overlap`
            elif ep in ended:
                assert c.terminated[-1] == (ended[ep] == "terminated")
                assert c.truncated[-1] == (ended[ep] == "truncated")
            else:  # unfinished at the end: written by flush as truncated (or just cut: nothing new), never terminal
                assert not c.terminated[-1] and (c.truncated[-1] or T == chunk_len)
            ach = c.achieved
            if ach is not None:
                for r in range(T):
                    want = [[t[r], t[r] + 1]] if t[r] % 3 == 0 else [[0, 0]]
                    np.testing.assert_array_equal(ach[r], want)
            else:
                assert not any(x % 3 == 0 for x in t[:-1])
        n_chunked += len(chunks) > 1
    assert n_chunked > 5


def test_every_window_lies_in_a_chunk(tmp_path):
    """With overlap = context_len - 1 transitions or more, every window of the episode is inside one stored chunk."""
    store = TrajectoryStore(tmp_path, fsync=False)
    L = 5
    _run(store, steps=200, chunk_len=9, overlap=L, flush_at=())
    cover = defaultdict(set)
    for p in store.paths():
        c = store.load(p)
        ep = int(c.observations["obs"][0, 0])
        for s in range(max(1, len(c) + 2 - L)):
            cover[ep].add(c.time_offset + s)
        cover[(ep, "T")].add(c.time_offset + len(c))
    for ep in [k for k in cover if not isinstance(k, tuple)]:
        T_ep = max(cover[(ep, "T")])
        assert cover[ep] >= set(range(max(1, T_ep + 2 - L))), ep
    # and the sampler reads the recorder's files
    b = WindowSampler(store, L).sample(16)
    assert b.mask.shape[1] == L


def test_recorder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"overlap must be an int in \[0, chunk_len\)"):
        VecTrajectoryRecorder(2, None, chunk_len=8, overlap=8)
    with pytest.raises(ValueError, match="n_envs must be an int >= 1"):
        VecTrajectoryRecorder(0, None, chunk_len=8, overlap=2)
    rec = VecTrajectoryRecorder(2, None, chunk_len=8, overlap=2)
    obs = {"obs": np.zeros((2, 3), np.float32)}
    with pytest.raises(RuntimeError, match="before reset"):
        rec.step(np.zeros(2), np.zeros(2), np.zeros(2, bool), [{}, {}], obs)
    with pytest.raises(TypeError, match="TrajectoryWrapper"):
        rec.reset(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="leading dim n_envs=2"):
        rec.reset({"obs": np.zeros((3, 3))})
    rec.reset(obs)
    with pytest.raises(ValueError, match="no 'terminal_observation'"):
        rec.step(np.zeros(2), np.zeros(2), np.array([True, False]), [{}, {}], obs)


def test_recorder_without_store_keeps_trajectories():
    rec = VecTrajectoryRecorder(1, None, chunk_len=4, overlap=1)
    rec.reset({"obs": np.zeros((1, 1), np.float32)})
    for t in range(1, 7):
        rec.step(np.array([t]), np.array([float(t)]), np.array([False]), [{}], {"obs": np.full((1, 1), t, np.float32)})
    rec.flush()
    assert [(c.time_offset, len(c)) for c in rec.finished] == [(0, 4), (3, 3)]
    assert rec.finished[1].truncated[-1] and rec.finished[1].observations["obs"][:, 0].tolist() == [3, 4, 5, 6]


def test_instruction_env_achieved_and_relabel(tmp_path):
    """The shipped instruction env end to end: info["achieved"] recorded, sampled with wrappers.relabel."""
    from wrappers import ensure_trajectory_env, relabel

    def make():
        return ensure_trajectory_env(gym.make("GoalGridInstruction-v0"))

    venv = DummyVecEnv([make, make])
    venv.seed(0)
    venv.action_space.seed(0)
    store = TrajectoryStore(tmp_path, fsync=False)
    rec = VecTrajectoryRecorder(2, store, chunk_len=64, overlap=16)
    obs = venv.reset()
    rec.reset(obs)
    for _ in range(300):
        act = np.array([venv.action_space.sample() for _ in range(2)])
        new_obs, rew, dones, infos = venv.step(act)
        rec.step(act, rew, dones, infos, new_obs)
    rec.flush()
    trajs = [store.load(p) for p in store.paths()]
    assert all(t.achieved is not None and t.achieved.shape[1:] == infos[0]["achieved"].shape for t in trajs)
    assert any(t.achieved.any() for t in trajs)
    calls = []

    def counting_relabel(traj, rng):
        calls.append(len(traj))
        return relabel(traj, rng)

    b = WindowSampler(store, 16, relabel=counting_relabel, seed=0).sample(32)
    assert len(calls) == 32 and b.observations["instruction"].dtype == torch.int64
    plain = WindowSampler(store, 16, seed=0).sample(32)
    assert b.rewards.sum() > plain.rewards.sum()  # hindsight goals turn achieved events into rewards


def test_reset_mid_episode_writes_truncated():
    rec = VecTrajectoryRecorder(2, None, chunk_len=10, overlap=2)
    rec.reset({"obs": np.zeros((2, 1), np.float32)})
    for t in range(1, 4):
        rec.step(np.zeros(2), np.ones(2), np.zeros(2, bool), [{}, {}], {"obs": np.full((2, 1), t, np.float32)})
    rec.reset({"obs": np.full((2, 1), -1, np.float32)})  # e.g. learn() called again: VecEnv.reset()
    assert len(rec.finished) == 2 and all(len(c) == 3 and c.truncated[-1] for c in rec.finished)
    rec.step(np.zeros(2), np.ones(2), np.zeros(2, bool), [{}, {}], {"obs": np.full((2, 1), 9, np.float32)})
    rec.flush()
    assert [c.observations["obs"][:, 0].tolist() for c in rec.finished[2:]] == [[-1, 9], [-1, 9]]
    assert all(c.time_offset == 0 for c in rec.finished[2:])
