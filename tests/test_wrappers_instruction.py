"""InstructionWrapper on the shipped GoalGrid env, and hindsight relabeling on hand-built trajectories."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wrappers  # noqa: F401  (registers the ids)
from wrappers import InstructionWrapper, Trajectory, flatten_keys, relabel
from wrappers.envs.goal_grid import GOAL_GRID_VOCABULARY, GoalGridEnv
from wrappers.instruction import replay_instruction
from wrappers.relabel import instruction_goals

A, B, C, D = 2, 3, 4, 5  # token ids of a vocabulary ["a", "b", "c", "d"]


def grid_env(k=3, **kw) -> InstructionWrapper:
    env = gym.wrappers.TimeLimit(GoalGridEnv(size=4, n_objects=3), 30)
    return InstructionWrapper(env, GOAL_GRID_VOCABULARY, instruction_len=k, goal_len=2, **kw)


def place(env: InstructionWrapper, agent, objects) -> None:
    env.unwrapped.agent = np.array(agent)
    env.unwrapped.objects = np.array(objects)


def record(env: gym.Env, actions=None, seed=0, steps=30, options=None) -> Trajectory:
    """Roll ``env`` and store what the replay would store."""
    keys = flatten_keys(env.observation_space)
    obs, info = env.reset(seed=seed, options=options)
    rows, acts, rews, terms, truncs, ach = [obs], [], [], [], [], []
    rng = np.random.default_rng(seed)
    for t in range(steps):
        action = int(rng.integers(5)) if actions is None else actions[t]
        obs, r, term, trunc, info = env.step(action)
        rows.append(obs)
        acts.append(action)
        rews.append(r)
        terms.append(term)
        truncs.append(trunc)
        ach.append(info["achieved"])
        if term or trunc:
            break
    observations = {k: np.stack([np.asarray(row[k]) for row in rows]) for k in keys}
    return Trajectory(
        observations, np.array(acts), np.array(rews, np.float32), np.array(terms), np.array(truncs), np.stack(ach)
    )


def hand_traj(instruction, achieved, k=3, goal_len=1, rewards=None) -> Trajectory:
    """A trajectory whose instruction rows never change (nothing completed) unless ``rewards`` say so."""
    T = len(achieved)
    events = max(len(a) for a in achieved) or 1
    ach = np.zeros((T, events, goal_len), np.int64)
    for t, goals in enumerate(achieved):
        for i, g in enumerate(goals):
            ach[t, i] = g
    row = np.zeros((k, goal_len), np.int64)
    for i, g in enumerate(instruction):
        row[i] = g
    obs = {
        "obs": np.arange(T + 1, dtype=np.float32)[:, None],
        "prev_reward": np.full((T + 1, 1), 0.5, np.float32),
        "instruction": np.repeat(row[None], T + 1, 0),
    }
    rew = np.zeros(T, np.float32) if rewards is None else np.array(rewards, np.float32)
    return Trajectory(obs, np.zeros(T, np.int64), rew, np.zeros(T, bool), np.eye(1, T, T - 1, dtype=bool)[0], ach)


# -- the wrapper ---------------------------------------------------------------------------------------------------


def test_check_env_and_space():
    env = grid_env()
    check_env(env, skip_render_check=True)
    assert env.observation_space["instruction"] == gym.spaces.MultiDiscrete(np.full((3, 2), 2 + len(GOAL_GRID_VOCABULARY)))
    assert env.tokens[:2] == ["<pad>", "<done>"] and env.token_ids["reach"] == 2


def test_rewards_in_order_done_markers_and_success():
    env = grid_env()
    obs, info = env.reset(seed=0, options={"instruction": [("reach", "red"), "reach blue"]})
    red, blue = env.token_ids["red"], env.token_ids["blue"]
    assert obs["instruction"].tolist() == [[2, red], [2, blue], [0, 0]]
    assert info["achieved"].shape == (8, 2) and not info["achieved"].any()
    # red at (0,1), green at (0,2), blue at (0,3); agent at (0,0); move right three times
    place(env, (0, 0), [(0, 1), (0, 2), (0, 3)])
    obs, r, term, trunc, info = env.step(1)  # up: wall, nothing achieved
    assert r == 0 and not info["achieved"].any() and obs["prev_reward"][0] == 0
    place(env, (1, 3), [(0, 1), (0, 2), (0, 3)])
    obs, r, term, _, info = env.step(1)  # reaches blue first: out of order, no reward
    assert r == 0 and info["achieved"][0].tolist() == [2, blue] and not term
    for action in (3, 3):  # left to green, left to red
        obs, r, term, _, info = env.step(action)
    assert r == 1 and obs["prev_reward"][0] == 1 and info["goals_completed"] == 1
    assert obs["instruction"].tolist() == [[1, 1], [2, blue], [0, 0]]
    env.step(4)
    obs, r, term, trunc, info = env.step(4)  # back to blue
    assert r == 1 and term and not trunc and info["instruction_success"]
    assert obs["instruction"].tolist() == [[1, 1], [1, 1], [0, 0]]


def test_sampler_lengths_and_default_sampler():
    env = grid_env(k=3)
    lengths = set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        lengths.add(int(np.any(obs["instruction"] != 0, axis=1).sum()))
    assert lengths == {1, 2, 3}


def test_bad_input():
    env = grid_env()
    with pytest.raises(ValueError, match=re.escape("tokens ['pink'] outside the vocabulary")):
        env.reset(seed=0, options={"instruction": [("reach", "pink")]})
    with pytest.raises(ValueError, match="1..instruction_len=3 goals"):
        env.reset(seed=0, options={"instruction": [("reach", "red")] * 4})
    with pytest.raises(ValueError, match="needs 1..goal_len=2 tokens|goals need 1..goal_len=2 tokens"):
        env.reset(seed=0, options={"instruction": [("reach", "red", "now")]})
    with pytest.raises(ValueError, match="reserved tokens"):
        InstructionWrapper(GoalGridEnv(), ["<done>", "a"])
    with pytest.raises(ValueError, match="instruction_len must be a positive int"):
        InstructionWrapper(GoalGridEnv(), ["a"], instruction_len=0)
    with pytest.raises(ValueError, match="has no sample_instruction"):
        InstructionWrapper(gym.make("CartPole-v1"), ["a"])
    env = InstructionWrapper(GoalGridEnv(), ["reach", "red"], goal_len=2, achieved_fn=lambda e, o, i: [("reach", "green")])
    env.reset(seed=0, options={"instruction": ["reach red"]})
    with pytest.raises(ValueError, match=re.escape("tokens ['green'] outside the vocabulary")):
        env.step(0)


def test_recorded_rewards_match_replay():
    env = grid_env(k=3)
    for seed in range(5):
        traj = record(env, seed=seed)
        _, goals = instruction_goals(traj.observations["instruction"][0])
        rewards, _, done_at = replay_instruction(goals, traj.achieved)
        np.testing.assert_array_equal(rewards, traj.rewards)
        np.testing.assert_array_equal(traj.observations["prev_reward"][1:, 0], traj.rewards)
        assert (done_at == len(traj) - 1) == bool(traj.terminated[-1])


# -- relabel -------------------------------------------------------------------------------------------------------


def assert_same(a: Trajectory, b: Trajectory):
    assert a.observations.keys() == b.observations.keys()
    for key in a.observations:
        np.testing.assert_array_equal(a.observations[key], b.observations[key])
    for name in ("actions", "rewards", "terminated", "truncated", "achieved"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_relabel_nothing_achieved_is_unchanged():
    traj = hand_traj([A, B], [[], [], [], []])
    for scheme in ("some", "all"):
        out = relabel(traj, np.random.default_rng(0), scheme=scheme)
        assert_same(out, traj)
        assert out.rewards is not traj.rewards


def test_relabel_length_one_instruction():
    traj = hand_traj([A], [[], [], [B], [], []], k=1)
    before = {k: v.copy() for k, v in traj.observations.items()}
    out = relabel(traj, np.random.default_rng(0), scheme="all")
    assert out.rewards.tolist() == [0, 0, 1]
    assert out.terminated.tolist() == [False, False, True] and not out.truncated.any()
    assert out.observations["instruction"][:, 0, 0].tolist() == [B, B, B, 1]
    assert out.observations["prev_reward"][:, 0].tolist() == [0.5, 0, 0, 1]
    assert out.observations["obs"].shape == (4, 1) and len(out.actions) == 3 and len(out.achieved) == 3
    out.validate()
    for key, value in before.items():  # input not mutated
        np.testing.assert_array_equal(traj.observations[key], value)
    assert traj.rewards.tolist() == [0] * 5


def test_relabel_three_goals_keeps_real_success_in_chronological_order():
    # instruction [A, B, C]; A achieved (real success) at t=1, then C at t=3, B at t=4
    traj = hand_traj([A, B, C], [[], [A], [], [C], [B], []], rewards=[0, 1, 0, 0, 0, 0])
    out = relabel(traj, np.random.default_rng(0), scheme="all")
    assert out.rewards.tolist() == [0, 1, 0, 1, 1]
    assert out.terminated.tolist() == [False] * 4 + [True]
    rows = out.observations["instruction"][:, :, 0].tolist()
    assert rows == [[A, C, B], [A, C, B], [1, C, B], [1, C, B], [1, 1, B], [1, 1, 1]]


def test_relabel_partial_fill_keeps_remaining_goals_and_length():
    # instruction [A, B, C] of k=3; nothing real; only D achieved once -> [D, B, C], never completed
    traj = hand_traj([A, B, C], [[], [D], [], []])
    out = relabel(traj, np.random.default_rng(0), scheme="all")
    assert len(out) == 4 and out.rewards.tolist() == [0, 1, 0, 0]
    assert out.observations["instruction"][-1, :, 0].tolist() == [1, B, C]
    np.testing.assert_array_equal(out.terminated, traj.terminated)
    np.testing.assert_array_equal(out.truncated, traj.truncated)


def test_relabel_two_token_goals_and_chunk_with_completed_prefix():
    # goal_len 2, a chunk whose first row already shows one completed goal; one goal left -> one synthetic goal
    traj = hand_traj([(1, 1), (A, B)], [[(C, 0)], [(A, D), (C, 0)], []], k=3, goal_len=2)
    out = relabel(traj, np.random.default_rng(1), scheme="all")
    rows = out.observations["instruction"]
    assert rows[0].tolist() in ([[1, 1], [C, 0], [0, 0]], [[1, 1], [A, D], [0, 0]])
    assert out.rewards.sum() == 1 and out.terminated[-1]
    assert rows[-1].tolist() == [[1, 1], [1, 1], [0, 0]]


def test_relabel_never_lengthens_the_instruction():
    # a 1-goal instruction in 3 slots, with 4 achievements: every relabel is a 1-goal instruction (at most 1 reward)
    traj = hand_traj([A], [[B], [C], [D], [B], []], k=3)
    for scheme in ("some", "all"):
        for seed in range(30):
            out = relabel(traj, np.random.default_rng(seed), scheme=scheme)
            _, goals = instruction_goals(out.observations["instruction"][0])
            assert len(goals) == 1 and out.rewards.sum() <= 1
            assert np.all(out.observations["instruction"][:, 1:] == 0)  # the free slots stay padding


def test_relabel_success_unchanged_and_some_scheme_counts():
    done = hand_traj([A], [[], [A]], k=2, rewards=[0, 1])
    assert_same(relabel(done, np.random.default_rng(0), scheme="all"), done)
    traj = hand_traj([A, B], [[C], [D], [C], [D], []], k=3)  # 2 goals in 3 slots: 0, 1 or 2 relabeled goals
    completed = set()
    for seed in range(40):
        out = relabel(traj, np.random.default_rng(seed))
        n = int(out.rewards.sum())
        completed.add(n)
        instr = out.observations["instruction"]
        # rewards are exactly the done-marker increments of the instruction rows
        marks = (np.all(instr == 1, axis=-1)).sum(-1)
        np.testing.assert_array_equal(np.diff(marks), out.rewards)
    assert completed == {0, 1, 2}


def test_relabel_bad_input():
    traj = hand_traj([A], [[B]])
    with pytest.raises(ValueError, match="Unknown relabel scheme 'most'"):
        relabel(traj, np.random.default_rng(0), scheme="most")
    no_ach = Trajectory(traj.observations, traj.actions, traj.rewards, traj.terminated, traj.truncated, None)
    with pytest.raises(ValueError, match="Trajectory.achieved"):
        relabel(no_ach, np.random.default_rng(0))
    no_instr = Trajectory({"obs": traj.observations["obs"]}, traj.actions, traj.rewards, traj.terminated, traj.truncated)
    with pytest.raises(ValueError, match="observations\\['instruction'\\]"):
        relabel(no_instr, np.random.default_rng(0))


def test_relabel_real_rollouts_are_consistent():
    env = grid_env(k=3)
    relabeled = 0
    for seed in range(8):
        traj = record(env, seed=seed)
        out = relabel(traj, np.random.default_rng(seed), scheme="all")
        out.validate()
        _, goals = instruction_goals(out.observations["instruction"][0])
        rewards, _, done_at = replay_instruction(goals, out.achieved)
        np.testing.assert_array_equal(rewards, out.rewards)
        np.testing.assert_array_equal(out.observations["prev_reward"][1:, 0], out.rewards)
        relabeled += bool(out.meta.get("relabeled"))
    assert relabeled >= 4


def test_relabel_accepts_read_only_arrays():
    # the replay sampler caches trajectories with read-only arrays; relabel must copy, never write in place
    traj = hand_traj([A, B], [[], [C], [D], []])
    for arr in [*traj.observations.values(), traj.actions, traj.rewards, traj.terminated, traj.truncated, traj.achieved]:
        arr.flags.writeable = False
    out = relabel(traj, np.random.default_rng(0), scheme="all")
    assert out.rewards.tolist() == [0, 1, 1] and out.terminated[-1]
    assert traj.rewards.tolist() == [0, 0, 0, 0]


def test_relabel_leaves_multi_episode_trajectories_alone():
    traj = hand_traj([A], [[], [B], [C]], k=2)
    traj.observations["reset"] = np.array([[1], [0], [1], [0]], np.float32)
    assert_same(relabel(traj, np.random.default_rng(0), scheme="all"), traj)
    traj.observations["reset"][2] = 0
    assert relabel(traj, np.random.default_rng(0), scheme="all").rewards.sum() == 1  # one episode: relabeled
