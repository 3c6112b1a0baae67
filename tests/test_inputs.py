"""Bad inputs get a typed error that names the argument (issue 12, part 2): a fuzz over the constructor, ``predict``,
``load`` and the CLI, plus the inputs that used to be silently wrong (``Discrete(start=...)``, NaN in padded slots)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

import wrappers
from amago_sb import AMAGO
from amago_sb.kernels import attention_reference, decode_attention_reference
from amago_sb.kernels.sdpa import sdpa_attention, sdpa_decode_attention

ROOT = Path(__file__).resolve().parents[1]
ENV = "TMazePassive-v0"
TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))

# (constructor kwargs, error type, text the message must contain: the argument's name)
BAD_CONSTRUCTOR = [
    (dict(max_grad_norm=0.0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=-1.0), ValueError, "max_grad_norm"),
    (dict(tau=0.0), ValueError, "tau"),
    (dict(tau=1.5), ValueError, "tau"),
    (dict(tau="0.01"), TypeError, "tau"),
    (dict(gradient_steps=-1), ValueError, "gradient_steps"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(batch_size="24"), TypeError, "batch_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(context_len=128, buffer_size=64), ValueError, "buffer_size"),
    (dict(context_len="whole"), TypeError, "context_len"),
    (dict(context_len=0), ValueError, "context_len"),
    (dict(gammas=0.99), TypeError, "gammas"),
    (dict(gammas=[1.0]), ValueError, "gammas"),
    (dict(gammas="long"), ValueError, "gammas"),
    (dict(main_gamma=1.0), ValueError, "main_gamma"),
    (dict(reward_multiplier="10"), TypeError, "reward_multiplier"),
    (dict(reward_multiplier=0.0), ValueError, "reward_multiplier"),
    (dict(learning_rate=-1e-3), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(num_critics_td=5), ValueError, "num_critics_td"),
    (dict(train_freq=0), ValueError, "train_freq"),
    (dict(n_envs=True), TypeError, "n_envs"),
    (dict(learning_starts=-1), ValueError, "learning_starts"),
    (dict(exploration_start=-0.1), ValueError, "exploration_start"),
    (dict(exploration_steps=-5), ValueError, "exploration_steps"),
    (dict(padded_sampling="middle"), ValueError, "padded_sampling"),
    (dict(exploration_class=dict), TypeError, "exploration_class"),
    (dict(replay_fsync="yes"), TypeError, "replay_fsync"),
    (dict(max_nonfinite_updates=0), ValueError, "max_nonfinite_updates"),
    (dict(critic_coeff=-1.0), ValueError, "critic_coeff"),
    (dict(buffer_size=1e6 + 0.5), TypeError, "buffer_size"),
]


@pytest.mark.parametrize("kwargs,exc,name", BAD_CONSTRUCTOR, ids=[str(k) for k, _, _ in BAD_CONSTRUCTOR])
def test_bad_constructor_argument_is_named(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        AMAGO("Transformer", ENV, n_envs=1, **kwargs)


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="Unknown AMAGO policy 'Mamba'"):
        AMAGO("Mamba", ENV)


# ---------------------------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def model() -> AMAGO:
    return AMAGO("Transformer", ENV, seed=0, **TINY)


def _obs(model: AMAGO) -> dict:
    return model.get_env().reset()


def _bad_obs_cases(model):
    obs = _obs(model)
    missing = {k: v for k, v in obs.items() if k != "prev_reward"}
    wrong_shape = {**obs, "obs": obs["obs"][:, :1]}
    wrong_envs = {k: v[:1] for k, v in obs.items()}
    bad_reset = {**obs, "reset": obs["reset"][:, None]}
    return [
        (missing, None, None, "prev_reward"),
        (wrong_shape, None, None, "'obs'"),
        (bad_reset, None, None, "'reset'"),
        (obs, None, np.array([True, False, True]), "episode_start"),
        (obs, None, np.array([2, 0]), "episode_start"),
        (obs, None, "yes", "episode_start"),
        (wrong_envs, model.policy.initial_state(2), None, "predict\\(state\\)"),
        (obs, object(), None, "predict\\(state\\)"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_predict_inputs_are_named(model, case):
    observation, state, episode_start, name = _bad_obs_cases(model)[case]
    with pytest.raises(ValueError, match=name):
        model.predict(observation, state=state, episode_start=episode_start)


def test_state_of_another_encoder_or_size_is_refused(model):
    obs = _obs(model)
    gru = AMAGO("GRU", ENV, seed=0, **TINY)
    longer = AMAGO("Transformer", ENV, seed=0, **{**TINY, "context_len": 16})
    for other in (gru, longer):
        _, state = other.predict(obs)
        with pytest.raises(ValueError, match=r"predict\(state\)"):
            model.predict(obs, state=state)


def test_raw_observation_is_refused_with_the_fix(model):
    raw, _ = gym.make(ENV).reset(seed=0)
    with pytest.raises(ValueError, match=r"model\.wrap_env\(env\)"):
        model.predict(raw)


class _BoxObsEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


def test_nan_observation_raises_before_the_context_is_written():
    m = AMAGO("Transformer", make_vec_env(lambda: wrappers.TrajectoryWrapper(_BoxObsEnv()), n_envs=1), seed=0,
              **{**TINY, "n_envs": 1})
    obs = m.get_env().reset()
    _, state = m.predict(obs)
    before = state.clone()
    bad = {**obs, "obs": obs["obs"].copy()}
    bad["obs"][0, 1] = np.nan
    with pytest.raises(ValueError, match="'obs' holds NaN"):
        m.predict(bad, state=state)
    assert torch.equal(state.count, before.count) and all(torch.equal(a, b) for a, b in zip(state.k, before.k))
    action, _ = m.predict(obs, state=state, episode_start=np.array([True]))
    assert np.isfinite(action).all()


# ---------------------------------------------------------------------------------------------------- Discrete start
class _OffsetEnv(gym.Env):
    """Observations from Discrete(3, start=5) and actions from Discrete(3, start=-1); reward 1 for action == obs - 6."""

    observation_space = spaces.Discrete(3, start=5)
    action_space = spaces.Discrete(3, start=-1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.o = int(self.np_random.integers(5, 8))
        return self.o, {}

    def step(self, action):
        assert self.action_space.contains(action), action
        reward = float(action == self.o - 6)
        self.t += 1
        self.o = int(self.np_random.integers(5, 8))
        return self.o, reward, False, self.t >= 8, {}


def test_discrete_observation_start_is_encoded_and_out_of_space_ids_raise():
    m = AMAGO("Transformer", make_vec_env(lambda: wrappers.TrajectoryWrapper(_OffsetEnv()), n_envs=2), seed=0, **TINY)
    enc = m.policy.tstep_encoder
    ids = torch.tensor([5, 6, 7])
    codes = enc._vector({"obs": ids, **{k: torch.zeros(3, *m.policy.leaves[k].shape) for k in m.policy.leaves
                                        if k != "obs"}}, torch.Size([3]))
    assert len({tuple(c.tolist()) for c in codes}) == 3  # 5, 6, 7 get three different one-hots
    m.learn(64)  # actions with start=-1 reach the env inside its space (the env asserts it)
    obs = m.get_env().reset()
    actions, _ = m.predict(obs)
    assert set(np.asarray(actions).tolist()) <= {-1, 0, 1}
    for bad in (4, 8):
        with pytest.raises(ValueError, match="'obs' holds .* outside its space"):
            m.predict({**obs, "obs": np.full_like(obs["obs"], bad)})


# ---------------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("backend", [attention_reference, sdpa_attention])
@pytest.mark.parametrize("causal", [True, False])
def test_nan_in_padded_slots_never_reaches_valid_outputs(backend, causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    lengths = torch.tensor([6, 3])
    for x in (q, k, v):
        x[1, :, 3:] = float("nan")
    out, ent = backend(q, k, v, lengths, causal, True)
    assert torch.isfinite(out).all() and torch.isfinite(ent).all()
    clean = [x.clone() for x in (q, k, v)]
    for x in clean:
        x[1, :, 3:] = 0.0
    torch.testing.assert_close(out, backend(*clean, lengths, causal, False))


@pytest.mark.parametrize("backend", [decode_attention_reference, sdpa_decode_attention])
def test_nan_in_stale_cache_slots_never_reaches_the_output(backend):
    torch.manual_seed(0)
    q = torch.randn(2, 2, 8)
    kc, vc = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    kc[0, :, 2:], vc[0, :, 2:] = float("nan"), float("nan")  # slots of an earlier episode
    out = backend(q, kc, vc, torch.tensor([2, 5]))
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------- load / replay
def test_load_of_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        AMAGO.load(tmp_path / "nothing_here.zip")


def test_moved_replay_is_an_error_at_learn_unless_a_replay_dir_is_given(tmp_path):
    m = AMAGO("Transformer", ENV, seed=0, replay_dir=str(tmp_path / "replay"), **TINY)
    m.learn(32)
    m.save(tmp_path / "m.zip")
    shutil.move(tmp_path / "replay", tmp_path / "moved")
    loaded = AMAGO.load(tmp_path / "m.zip", env=ENV)
    loaded.predict(loaded.get_env().reset())  # predicting needs no replay
    with pytest.raises(ValueError, match="replay .*replay does not exist.*replay_dir="):
        loaded.learn(8, reset_num_timesteps=False)
    assert not (tmp_path / "replay").exists()  # nothing was created where the replay used to be
    resumed = AMAGO.load(tmp_path / "m.zip", env=ENV, replay_dir=str(tmp_path / "moved"))
    n = resumed.replay.num_trajectories
    resumed.learn(8, reset_num_timesteps=False)
    assert n > 0 and resumed.replay.num_trajectories >= n


def test_user_files_named_like_temp_files_are_never_deleted(tmp_path):
    from amago_sb.atomic_files import host_tag
    from amago_sb.replay import TrajectoryStore

    keep = [tmp_path / ".notes.tmp", tmp_path / f".draft.{host_tag()}.999999999.tmp", tmp_path / ".x.y.tmp"]
    for p in keep:
        p.write_text("mine")
    old = time.time() - 10 * 3600
    for p in keep:
        os.utime(p, (old, old))
    TrajectoryStore(tmp_path)
    from amago_sb.checkpoint import CheckpointManager

    CheckpointManager(tmp_path)
    assert all(p.exists() for p in keep)


# ---------------------------------------------------------------------------------------------------- CLI
def _train(argv, cwd):
    return subprocess.run([sys.executable, "-m", "zoo.train", *argv], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


CLI_CASES = [
    (["-n", "0"], "-n/--n-timesteps"),
    (["-n", "-5"], "-n/--n-timesteps"),
    (["-params", "policy_kwargs:{d_modle: 32}"], "policy_kwargs.*d_modle.*did you mean d_model"),
    (["-params", "tau:0"], "tau"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints"),
    (["-f", "A_FILE"], "--log-folder"),
]


@pytest.mark.parametrize("extra,name", CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, extra, name):
    from zoo.train import main

    (tmp_path / "A_FILE").write_text("not a folder")
    extra = [str(tmp_path / "A_FILE") if a == "A_FILE" else a for a in extra]
    argv = ["--algo", "amago", "--env", ENV, "-f", str(tmp_path / "logs"), "--eval-freq", "-1", *extra]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("*.yml"))


def test_cli_error_is_one_line_without_traceback(tmp_path):
    r = _train(["--algo", "amago", "--env", ENV, "-n", "0"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "-n/--n-timesteps" in r.stderr


def test_full_disk_ends_a_cli_run_with_one_line_and_exit_2(tmp_path):
    """RLIMIT_FSIZE (writes past it fail with EFBIG) stands in for a full disk: the final checkpoint cannot be written."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    r = subprocess.run([sys.executable, "-m", "zoo.train", "--algo", "amago", "--env", ENV, "-n", "32", "-f", "logs",
                        "--eval-freq", "-1", "--verbose", "0", "-params", "n_envs:2", "learning_starts:1000"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Disk full" in r.stderr
    run = tmp_path / "logs" / "amago" / f"{ENV}_1"
    assert (run / ENV / "args.yml").is_file()  # learning had started: the run folder and its data are kept
    assert not [p for p in run.rglob("*.tmp")]


