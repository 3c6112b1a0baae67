"""AMAGO takes whatever env SB3 takes (issue 16, part 1): plain VecEnvs, callbacks with plain eval envs,
``evaluate_policy`` through ``model.wrap_env``, one rule for ``gym.make``, warnings for reward-normalizing and
frame-stacking VecEnv wrappers."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack, VecNormalize

import wrappers
from amago_sb import AMAGO
from wrappers import is_trajectory_space
from wrappers.envs import _PLAIN, _TRAJECTORY_ONLY
from wrappers.vec_trajectory import VecTrajectoryWrapper

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=1, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))


class _MultiDiscreteEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.MultiDiscrete([2, 3], start=[0, -1])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, float(action[1]), self.t >= 5 and action[0] == 1, self.t >= 7, {}


def _compare(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("make", [
    lambda: gym.make("popgym-AutoencodeEasy-v0"),  # Dict observation (from a Tuple), fixed horizon
    lambda: gym.make("TMazePassive-v0"),
    lambda: gym.make("PointMassCue-v0"),  # Box actions
    lambda: gym.wrappers.TimeLimit(_MultiDiscreteEnv(), 7),  # MultiDiscrete actions with a start offset
], ids=["autoencode", "tmaze", "pointmass", "multidiscrete"])
def test_vec_trajectory_wrapper_matches_the_per_env_wrapper(make):
    n, steps = 3, 120
    per_env = make_vec_env(lambda: wrappers.TrajectoryWrapper(make()), n_envs=n, seed=3)
    vec = VecTrajectoryWrapper(make_vec_env(make, n_envs=n, seed=3))
    assert vec.observation_space == per_env.observation_space
    assert vec.get_attr("max_episode_steps") == per_env.get_attr("max_episode_steps")
    _compare(vec.reset(), per_env.reset())
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(steps):
        actions = np.stack([per_env.action_space.sample() for _ in range(n)])
        if isinstance(per_env.action_space, spaces.Box):
            actions = rng.uniform(-1, 1, actions.shape).astype(np.float32)
        o1, r1, d1, i1 = vec.step(actions.copy())  # copies: an env may clip its action in place
        o2, r2, d2, i2 = per_env.step(actions.copy())
        _compare(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for i in np.flatnonzero(d2):
            episodes += 1
            _compare(i1[i]["terminal_observation"], i2[i]["terminal_observation"])
            assert i1[i].get("TimeLimit.truncated") == i2[i].get("TimeLimit.truncated")
            assert i1[i].get("truncated") == i2[i].get("truncated")
    assert episodes > 0


def test_amago_trains_on_plain_vec_envs_including_subprocesses():
    model = AMAGO("Transformer", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **TINY)
    model.learn(48)
    assert model.num_timesteps == 48 and isinstance(model.get_env(), VecTrajectoryWrapper)
    # "module:id" makes gymnasium import the module (which registers the id) in each worker process
    sub = make_vec_env("wrappers:TMazePassive-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        model = AMAGO("Transformer", sub, seed=0, **TINY)
        model.learn(32)
        assert model.replay.num_trajectories >= 0 and model.num_timesteps == 32
    finally:
        sub.close()


def test_load_takes_plain_envs_as_the_constructor_does(tmp_path):
    """rl_zoo3's ``-i`` passes the plain VecEnv it built: ``AMAGO.load`` puts it in trajectory form first."""
    model = AMAGO("Transformer", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **TINY)
    model.learn(32)
    model.save(tmp_path / "m.zip")
    for env in (make_vec_env("CartPole-v1", n_envs=2, seed=1), gym.make("CartPole-v1")):
        loaded = AMAGO.load(tmp_path / "m.zip", env=env)
        assert wrappers.is_trajectory_space(loaded.get_env().observation_space)
        loaded.learn(16, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="does not match the saved model"):
        AMAGO.load(tmp_path / "m.zip", env=gym.make("Pendulum-v1"))


def test_eval_callback_with_a_plain_eval_env(tmp_path):
    model = AMAGO("Transformer", "TMazePassive-v0", seed=0, **TINY)
    for eval_env in (gym.make("TMazePassive-v0"), make_vec_env("TMazePassive-v0", n_envs=1, seed=1)):
        cb = EvalCallback(eval_env, n_eval_episodes=1, eval_freq=8, log_path=str(tmp_path), verbose=0)
        model.learn(32, callback=cb)
        assert is_trajectory_space(cb.eval_env.observation_space)
        assert len(np.load(tmp_path / "evaluations.npz")["results"]) == 2


