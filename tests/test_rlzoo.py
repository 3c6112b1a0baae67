"""The zoo is rl-baselines3-zoo: rl_zoo3's flags on tiny real runs, custom envs by both routes, rl_zoo3's plots."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo import enjoy, train, tune

ENV = "popgym-RepeatPreviousEasy-v0"
TINY_AMAGO = ["-params", "n_envs:2", "batch_size:4", "policy_kwargs:dict(d_model=16, n_layers=1, n_heads=2)"]
QUIET = ["--verbose", "0", "--num-threads", "1", "--seed", "3"]


def _run_dirs(folder: Path, algo: str, env_id: str) -> list[Path]:
    return sorted(p for p in (folder / algo).glob(f"{env_id}_*") if p.is_dir())


def test_amago_is_in_rl_zoo3_tables():
    import rl_zoo3.train
    from rl_zoo3 import hyperparams_opt, utils
    from sb3_contrib import RecurrentPPO

    from amago_sb import AMAGO
    from zoo.rlzoo import ZooExperimentManager, register

    register()
    assert utils.ALGOS["amago"] is AMAGO and utils.ALGOS["recurrent_ppo"] is RecurrentPPO
    assert "amago" in hyperparams_opt.HYPERPARAMS_SAMPLER and "recurrent_ppo" in hyperparams_opt.HYPERPARAMS_SAMPLER
    assert rl_zoo3.train.ExperimentManager is ZooExperimentManager


def test_config_file_rule():
    import rl_zoo3

    from zoo.rlzoo import HYPERPARAMS_DIR, config_file

    assert config_file("amago", ENV) == HYPERPARAMS_DIR / "amago.yml"
    assert config_file("amago", "MyUnknownEnv-v0") == HYPERPARAMS_DIR / "amago.yml"  # its default entry
    rl_zoo3_dir = Path(rl_zoo3.__file__).parent / "hyperparams"
    assert config_file("ppo", "CartPole-v1") == rl_zoo3_dir / "ppo.yml"  # rl_zoo3's tuned entry
    assert config_file("ppo", ENV) == HYPERPARAMS_DIR / "ppo.yml"
    assert config_file("sac", "Pendulum-v1") == rl_zoo3_dir / "sac.yml"


def test_our_yml_files_are_rl_zoo3_format():
    """rl_zoo3 takes an entry as it is (no merging with `default`): every entry must be complete."""
    from zoo.rlzoo import HYPERPARAMS_DIR

    for algo in ("amago", "ppo", "recurrent_ppo"):
        entries = yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())
        for env_id, entry in entries.items():
            assert "policy" in entry and "n_timesteps" in entry, (algo, env_id)
            for key in entries["default"]:
                assert key in entry, (algo, env_id, key)


def test_rl_zoo3_flags_on_a_tiny_amago_run(tmp_path):
    conf = Path(__file__).resolve().parents[1] / "zoo" / "hyperparams" / "amago.yml"
    argv = ["--algo", "amago", "--env", ENV, "-n", "256", "-f", str(tmp_path), "--eval-freq", "128",
            "--eval-episodes", "1", "-uuid", "-conf", str(conf), "--log-interval", "1", "--save-freq", "128",
            "--keep-checkpoints", "1", "-tb", str(tmp_path / "tb"), *QUIET, *TINY_AMAGO]
    assert train.main(argv) == 0
    (run,) = _run_dirs(tmp_path, "amago", ENV)
    assert len(run.name) > len(f"{ENV}_1") + 30  # -uuid: <env>_1_<uuid4>
    args = yaml.safe_load((run / ENV / "args.yml").read_text())  # plain YAML (rl_zoo3's is python-tagged)
    assert args["conf_file"] == str(conf) and args["uuid"] is True and args["log_interval"] == 1
    assert args["keep_checkpoints"] == 1 and args["hyperparams"]["batch_size"] == 4
    config = yaml.safe_load((run / ENV / "config.yml").read_text())
    assert config["context_len"] == "episode" and config["policy_kwargs"]["d_model"] == 16
    assert [p.name for p in run.glob("rl_model_*_steps.zip")] == ["rl_model_256_steps.zip"]  # rotated, keep 1
    summary = yaml.safe_load((run / "summary.yml").read_text())
    assert summary["n_timesteps"] == 256 and summary["last_eval_mean"] is not None
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))  # a real tensorboard file
    assert (run / "replay").is_dir() and any((run / "replay").iterdir())


def _write_env_module(folder: Path, name: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""
        import gymnasium as gym
        import numpy as np

        class CueEnv(gym.Env):
            '''Shows a cue bit at the first step only; reward 1 for repeating it at the last of 5 steps.'''
            observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.cue, self.t = int(self.np_random.integers(2)), 0
                return np.array([2 * self.cue - 1, 1.0], np.float32), {{}}

            def step(self, action):
                self.t += 1
                done = self.t == 5
                reward = float(done and int(action) == self.cue)
                return np.zeros(2, np.float32), reward, done, False, {{}}

        gym.register("{name}/Cue-v0", entry_point=CueEnv, max_episode_steps=5)
        """))