def test_sampler_survives_heavy_churn_of_its_index(tmp_path):
    from amago_sb.replay import TrajectoryStore, WindowSampler
    from tests.replay_helpers import make_traj

    store = TrajectoryStore(tmp_path, fsync=False)
    paths = [store.add(make_traj(12)) for _ in range(60)]
    sampler = WindowSampler(store, 8, seed=0)
    sampler.refresh_interval = 1e9  # the index would stay stale without the rescan on misses
    sampler.sample(4)
    for p in paths[:-1]:  # another process evicts all but one file
        p.unlink()
    assert len(sampler.sample_trajectories(16)) == 16


def test_temporary_replays_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import tempfile

    from amago_sb.atomic_files import host_tag

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"amago_replay_{host_tag()}_999999999_abc"
    alive = tmp_path / f"amago_replay_{host_tag()}_{os.getpid()}_def"
    other = tmp_path / "amago_replay_elsewhere"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "traj.npz").write_bytes(b"x")
    m = AMAGO("Transformer", ENV, seed=0, **TINY)
    assert not dead.exists() and alive.exists() and other.exists()
    assert Path(m.replay_dir).parent == tmp_path and Path(m.replay_dir).name.startswith(f"amago_replay_{host_tag()}_")


def test_corrupt_checkpoint_hint_names_only_valid_files(tmp_path):
    from amago_sb.checkpoint import CorruptCheckpointError

    m = AMAGO("Transformer", ENV, seed=0, **TINY)
    m.save(tmp_path / "good.zip")
    (tmp_path / "also_corrupt.zip").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "bad.zip").write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpointError) as e:
        AMAGO.load(tmp_path / "bad.zip")
    assert "good.zip" in str(e.value) and "also_corrupt" not in str(e.value)


def test_zoo_save_freq_rotates_checkpoints(tmp_path):
    from zoo.train import main

    assert main(["--algo", "amago", "--env", ENV, "-n", "96", "-f", str(tmp_path), "--eval-freq", "-1", "--verbose",
                 "0", "--save-freq", "16", "--keep-checkpoints", "2", "-params", "n_envs:2", "learning_starts:1000",
                 "policy_kwargs:{d_model: 16, n_layers: 1, n_heads: 2}"]) == 0
    names = sorted(p.name for p in (tmp_path / "amago" / f"{ENV}_1").glob("rl_model_*_steps.zip"))
    assert names == ["rl_model_80_steps.zip", "rl_model_96_steps.zip"]


def test_string_rewards_are_refused():
    class StrReward(_BoxObsEnv):
        def step(self, action):
            return np.zeros(3, np.float32), "1.0", False, False, {}

    env = wrappers.TrajectoryWrapper(StrReward())
    env.reset(seed=0)
    with pytest.raises(TypeError, match="reward '1.0'"):
        env.step(0)
