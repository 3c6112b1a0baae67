"""SB3 API of ``AMAGO``: construction from ids / envs / VecEnvs, learn, predict with state, evaluate_policy,
callbacks, save/load, GRU/FF policies, several action and observation spaces, and bad input. Tiny configs only."""

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import wrappers
from amago_sb import AMAGO
from amago_sb.networks import GRUState, KVCache, NoState
from amago_sb.policy import RAW_OBS_HELP

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))


def tiny(policy="Transformer", env="TMazePassive-v0", **kw):
    args = {**TINY, **kw}
    return AMAGO(policy, env, seed=0, **args)


class _ToyEnv(gym.Env):
    """Configurable little env: image / Box observations, MultiDiscrete / Box actions."""

    def __init__(self, obs="box", act="multidiscrete", reward=1.0):
        self.observation_space = (spaces.Box(0, 255, (8, 8, 3), np.uint8) if obs == "image"
                                  else spaces.Box(-1, 1, (3,), np.float32))
        self.action_space = spaces.MultiDiscrete([2, 3]) if act == "multidiscrete" else spaces.Box(-2, 2, (2,), np.float32)
        self.reward, self.t = reward, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert action in self.action_space, action
        self.t += 1
        return self.observation_space.sample(), self.reward, self.t >= 6, False, {}


def test_learn_predict_evaluate_with_env_id_and_kv_cache_state():
    model = tiny()
    model.learn(80, progress_bar=True)
    assert model._n_updates > 0 and model.replay.num_trajectories > 0
    env = model.get_env()
    assert wrappers.is_trajectory_space(env.observation_space) and env.num_envs == 2
    obs = env.reset()
    actions, state = model.predict(obs, state=None, episode_start=np.ones(2, bool), deterministic=True)
    assert actions.shape == (2,) and isinstance(state, KVCache) and state.count.tolist() == [1, 1]
    obs, *_ = env.step(actions)
    _, state = model.predict(obs, state=state, episode_start=np.array([True, False]), deterministic=True)
    assert state.count.tolist() == [1, 2]
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    assert len(returns) == 4 and lengths == [env.get_attr("max_episode_steps")[0]] * 4  # whole episodes, context reset


def test_single_unbatched_observation_gives_unbatched_action():
    model = tiny()
    env = wrappers.make_env("TMazePassive-v0")
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert np.ndim(action) == 0 and env.action_space.contains(int(action))