@pytest.mark.parametrize("route", ["module:id", "--gym-packages"])
def test_a_users_own_env_by_both_routes(tmp_path, monkeypatch, route):
    module = f"user_envs_{route.replace(':', '_').replace('-', '')}"
    _write_env_module(tmp_path, module)
    monkeypatch.syspath_prepend(str(tmp_path))
    env_id = f"{module}/Cue-v0"
    env_flags = ["--env", f"{module}:{env_id}"] if route == "module:id" else ["--env", env_id, "--gym-packages", module]
    argv = ["--algo", "amago", *env_flags, "-n", "200", "-f", str(tmp_path / "logs"), "--eval-freq", "100",
            "--eval-episodes", "2", *QUIET, *TINY_AMAGO]
    assert train.main(argv) == 0
    (run,) = _run_dirs(tmp_path / "logs", "amago", env_id.replace("/", "-"))
    assert yaml.safe_load((run / "summary.yml").read_text())["n_timesteps"] >= 200


def test_bad_module_env_names_the_module(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--algo", "amago", "--env", "no_such_pkg_xyz:Env-v0", "-f", str(tmp_path)])
    assert exc.value.code == 2
    assert "cannot import module 'no_such_pkg_xyz'" in capsys.readouterr().err


def test_track_without_wandb_says_how_to_install(tmp_path, capsys):
    pytest.importorskip("rl_zoo3")
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed: --track would start a real run")
    except ImportError:
        pass
    with pytest.raises(SystemExit) as exc:
        train.main(["--algo", "amago", "--env", ENV, "-n", "64", "-f", str(tmp_path), "--track", *QUIET])
    assert exc.value.code == 2 and "pip install wandb" in capsys.readouterr().err


def test_optimize_runs_rl_zoo3_search_for_amago(tmp_path, capsys):
    argv = ["--algo", "amago", "--env", ENV, "-n", "128", "--n-trials", "2", "--n-evaluations", "1",
            "--eval-episodes", "1", "--sampler", "random", "--pruner", "none", "-f", str(tmp_path), *QUIET,
            *TINY_AMAGO]
    assert tune.main(argv) == 0
    out = capsys.readouterr().out
    assert "Number of finished trials:  2" in out and "gradient_steps" in out  # AMAGO's sampler ran
    (report,) = (tmp_path / "amago").glob(f"report_{ENV}_2-trials-128-random-none_*.csv")
    assert len(report.read_text().splitlines()) == 3  # header + 2 trials


@pytest.fixture(scope="module")
def two_algo_logs(tmp_path_factory):
    """One tiny amago run (with checkpoints) and one tiny recurrent_ppo run in one log folder."""
    folder = tmp_path_factory.mktemp("logs")
    assert train.main(["--algo", "amago", "--env", ENV, "-n", "256", "-f", str(folder), "--eval-freq", "128",
                       "--eval-episodes", "2", "--save-freq", "128", *QUIET, *TINY_AMAGO]) == 0
    assert train.main(["--algo", "recurrent_ppo", "--env", ENV, "-n", "256", "-f", str(folder), "--eval-freq", "128",
                       "--eval-episodes", "2", *QUIET, "-params", "n_envs:2", "n_steps:64", "batch_size:64"]) == 0
    return folder


def _rl_zoo3_plot(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300)


def test_rl_zoo3_plot_train_reads_our_logs(two_algo_logs):
    for algo in ("amago", "recurrent_ppo"):
        res = _rl_zoo3_plot("rl_zoo3.plots.plot_train", "-a", algo, "-e", ENV, "-f", str(two_algo_logs), "-w", "1")
        assert res.returncode == 0, res.stderr


def test_rl_zoo3_all_plots_reads_our_evaluations(two_algo_logs, tmp_path):
    res = _rl_zoo3_plot("rl_zoo3.plots.all_plots", "-a", "amago", "recurrent_ppo", "-e", ENV, "-f", str(two_algo_logs),
                        "-o", str(tmp_path / "all"), "--no-display")
    assert res.returncode == 0, res.stderr
    assert "AMAGO" in res.stdout and "RECURRENT_PPO" in res.stdout and (tmp_path / "all.pkl").is_file()


def test_enjoy_takes_rl_zoo3_flags(two_algo_logs, capsys):
    argv = ["--algo", "amago", "--env", ENV, "-f", str(two_algo_logs), "--n-episodes", "2", "--deterministic",
            "--no-render", "--load-last-checkpoint", "--num-threads", "1"]
    assert enjoy.main(argv) == 0
    out = capsys.readouterr().out
    assert "rl_model_256_steps.zip" in out and "mean return" in out
    assert enjoy.main(["--algo", "recurrent_ppo", "--env", ENV, "-f", str(two_algo_logs), "--n-episodes", "1",
                       "--load-best"]) == 0
    assert "best_model.zip" in capsys.readouterr().out
    assert enjoy.main(["--algo", "amago", "--env", ENV, "-f", str(two_algo_logs), "--n-episodes", "1",
                       "--load-checkpoint", "128"]) == 0
    assert "rl_model_128_steps.zip" in capsys.readouterr().out


def test_eval_envs_are_seeded_apart_from_training(tmp_path):
    """The evaluation must not replay the training envs' episodes (rl_zoo3 seeds both alike)."""
    import argparse

    from zoo.rlzoo import ZooExperimentManager, register

    register()
    manager = ZooExperimentManager(argparse.Namespace(), "ppo", ENV, str(tmp_path), seed=5)

    def observations(venv) -> list[int]:
        obs = [int(venv.reset()[0])]  # RepeatPrevious shows a random card (Discrete(4)) each step
        for _ in range(20):
            obs.append(int(venv.step(np.zeros(1, dtype=np.int64))[0][0]))
        venv.close()
        return obs

    train_obs = observations(manager.create_envs(1, no_log=True))
    assert observations(manager.create_envs(1, no_log=True)) == train_obs  # same seed: same episodes
    assert observations(manager.create_envs(1, eval_env=True)) != train_obs


def test_eval_env_gets_the_yml_env_kwargs_and_eval_env_kwargs_merge_over_them(tmp_path):
    """rl_zoo3 would evaluate TMazePassive on the default corridor (it drops the yml's env_kwargs for the eval env)."""
    import argparse

    from zoo.rlzoo import ZooExperimentManager, register

    register()
    for cli, expected_eval_corridor in ((None, 100), ({"corridor_length": 7}, 7)):
        manager = ZooExperimentManager(argparse.Namespace(), "ppo", "TMazePassive-v0", str(tmp_path),
                                       eval_env_kwargs=cli)
        hyperparams, _ = manager.read_hyperparameters()
        manager._preprocess_hyperparams(hyperparams)
        assert manager.env_kwargs["corridor_length"] == 100
        assert manager.eval_env_kwargs == {**manager.env_kwargs, "corridor_length": expected_eval_corridor}