def test_evaluate_policy_through_wrap_env():
    model = AMAGO("Transformer", "TMazePassive-v0", seed=0, **TINY)
    for env in (gym.make("TMazePassive-v0"), "TMazePassive-v0", make_vec_env("TMazePassive-v0", n_envs=2)):
        mean, _ = evaluate_policy(model, model.wrap_env(env), n_eval_episodes=2)
        assert np.isfinite(mean)
    with pytest.raises(ValueError, match=r"model\.wrap_env\(env\)"):
        evaluate_policy(model, gym.make("TMazePassive-v0"), n_eval_episodes=1)
    with pytest.raises(ValueError, match="wrap_env: the env's spaces"):
        model.wrap_env("CartPole-v1")


def test_gym_make_gives_the_plain_env_for_every_id_that_has_one():
    import popgym.envs

    ids = [*_PLAIN, "popgym-RepeatPreviousEasy-v0", "popgym-AutoencodeEasy-v0"]
    ids = [i for i in ids if i != "Crafter-v0" or _crafter_installed()]
    for env_id in ids:
        assert not is_trajectory_space(gym.make(env_id).observation_space), env_id
        assert is_trajectory_space(gym.make(env_id, trajectory=True).observation_space), env_id
        assert is_trajectory_space(wrappers.make_env(env_id).observation_space), env_id
    for env_id in _TRAJECTORY_ONLY:  # the instruction / trial ids exist only in trajectory form
        if env_id.startswith("Crafter") and not _crafter_installed():
            continue
        assert is_trajectory_space(gym.make(env_id).observation_space), env_id
    assert len(popgym.envs.ALL) >= 40
    assert wrappers.make_env("popgym-RepeatPreviousEasy-v0").truncated_is_done  # POPGym declares fixed_horizon
    assert not wrappers.make_env("TMazePassive-v0").truncated_is_done


def _crafter_installed() -> bool:
    try:
        import crafter  # noqa: F401
    except ImportError:
        return False
    return True


def test_reward_normalizing_and_frame_stacking_wrappers_warn():
    with pytest.warns(UserWarning, match="norm_reward"):
        AMAGO("Transformer", VecNormalize(make_vec_env("CartPole-v1", n_envs=2)), **TINY)
    with pytest.warns(UserWarning, match="VecFrameStack"):
        AMAGO("Transformer", VecFrameStack(make_vec_env(lambda: wrappers.make_env("TMazePassive-v0"), n_envs=2), 2),
              **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the right ways round: no warning
        AMAGO("Transformer", VecNormalize(make_vec_env("CartPole-v1", n_envs=2), norm_reward=False), **TINY)
        AMAGO("Transformer", VecFrameStack(make_vec_env("CartPole-v1", n_envs=2), 2), **TINY)


def test_policy_save_and_load_round_trip_without_pickle(tmp_path):
    import torch

    from amago_sb.policy import TransformerPolicy

    model = AMAGO("Transformer", "TMazePassive-v0", seed=0, **TINY)
    model.policy.save(tmp_path / "policy.pt")
    loaded = TransformerPolicy.load(tmp_path / "policy.pt", device="cpu")
    for k, v in model.policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    obs = model.get_env().reset()
    a1, _ = model.policy.predict(obs, deterministic=True)
    a2, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    torch.load(tmp_path / "policy.pt", weights_only=True)  # the file holds tensors and strings only


def test_sampler_cache_cap_is_a_constructor_argument():
    model = AMAGO("Transformer", "TMazePassive-v0", sampler_cache_bytes=12345, **TINY)
    assert model.sampler.cache.max_bytes == 12345


def test_sb3_policy_kwargs_for_amago_is_a_one_line_error(tmp_path, capsys):
    from zoo.train import main

    with pytest.raises(SystemExit) as e:
        main(["--algo", "amago", "--env", "TMazePassive-v0", "-f", str(tmp_path), "-params",
              "policy_kwargs:{net_arch: [64]}"])
    assert e.value.code == 2 and "net_arch" in capsys.readouterr().err