def test_save_load_round_trip_predicts_identically(tmp_path):
    model = tiny()
    model.learn(80)
    path = tmp_path / "amago.zip"
    model.save(path)
    loaded = AMAGO.load(path, env=model.get_env())
    assert loaded._n_updates == model._n_updates and loaded.context_len == model.context_len
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values()):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(loaded.policy.popart.mu, model.policy.popart.mu)
    env = model.get_env()
    obs = env.reset()
    s1 = s2 = None
    start = np.ones(2, bool)
    for _ in range(6):
        a1, s1 = model.predict(obs, s1, start, deterministic=True)
        a2, s2 = loaded.predict(obs, s2, start, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        obs, _, start, _ = env.step(a1)
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    assert any(k.startswith("target_critics.") for k in params["policy"])  # targets + PopArt travel with the policy
    assert "popart.mu" in params["policy"] and "tstep_encoder.norm.mu" in params["policy"]
    # the optimizer state came back too, and training continues
    assert len(loaded.policy.optimizer.state) == len(model.policy.optimizer.state)
    loaded.learn(16, reset_num_timesteps=False)


def test_eval_and_checkpoint_callbacks(tmp_path):
    model = tiny()
    eval_env = make_vec_env(lambda: wrappers.make_env("TMazePassive-v0"), n_envs=1)
    cbs = [EvalCallback(eval_env, eval_freq=20, n_eval_episodes=2, best_model_save_path=str(tmp_path / "best"),
                        log_path=str(tmp_path / "eval")),
           CheckpointCallback(save_freq=20, save_path=str(tmp_path / "ckpt"))]
    model.learn(80, callback=cbs)
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    ckpts = list((tmp_path / "ckpt").glob("*.zip"))
    assert ckpts
    AMAGO.load(ckpts[0])  # loads without an env, for prediction


def test_tensorboard_keys_are_logged(tmp_path):
    from stable_baselines3.common.logger import configure

    model = tiny(gradient_steps=3)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(120, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "train/critic_loss", "train/actor_loss",
                "train/filtered_bc_frac", "train/q_mean_g0.999", "train/attn_entropy_l0", "train/grad_norm",
                "train/learning_rate", "time/fps"):
        assert key in header, key


@pytest.mark.parametrize("policy,state_type", [("GRU", GRUState), ("FF", NoState)])
def test_gru_and_ff_policies(policy, state_type):
    model = tiny(policy)
    model.learn(48)
    obs = model.get_env().reset()
    _, state = model.predict(obs, episode_start=np.ones(2, bool))
    assert isinstance(state, state_type)


def test_box_actions_and_images():
    env = _ToyEnv(obs="image", act="box")
    model = tiny(env=env, learning_starts=8)
    model.learn(40)
    obs = model.get_env().reset()
    a, _ = model.predict(obs)
    assert a.shape == (1, 2) and np.all(np.abs(a) <= 2)
    single = wrappers.make_env(_ToyEnv(obs="image", act="box"))  # channel-last, not transposed by SB3
    a1, _ = model.predict(single.reset(seed=0)[0])
    assert a1.shape == (2,)


def test_multidiscrete_actions():
    model = tiny(env=_ToyEnv(obs="box", act="multidiscrete"), learning_starts=8)
    model.learn(40)
    a, _ = model.predict(model.get_env().reset())
    assert a.shape == (1, 2) and a[0, 0] in (0, 1) and a[0, 1] in (0, 1, 2)


def test_instruction_env_relabels_by_default():
    model = tiny(env="GoalGridInstruction-v0")
    assert model.relabel is True and model.sampler.relabel is wrappers.relabel
    model.learn(40)
    with pytest.raises(ValueError, match=re.escape("relabel=True needs an instruction env")):
        tiny(relabel=True)


# ---------------------------------------------------------------------------------------------------- bad input
def test_raw_observations_to_predict_raise_clear_error():
    model = tiny()
    raw_obs, _ = gym.make("TMazePassive-v0").reset(seed=0)
    with pytest.raises(ValueError, match=re.escape(RAW_OBS_HELP)):
        model.predict(raw_obs)
    with pytest.raises(ValueError, match="model.get_env()"):
        model.predict({"obs": raw_obs})


def test_unknown_policy_alias_and_bad_context_len():
    with pytest.raises(ValueError, match="Unknown AMAGO policy 'Mamba'"):
        AMAGO("Mamba", "TMazePassive-v0")
    with pytest.raises(ValueError, match=r"context_len .* must be in \[1, inf\], got 0"):
        AMAGO("Transformer", "TMazePassive-v0", context_len=0)


def test_unsupported_action_space():
    class MB(_ToyEnv):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.MultiBinary(3)

    with pytest.raises(ValueError, match="MultiBinary|unsupported action space"):
        AMAGO("Transformer", MB())


def test_set_env_and_load_with_mismatched_spaces(tmp_path):
    model = tiny()
    other = make_vec_env(lambda: wrappers.make_env("TwoArmedBandit-v0"), n_envs=2)
    with pytest.raises(ValueError, match="does not match"):
        model.set_env(other)
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="does not match the saved model"):
        AMAGO.load(tmp_path / "m.zip", env=other)
    model.set_env(make_vec_env(lambda: wrappers.make_env("TMazePassive-v0"), n_envs=2))  # same spaces: fine


def test_plain_vecenv_is_put_in_trajectory_form():
    from wrappers.vec_trajectory import VecTrajectoryWrapper

    model = tiny(env=make_vec_env("TMazePassive-v0", n_envs=2))
    assert isinstance(model.get_env(), VecTrajectoryWrapper)
    model.learn(32)
    assert model.replay.num_trajectories >= 0 and model.num_timesteps == 32


