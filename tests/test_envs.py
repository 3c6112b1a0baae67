"""Shipped toy envs (GoalGrid, bandits, passive T-maze) and TrialWrapper task persistence."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wrappers  # noqa: F401  (registers the ids)
from wrappers import KeepTaskError, TrialWrapper, is_trajectory_space, make_env
from wrappers.envs.bandits import MetaBanditEnv, TwoArmedBanditEnv
from wrappers.envs.continuous_memory import ContinuousRecallEnv, PointMassCueEnv
from wrappers.envs.goal_grid import GOAL_GRID_VOCABULARY, GoalGridEnv, has_held_out_pair
from wrappers.envs.tmaze import TMazePassiveEnv
from wrappers.instruction import PAD


@pytest.mark.parametrize("env_cls", [GoalGridEnv, MetaBanditEnv, TwoArmedBanditEnv, TMazePassiveEnv, PointMassCueEnv,
                                     ContinuousRecallEnv])
def test_check_env_raw_and_trajectory_form(env_cls):
    check_env(env_cls(), skip_render_check=True)
    check_env(make_env(env_cls()), skip_render_check=True)


@pytest.mark.parametrize(
    "env_id",
    ["GoalGrid-v0", "GoalGridInstruction-v0", "MetaBandit-v0", "MetaBanditTrial-v0", "TwoArmedBandit-v0", "TMazePassive-v0",
     "PointMassCue-v0", "ContinuousRecall-v0"],
)
def test_registered_ids(env_id):
    env = make_env(env_id)
    assert is_trajectory_space(env.observation_space)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
        assert obs in env.observation_space


@pytest.mark.parametrize("env_id", ["GoalGrid-v0", "MetaBandit-v0", "TwoArmedBandit-v0", "TMazePassive-v0",
                                    "PointMassCue-v0", "ContinuousRecall-v0"])
def test_trajectory_kwarg_plain_envs(env_id):
    plain = gym.make(env_id, trajectory=False)
    assert not is_trajectory_space(plain.observation_space)
    assert not is_trajectory_space(gym.make(env_id).observation_space)  # plain by default
    traj = gym.make(env_id, trajectory=True)
    assert is_trajectory_space(traj.observation_space)
    assert traj.get_wrapper_attr("max_episode_steps") == plain.unwrapped.max_episode_length


def test_truncated_is_done_kwarg_of_shipped_trajectory_forms():
    """gym.make(id, trajectory=True, truncated_is_done=...) sets how the trajectory form reports the time limit."""
    for flag in (True, False):
        env = gym.make("PointMassCue-v0", trajectory=True, truncated_is_done=flag)
        env.reset(seed=0)
        ends = []
        for _ in range(env.get_wrapper_attr("max_episode_steps")):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            ends.append((terminated, truncated))
        assert ends[-1] == ((True, False) if flag else (False, True))
    with pytest.raises(ValueError, match="truncated_is_done=True applies to the trajectory form"):
        gym.make("PointMassCue-v0", truncated_is_done=True)


@pytest.mark.parametrize("env_id", ["GoalGridInstruction-v0", "MetaBanditTrial-v0"])
def test_trajectory_only_envs_accept_the_kwarg(env_id):
    for flag in (False, True):
        assert is_trajectory_space(gym.make(env_id, trajectory=flag).observation_space)


def test_goal_grid_time_is_normalized():
    env = gym.make("GoalGridInstruction-v0", max_episode_length=20)
    env.reset(seed=0)
    for t in range(1, 21):
        obs, _, term, trunc, _ = env.step(0)  # stay: nothing achieved
        assert obs["time"][0] == pytest.approx(t / 20)
    assert trunc and not term


def test_goal_grid_held_out_split_separates_instructions():
    env, rng = GoalGridEnv(), np.random.default_rng(0)
    draws = {split: [env.sample_instruction(rng, 3, split) for _ in range(400)] for split in ("all", "train", "test")}
    assert not any(has_held_out_pair(g) for g in draws["train"])
    assert all(has_held_out_pair(g) and 2 <= len(g) <= 3 for g in draws["test"])
    assert 0 < np.mean([has_held_out_pair(g) for g in draws["all"]]) < 0.5  # "all" mixes both
    assert {len(g) for g in draws["train"]} == {1, 2, 3}
    # the registered instruction env hands the held-out instruction to the agent in its observation
    test_env = gym.make("GoalGridInstruction-v0", split="test")
    decode = test_env.get_wrapper_attr("decode_goal")
    for seed in range(20):
        obs, _ = test_env.reset(seed=seed)
        goals = [decode(row) for row in obs["instruction"] if row[0] != PAD]
        assert has_held_out_pair(goals) and all(g[0] in GOAL_GRID_VOCABULARY for g in goals), goals
    with pytest.raises(ValueError, match="split must be one of"):
        gym.make("GoalGridInstruction-v0", split="val")
    with pytest.raises(ValueError, match="instruction_len >= 2"):
        gym.make("GoalGridInstruction-v0", split="test", instruction_len=1)


def test_check_env_trial_wrapper():
    check_env(TrialWrapper(MetaBanditEnv(pulls=3), episodes=3), skip_render_check=True)


def test_trial_task_persists_within_and_changes_across_trials():
    env = TrialWrapper(MetaBanditEnv(arms=4, pulls=3), episodes=3)
    probs_per_trial = []
    for trial in range(3):
        obs, info = env.reset(seed=trial if trial == 0 else None)
        probs = info["arm_probs"]
        seen_episodes, steps, done = {0}, 0, False
        while not done:
            obs, reward, term, trunc, info = env.step(1)
            steps += 1
            done = term or trunc
            np.testing.assert_array_equal(info["arm_probs"], probs)  # same task within the trial
            seen_episodes.add(info["trial_episode"])
            if info["inner_episode_done"] and not done:
                assert obs["reset"][0] == 1  # inner start
                assert obs["prev_action"].tolist() == [0, 1, 0, 0]  # carries the last transition
                assert obs["prev_reward"][0] == reward
        assert steps == 9 and seen_episodes == {0, 1, 2} and term and not trunc
        assert obs["time"][0] == pytest.approx(1.0)
        probs_per_trial.append(probs)
    assert not np.allclose(probs_per_trial[0], probs_per_trial[1])
    assert not np.allclose(probs_per_trial[1], probs_per_trial[2])


def test_trial_single_episode_is_plain_episode():
    env = TrialWrapper(MetaBanditEnv(pulls=2), episodes=1)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[2] is True


class ForgetfulBandit(MetaBanditEnv):
    """Ignores keep_task: always draws a new task."""

    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed, options=None)


class NoOptionsEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None):  # old-style signature without options
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


def test_trial_bad_input():
    env = TrialWrapper(ForgetfulBandit(pulls=2), episodes=2)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(KeepTaskError, match=re.escape("ForgetfulBandit changed its task_id from")):
        env.step(0)
    with pytest.raises(KeepTaskError, match="does not accept `options`"):
        TrialWrapper(NoOptionsEnv(), episodes=2)
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        TrialWrapper(MetaBanditEnv(), episodes=0)


def test_two_armed_bandit_oracle():
    env = TwoArmedBanditEnv()
    _, info = env.reset(seed=3)
    assert info["oracle_return"] == pytest.approx(24.0)
    good, total, steps, done = info["good_arm"], 0.0, 0, False
    while not done:
        _, r, done, _, info = env.step(good)
        total += r
        steps += 1
    assert steps == 30 and 15 <= total <= 30
    goods = {env.reset(seed=s)[1]["good_arm"] for s in range(10)}
    assert goods == {0, 1}


def test_tmaze_memory_task():
    env = TMazePassiveEnv(corridor_length=4, step_penalty=0.01)
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        cue = info["cue"]
        assert obs[0] == cue and obs[2] == 0
        for _ in range(4):
            obs, r, term, trunc, _ = env.step(0)
            assert obs[0] == 0 and r == pytest.approx(-0.01) and not term
        assert obs[2] == 1
        obs, r, term, _, info = env.step(2 if cue == 1 else 3)
        assert r == 1.0 and term and info["success"]
    env.reset(seed=0)
    cue = env.cue
    for _ in range(4):
        env.step(0)
    assert env.step(3 if cue == 1 else 2)[1] == -1.0
    env.reset(seed=0)
    for _ in range(4):
        *_, trunc, _ = env.step(1)
    assert not trunc and env.step(1)[3] is True  # truncated after corridor_length + 1 steps
    traj = make_env("TMazePassive-v0", corridor_length=4)
    assert traj.max_episode_steps == 5


def test_tmaze_behind_schedule_penalty_only_when_late():
    """Walking right every step costs nothing; one wasted step costs 1/corridor on every later corridor step."""
    env = TMazePassiveEnv(corridor_length=4, behind_schedule_penalty=True)
    obs, info = env.reset(seed=0)
    assert [env.step(0)[1] for _ in range(4)] == [0.0] * 4
    _, reward, terminated, _, info = env.step(2 if info["cue"] == 1 else 3)
    assert terminated and reward == 1.0 and info["success"]
    env.reset(seed=1)
    rewards = [env.step(a)[1] for a in (2, 0, 0, 0)]  # "up" inside the corridor wastes the first step
    np.testing.assert_allclose(rewards, [-0.25] * 4)
    plain = TMazePassiveEnv(corridor_length=4)
    plain.reset(seed=1)
    assert [plain.step(a)[1] for a in (2, 0, 0, 0)] == [0.0] * 4  # off by default


def test_tmaze_wrong_choice_reward_and_outcome_info():
    for wrong_reward in (-1.0, 0.0):
        env = TMazePassiveEnv(corridor_length=2, wrong_choice_reward=wrong_reward)
        _, info = env.reset(seed=0)
        env.step(0), env.step(0)
        _, reward, terminated, _, info = env.step(3 if info["cue"] == 1 else 2)  # the other side
        assert terminated and reward == wrong_reward and info["success"] is False and info["chose"] is True
    env.reset(seed=0)
    for _ in range(3):
        *_, info = env.step(0)
    assert info["chose"] is False and info["success"] is False


def test_tmaze_time_limit_terminates_option():
    for flag, expected in ((False, (False, True)), (True, (True, False))):
        env = TMazePassiveEnv(corridor_length=2, behind_schedule_penalty=True, time_limit_terminates=flag)
        env.reset(seed=0)
        for _ in range(2):
            env.step(0)
        _, reward, terminated, truncated, info = env.step(0)  # waiting at the junction until the limit
        assert (terminated, truncated) == expected and reward == -0.5 and info["success"] is False
    # through gymnasium.make and the trajectory form (the zoo's path): the reset flag follows the termination
    traj = make_env("TMazePassive-v0", corridor_length=2, behind_schedule_penalty=True, time_limit_terminates=True)
    traj.reset(seed=0)
    assert [traj.step(0)[2] for _ in range(3)] == [False, False, True]


def test_toy_env_bad_arguments():
    with pytest.raises(ValueError, match="corridor_length must be >= 1"):
        TMazePassiveEnv(corridor_length=0)
    with pytest.raises(ValueError, match="arms >= 2"):
        MetaBanditEnv(arms=1)
    with pytest.raises(ValueError, match="n_objects must be in"):
        GoalGridEnv(size=2, n_objects=4)
    with pytest.raises(ValueError, match="p_bad <= p_good"):
        TwoArmedBanditEnv(p_good=0.1, p_bad=0.9)
    with pytest.raises(ValueError, match="episode_length must be an int >= 1"):
        PointMassCueEnv(episode_length=0)
    with pytest.raises(ValueError, match="goal_radius must lie in"):
        PointMassCueEnv(goal_radius=3.0)
    with pytest.raises(ValueError, match="dim must be an int >= 1"):
        ContinuousRecallEnv(dim=0)


def test_continuous_memory_envs_show_the_cue_only_first_and_reward_memory():
    env = PointMassCueEnv()
    obs, _ = env.reset(seed=0)
    goal = obs[4:6].copy()
    assert np.linalg.norm(goal) == pytest.approx(0.7, rel=1e-5) and np.all(obs[:4] == 0)
    total, ends = 0.0, []
    for _ in range(25):  # a controller that knows the goal (PD) gets close: about -1.7 per episode
        obs, r, term, trunc, info = env.step(np.clip(10 * (goal - obs[:2]) - 10 * obs[2:4], -1, 1))
        assert np.all(obs[4:6] == 0)  # the goal is hidden after the first step
        total += r
        ends.append((term, trunc))
    assert total > -2.5 and ends[-1] == (False, True) and ends[:-1] == [(False, False)] * 24
    env.reset(seed=0)
    blind = sum(env.step(np.zeros(2))[1] for _ in range(25))  # staying put: -0.7 per step
    assert blind == pytest.approx(-17.5, rel=1e-4)
    recall = ContinuousRecallEnv()
    obs, _ = recall.reset(seed=0)
    cue = obs[:2].copy()
    assert obs[2] == 1.0
    rewards = []
    for _ in range(16):
        obs, r, term, trunc, info = recall.step(cue)
        assert obs[2] == 0.0
        rewards.append(r)
    assert rewards == pytest.approx([0.0] * 16, abs=1e-6) and trunc and info["final_error"] < 1e-6


# -- episode ends: fixed horizons are terminal, real time limits bootstrap ---------------------------------------------


def test_trial_time_limit_at_the_end_of_a_trial_is_terminal():
    inner = gym.wrappers.TimeLimit(MetaBanditEnv(pulls=10), 2)  # every inner episode ends by its time limit
    env = TrialWrapper(inner, episodes=2)
    env.reset(seed=0)
    ends = [env.step(0)[2:4] for _ in range(4)]
    assert ends == [(False, False)] * 3 + [(True, False)]  # the trial's horizon: terminated, not truncated
    env = TrialWrapper(gym.wrappers.TimeLimit(MetaBanditEnv(pulls=10), 2), episodes=2, truncated_is_done=False)
    env.reset(seed=0)
    assert [env.step(0)[2:4] for _ in range(4)][-1] == (False, True)


def test_trajectory_wrapper_truncated_is_done_option():
    env = wrappers.TrajectoryWrapper(gym.wrappers.TimeLimit(TwoArmedBanditEnv(), 3), truncated_is_done=True)
    env.reset(seed=0)
    out = [env.step(0) for _ in range(3)]
    assert [o[2:4] for o in out] == [(False, False), (False, False), (True, False)]
    assert out[-1][4]["truncated"] is True
    plain = wrappers.TrajectoryWrapper(gym.wrappers.TimeLimit(TwoArmedBanditEnv(), 3))
    plain.reset(seed=0)
    assert [plain.step(0)[2:4] for _ in range(3)][-1] == (False, True)  # default: a time limit is a truncation
    with pytest.raises(TypeError, match="truncated_is_done must be a bool"):
        wrappers.TrajectoryWrapper(TwoArmedBanditEnv(), truncated_is_done="yes")


def test_recorder_stores_fixed_horizon_ends_as_terminal(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env

    from amago_sb.replay import TrajectoryStore, VecTrajectoryRecorder

    # POPGym's MultiarmedBanditEasy ends by truncation at its fixed length; the trajectory form makes that terminal
    from wrappers.vec_trajectory import VecTrajectoryWrapper

    cases = [(flag, level) for flag in (True, False, None) for level in ("env", "vec_env")]
    for truncated_is_done, level in cases:
        expect_terminal = truncated_is_done is not False  # None: POPGym declares fixed_horizon
        if level == "env":
            env = make_vec_env(lambda flag=truncated_is_done: gym.make(
                "popgym-MultiarmedBanditEasy-v0", trajectory=True, truncated_is_done=flag), n_envs=1, seed=0)
        else:
            env = VecTrajectoryWrapper(make_vec_env("popgym-MultiarmedBanditEasy-v0", n_envs=1, seed=0),
                                       truncated_is_done=truncated_is_done)
        store = TrajectoryStore(tmp_path / f"{truncated_is_done}_{level}", max_steps=10_000)
        rec = VecTrajectoryRecorder(1, store, chunk_len=512, overlap=0)
        rec.reset(env.reset())
        done = np.zeros(1, bool)
        while not done[0]:
            action = np.array([env.action_space.sample()])
            obs, rew, done, infos = env.step(action)
            rec.step(action, rew, done, infos, obs)
        (traj,) = [store.load(p) for p in sorted(store.directory.glob("*.npz"))]
        assert bool(traj.terminated[-1]) is expect_terminal and bool(traj.truncated[-1]) is not expect_terminal