def test_nan_loss_stops_with_update_number():
    model = tiny()
    model.learn(40)
    with torch.no_grad():
        model.policy.critics.l3.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=rf"at update {model._n_updates + 1}\b"):
        model.train(1, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_learn_predict_and_reload_on_cpu(tmp_path):
    model = tiny(device="cuda")
    model.learn(64)
    assert next(model.policy.parameters()).is_cuda
    obs = model.get_env().reset()
    a_gpu, _ = model.predict(obs, episode_start=np.ones(2, bool), deterministic=True)
    model.save(tmp_path / "m.zip")
    cpu = AMAGO.load(tmp_path / "m.zip", env=model.get_env(), device="cpu")
    a_cpu, _ = cpu.predict(obs, episode_start=np.ones(2, bool), deterministic=True)
    np.testing.assert_array_equal(a_gpu, a_cpu)


def test_callback_stop_then_resume_keeps_recorder_consistent():
    from stable_baselines3.common.callbacks import StopTrainingOnMaxEpisodes

    model = tiny()
    model.learn(10_000, callback=StopTrainingOnMaxEpisodes(max_episodes=3))
    stopped_at = model.num_timesteps
    assert stopped_at < 10_000
    model.learn(40, reset_num_timesteps=False)
    assert model.num_timesteps >= stopped_at + 40
    model.recorder.flush()
    # no step was lost around the stop: the normalized time advances by exactly one step per stored row
    for path in model.replay.paths():
        traj = model.replay.load(path)
        steps = np.diff(traj.observations["time"][:, 0])
        np.testing.assert_allclose(steps, steps[0], atol=1e-6)


def test_same_seed_same_training():
    from amago_sb import GRUPolicy

    params = []
    for _ in range(2):
        model = tiny(GRUPolicy)  # a policy class works as well as an alias
        model.learn(48)
        params.append(torch.cat([p.detach().flatten() for p in model.policy.parameters()]))
    torch.testing.assert_close(params[0], params[1])


def test_sampler_workers_feed_updates():
    model = tiny(sampler_workers=1)
    before = torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])
    model.learn(64)
    # updates run from the first stored episode on (11 steps x 2 envs): phases at 24, 32, ..., 64 env steps
    assert model._n_updates == 6 * model.gradient_steps  # every one of them got its batch from the worker process
    assert type(model._batches[1]).__name__ == "_MultiProcessingDataLoaderIter"
    after = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    assert not torch.equal(before, after)


def test_default_update_ratio_follows_n_envs():
    one = AMAGO("Transformer", gym.make("TMazePassive-v0"), seed=0)
    eight = AMAGO("Transformer", "TMazePassive-v0", seed=0)
    assert one.updates_per_phase == 1 and eight.updates_per_phase == 8  # 1 update per 16 env steps in both
    assert tiny().updates_per_phase == TINY["gradient_steps"]


def test_long_episodes_chunked_and_acting_past_the_context():
    model = tiny(context_len=4, chunk_len=6)  # TMaze episodes: 11 steps > chunk of 6 > context of 4
    model.learn(120)
    offsets = [model.replay.load(p).time_offset for p in model.replay.paths()]
    assert max(offsets) > 0  # chunks of one episode keep their absolute position
    batch = model.sampler.sample(16)
    assert int(batch.time_idx.max()) >= 4  # windows from late in the episode carry absolute time indices
    env = model.get_env()
    obs, state, start = env.reset(), None, np.ones(2, bool)
    for _ in range(8):  # beyond context_len: the KV cache slides
        a, state = model.predict(obs, state, start, deterministic=True)
        obs, _, start, _ = env.step(a)
    assert int(state.count.max()) >= 5


def test_context_len_episode_is_the_whole_episode_and_windows_keep_the_first_row():
    from amago_sb.algorithm import episode_context_len

    model = AMAGO("Transformer", "popgym-RepeatFirstEasy-v0", context_len="episode", n_envs=2, learning_starts=0,
                  policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2), seed=0)
    T = model.env.get_attr("max_episode_steps")[0]
    assert model.context_len == T + 1 and model.policy.cfg["context_len"] == T + 1
    model.learn(2 * (T + 1), log_interval=0)  # at least one whole episode per env
    batch = model.sampler.sample(16)
    full = batch.mask.sum(1) == T + 1
    assert full.any() and bool((batch.observations["reset"][full, 0, 0] == 1).all())  # the cue row is in the window
    with pytest.raises(ValueError, match="needs one known episode length"):
        from gymnasium.envs.classic_control import CartPoleEnv  # no time limit: the episode length is unknown

        episode_context_len(make_vec_env(lambda: wrappers.make_env(CartPoleEnv()), n_envs=1))


def test_gamma_presets_and_main_gamma_pick_the_acting_head():
    from amago_sb.algorithm import GAMMA_PRESETS

    tiny = dict(n_envs=1, policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2))
    discrete = AMAGO("FF", "popgym-RepeatPreviousEasy-v0", gammas="discrete", **tiny)
    # the paper's 18-entry list holds 0.999 twice (once listed, once appended as the main gamma): 17 distinct
    assert len(discrete.gammas) == 17 and max(discrete.gammas) == 0.9995
    assert discrete.policy.main_gamma == pytest.approx(0.9995)
    box = AMAGO("FF", "PointMassCue-v0", gammas="continuous", **tiny)
    assert box.gammas == GAMMA_PRESETS["continuous"] and len(box.gammas) == 6
    model = AMAGO("FF", "popgym-RepeatPreviousEasy-v0", gammas=[0.9, 0.999], main_gamma=0.5, **tiny)
    assert model.gammas == (0.5, 0.9, 0.999) and model.policy.main_index == 0
    last = model.policy.actor.net.net[-1]  # head g's logits prefer action g (G = 3 heads, A = 4 actions)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.eye(3, 4).flatten() * 5.0)
    obs = model.get_env().reset()
    action, _ = model.predict(obs, episode_start=np.ones(1, bool), deterministic=True)
    assert int(action[0]) == 0  # the head of main_gamma=0.5, not the largest discount's (action 2)
    with pytest.raises(ValueError, match="not a preset"):
        AMAGO("FF", "popgym-RepeatPreviousEasy-v0", gammas="long", **tiny)
    with pytest.raises(TypeError, match=re.escape("for one discount pass gammas=[0.99]")):
        AMAGO("FF", "popgym-RepeatPreviousEasy-v0", gammas=0.99, **tiny)


def test_dropout_option_is_active_in_training_only():
    model = AMAGO("Transformer", "popgym-RepeatPreviousEasy-v0", n_envs=2, learning_starts=0,
                  policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, dropout=0.05), seed=0)
    assert model.policy.cfg["dropout"] == 0.05
    model.learn(64, log_interval=0)
    batch = model.sampler.sample(4)
    pol = model.policy

    def features():
        return pol.encode(batch.observations, batch.time_idx, batch.mask)[0]

    pol.set_training_mode(True)
    with torch.no_grad():
        assert not torch.allclose(features(), features())  # dropout masks differ between training passes
    pol.set_training_mode(False)
    with torch.no_grad():
        torch.testing.assert_close(features(), features())  # acting / evaluation: deterministic


def test_logs_are_written_on_schedule_without_finished_episodes(tmp_path):
    """Episodes longer than the run (as Crafter's 10,000 steps): train/ and rollout/ keys still get written."""
    import csv

    from stable_baselines3.common.logger import configure

    env = make_vec_env(lambda: wrappers.make_env("TMazePassive-v0", corridor_length=500), n_envs=2)
    model = tiny(env=env, learning_starts=16, log_interval_steps=64)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(256)
    assert model._episode_num == 0  # no episode finished
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert len(rows) >= 3 and rows[-1]["train/critic_loss"] and rows[-1]["rollout/exploration_eps"]


def test_popart_init_nu_is_a_policy_option():
    model = tiny(policy_kwargs={**TINY["policy_kwargs"], "popart_init_nu": 1.0})
    assert float(model.policy.popart.nu[0]) == 1.0 and float(tiny().policy.popart.nu[0]) == 100.0


def test_box_entropy_coefficient_is_learned_saved_and_logged(tmp_path):
    from stable_baselines3.common.logger import configure

    model = tiny(env=_ToyEnv(act="box"), learning_starts=8, ent_coef="auto_0.5")
    assert model.policy.target_entropy == -2.0  # "auto": minus the action dimension
    assert any(p is model.policy.log_ent_coef for g in model.policy.optimizer.param_groups for p in g["params"])
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)
    alpha = model.policy.ent_coef()
    assert alpha.shape == model.policy.gammas.shape  # one coefficient per gamma head
    assert not torch.allclose(alpha, torch.full_like(alpha, 0.5))  # trained towards the target entropy
    assert "train/ent_coef_g0.999" in open(tmp_path / "progress.csv").readline()
    model.save(tmp_path / "m.zip")
    loaded = AMAGO.load(tmp_path / "m.zip")
    torch.testing.assert_close(loaded.policy.ent_coef(), alpha)
    fixed = tiny(env=_ToyEnv(act="box"), ent_coef=0.2)
    assert fixed.policy.log_ent_coef is None and float(fixed.policy.ent_coef()[0]) == pytest.approx(0.2)
    assert tiny(env=_ToyEnv(act="box"), ent_coef=0.0).policy.ent_coef() is None
    default = tiny(env=_ToyEnv(act="box")).policy  # Box default: learned, starting at 0.1
    assert default.log_ent_coef is not None and float(default.ent_coef()[0]) == pytest.approx(0.1)
    assert tiny().policy.ent_coef() is None  # discrete actions: no entropy term
    with pytest.raises(ValueError, match=re.escape("policy_kwargs['ent_coef']")):
        tiny(env=_ToyEnv(act="box"), policy_kwargs={**TINY["policy_kwargs"], "ent_coef": 0.2})


def test_entropy_coefficient_rises_when_the_policy_is_below_its_target_entropy():
    from amago_sb.losses import amago_loss

    model = tiny(env=_ToyEnv(act="box"), learning_starts=8, ent_coef="auto", target_entropy=5.0)
    model.learn(40)  # fills the replay
    batch = model.sampler.sample(4)
    model.policy.optimizer.zero_grad()
    loss, _ = amago_loss(model.policy, batch, model.loss_config)
    loss.backward()
    assert (model.policy.log_ent_coef.grad < 0).all()  # descent raises alpha: a tanh-Gaussian cannot reach +5 nats


@pytest.mark.parametrize("kwargs, match", [
    (dict(ent_coef="sometimes"), "ent_coef='sometimes'"), (dict(ent_coef=-1.0), "ent_coef=-1.0"),
    (dict(ent_coef="auto_0"), "after 'auto_'"), (dict(ent_coef="autox"), "ent_coef='autox'"),
    (dict(ent_coef="auto_abc"), "ent_coef='auto_abc'"), (dict(target_entropy="high"), "target_entropy='high'")])
def test_bad_entropy_options_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        tiny(env=_ToyEnv(act="box"), **kwargs)


def test_entropy_term_on_discrete_actions_is_refused():
    with pytest.raises(ValueError, match="Box action spaces only"):
        tiny(ent_coef="auto")


def test_instruction_success_is_logged_and_shown_on_the_progress_bar(tmp_path):
    import csv

    from stable_baselines3.common.callbacks import ProgressBarCallback
    from stable_baselines3.common.logger import configure

    model = tiny(env="GoalGridInstruction-v0", relabel=False)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    bar = ProgressBarCallback()
    model.learn(400, callback=bar, log_interval=1)
    assert len(model.ep_success_buffer) > 0  # the instruction env reports SB3's is_success at episode ends
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert any(r.get("rollout/success_rate") not in (None, "") for r in rows)
    assert "success" in str(bar.pbar.postfix)


# ---------------------------------------------------------------------------------------------------- CPU threads
class _ThreadLog(AMAGO):
    """Records torch's thread count in each phase of learn()."""

    def collect_rollouts(self, callback):
        self.acting_threads = {*getattr(self, "acting_threads", set()), torch.get_num_threads()}
        return super().collect_rollouts(callback)

    def train(self, gradient_steps, batch_size):
        self.update_threads = {*getattr(self, "update_threads", set()), torch.get_num_threads()}
        return super().train(gradient_steps, batch_size)


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_auto_threads_act_with_one_update_with_torchs_count_and_restore_it(two_torch_threads):
    model = _ThreadLog("Transformer", "TMazePassive-v0", seed=0, **TINY)  # num_threads="auto" (default)
    model.learn(80)
    assert model.acting_threads == {1} and model.update_threads == {2}
    assert torch.get_num_threads() == 2  # each phase restored the count it found


def test_int_threads_apply_to_every_phase_and_bad_values_name_the_argument(two_torch_threads):
    model = _ThreadLog("Transformer", "TMazePassive-v0", seed=0, num_threads=1, **TINY)
    model.learn(80)
    assert model.acting_threads == model.update_threads == {1} and torch.get_num_threads() == 1
    for bad in (0, "all", 1.5):
        with pytest.raises((ValueError, TypeError), match="num_threads"):
            tiny(num_threads=bad)
