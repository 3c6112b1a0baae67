"""The zoo CLI end to end: train (rl-zoo layout, -i, bad input, killed runs), enjoy, plot, benchmark, tune."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from zoo import benchmark, enjoy, plot, train

ROOT = Path(__file__).resolve().parents[1]
ENV = "popgym-CountRecallEasy-v0"  # MultiDiscrete observations: also exercises the baselines' wrapper
TINY = ["-params", "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Small nets on a shared 2-core CPU: one torch thread is fastest; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cli(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory) -> Path:
    """One real `python -m zoo.train` run (subprocess) of PPO with evaluations and checkpoints."""
    logs = tmp_path_factory.mktemp("logs")
    res = _cli(
        "zoo.train",
        "--algo",
        "ppo",
        "--env",
        ENV,
        "-n",
        "128",
        "-f",
        str(logs),
        "--eval-freq",
        "64",
        "--eval-episodes",
        "2",
        "--save-freq",
        "64",
        "--seed",
        "3",
        "--num-threads",
        "1",
        "-tb",
        str(logs / "tb"),
        *TINY,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return logs


def test_train_writes_rl_zoo_layout(ppo_run):
    run = ppo_run / "ppo" / f"{ENV}_1"
    assert {p.name for p in run.glob("*.monitor.csv")} == {"0.monitor.csv", "1.monitor.csv"}
    for name in (
        f"{ENV}.zip",
        "best_model.zip",
        "evaluations.npz",
        "rl_model_64_steps.zip",
        "rl_model_128_steps.zip",
        f"{ENV}/args.yml",
        f"{ENV}/config.yml",
        "summary.yml",
    ):
        assert (run / name).is_file(), name
    args = yaml.safe_load((run / ENV / "args.yml").read_text())
    config = yaml.safe_load((run / ENV / "config.yml").read_text())
    assert args["algo"] == "ppo" and args["seed"] == 3 and args["hyperparams"]["n_steps"] == 32
    assert config["n_envs"] == 2 and config["n_timesteps"] == 128 and config["policy"] == "MlpPolicy"
    evals = np.load(run / "evaluations.npz")
    np.testing.assert_array_equal(evals["timesteps"], [64, 128])
    assert evals["results"].shape == (2, 2)
    assert len(plot.read_monitor_files(run)) >= 2  # CountRecallEasy episodes are 51 steps: 2 envs x 64 steps
    assert list((ppo_run / "tb" / ENV).glob("PPO_1/events.out.tfevents.*"))


def test_continue_training_with_i(ppo_run, capsys):
    run = ppo_run / "ppo" / f"{ENV}_1"
    model = run / f"{ENV}.zip"
    monitor_rows = len((run / "0.monitor.csv").read_text().splitlines())
    assert (
        train.main(
            [
                "--algo",
                "ppo",
                "--env",
                ENV,
                "-n",
                "256",
                "-f",
                str(ppo_run),
                "--eval-freq",
                "-1",
                "-i",
                str(model),
                "--verbose",
                "0",
                "-params",
                "n_envs:2",
                "learning_rate:1e-4",
            ]
        )
        == 0
    )
    summary = yaml.safe_load((run / "summary.yml").read_text())
    assert summary["n_timesteps"] == 128 + 256  # the step counter continues, in the same run folder
    assert not (ppo_run / "ppo" / f"{ENV}_2").exists()
    assert len((run / "0.monitor.csv").read_text().splitlines()) > monitor_rows  # episodes appended, none lost
    assert (run / ENV / "args.yml").is_file() and (run / ENV / "args_resume_1.yml").is_file()


def test_checkpoint_of_another_env_is_refused(ppo_run, capsys):
    model = ppo_run / "ppo" / f"{ENV}_1" / f"{ENV}.zip"
    other = "popgym-CountRecallMedium-v0"
    with pytest.raises(SystemExit) as exc:
        train.main(["--algo", "ppo", "--env", other, "-n", "64", "-f", str(ppo_run), "-i", str(model)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"was trained on env '{ENV}', not '{other}'" in err and f"--env {ENV}" in err
    assert not (ppo_run / "ppo" / f"{other}_1").exists()  # nothing written for a refused run


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "ppo2", "--env", ENV], "Unknown algo 'ppo2'. Did you mean: ppo"),
        (["--algo", "ppo", "--env", "popgym-CountRecalEasy-v0"], "Did you mean: popgym-CountRecallEasy-v0"),
        (["--algo", "ppo", "--env", ENV, "-params", "n_steps=3"], "Malformed hyperparameter override 'n_steps=3'"),
        (
            ["--algo", "ppo", "--env", ENV, "-params", "n_step:3"],
            "Unknown hyperparameter(s) for ppo: 'n_step' (did you mean n_steps",
        ),
        (["--algo", "ppo", "--env", ENV, "-i", "missing.zip"], "--trained-agent 'missing.zip' must be an existing .zip"),
    ],
)
def test_bad_input_exits_with_a_clear_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "-f", str(tmp_path), "-n", "64"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.yml"))


def test_cli_subprocess_reports_unknown_env():
    res = _cli("zoo.train", "--algo", "ppo", "--env", "popgym-RepeatPrevousEasy-v0")
    assert res.returncode == 2
    assert "Unknown env id 'popgym-RepeatPrevousEasy-v0'. Did you mean: popgym-RepeatPreviousEasy-v0" in res.stderr


def test_killed_run_leaves_readable_logs(tmp_path):
    """SIGKILL mid-training: config and args are there from the start, finished episodes are in the monitor files."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "zoo.train",
        "--algo",
        "ppo",
        "--env",
        ENV,
        "-n",
        "10000000",
        "-f",
        str(tmp_path),
        "--eval-freq",
        "-1",
        "--num-threads",
        "1",
        "--verbose",
        "0",
        *TINY,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "ppo" / f"{ENV}_1"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(plot.read_monitor_files(run)) < 4:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert yaml.safe_load((run / ENV / "config.yml").read_text())["n_timesteps"] == 10000000
    episodes = plot.read_monitor_files(run)
    assert len(episodes) >= 4 and np.all(episodes[:, 1] == 51)
    out = plot.plot_curves(tmp_path, tmp_path / "killed.png", source="train", window=2)
    assert out.stat().st_size > 1000


def test_enjoy_runs_episodes_with_recurrent_state(tmp_path, capsys):
    assert (
        train.main(
            [
                "--algo",
                "recurrent_ppo",
                "--env",
                ENV,
                "-n",
                "64",
                "-f",
                str(tmp_path),
                "--eval-freq",
                "-1",
                "--verbose",
                "0",
                *TINY,
            ]
        )
        == 0
    )
    assert enjoy.main(["--algo", "recurrent_ppo", "--env", ENV, "-f", str(tmp_path), "--n-episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"episode \d: return -?[\d.]+, length 51", out)) == 2
    assert "mean return" in out
    with pytest.raises(SystemExit):
        enjoy.main(["--algo", "recurrent_ppo", "--env", ENV, "-f", str(tmp_path), "--load-best"])
    assert "best_model.zip does not exist" in capsys.readouterr().err


def test_enjoy_gif_of_an_image_env(tmp_path):
    """Crafter observations are images: enjoy records them into a GIF."""
    logs = tmp_path / "logs"
    argv = ["--algo", "ppo", "--env", "Crafter-v0", "-n", "8", "-f", str(logs), "--eval-freq", "-1", "--verbose", "0"]
    assert train.main([*argv, "-params", "n_envs:1", "n_steps:8", "batch_size:8", "n_epochs:1"]) == 0
    gif = tmp_path / "crafter.gif"
    assert enjoy.main(["--algo", "ppo", "--env", "Crafter-v0", "-f", str(logs), "-n", "6", "--gif", str(gif)]) == 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames >= 2 and im.size == (64, 64)
    with pytest.raises(ValueError, match="needs an env with image observations"):
        enjoy.save_gif([], tmp_path / "none.gif")


def test_video_annotation_and_writers(tmp_path):
    from zoo import video

    frame = np.zeros((64, 64, 3), np.uint8)
    lines = video.instruction_lines(["collect sapling", "eat cow"], completed=1)
    assert lines == ["[x] collect sapling", "[ ] eat cow"]
    out = video.annotate(frame, [*lines, "step 3"])
    assert out.shape == (256 + 3 * 13 + 4, 256, 3) and out.dtype == np.uint8  # enlarged 4x, one text row per line
    assert out[:256].max() == 0 and out[256:].max() == 255  # the picture is unchanged, the band carries white text
    frames = [np.full((21, 30, 3), 10 * i, np.uint8) for i in range(6)]  # odd height: padded for H.264
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    mp4 = video.write_video(frames, tmp_path / "clip.mp4", fps=10)
    with imageio.get_reader(mp4) as reader:
        assert reader.count_frames() == 6 and reader.get_meta_data()["fps"] == 10
    with pytest.raises(ValueError, match="must end in one of"):
        video.write_video(frames, tmp_path / "clip.avi")


def test_enjoy_video_of_a_symbolic_instruction_env_shows_the_instruction(tmp_path, capsys):
    """Symbolic Crafter has no image observation: enjoy makes it render, draws the fixed instruction under every
    frame and holds the last frame of each episode with the result."""
    from PIL import Image

    logs = tmp_path / "logs"
    kwargs = ["obs_mode:'symbolic'", "length:40", "area:(16,16)", "size:(18,18)"]
    argv = ["--algo", "amago", "--env", "CrafterInstruction-v0", "-n", "64", "-f", str(logs), "--eval-freq", "-1",
            "--verbose", "0", "--env-kwargs", *kwargs, "-params", "n_envs:1", "learning_starts:32", "context_len:16",
            "policy_kwargs:dict(d_model=16,n_layers=1,n_heads=2)"]
    assert train.main(argv) == 0
    gif = tmp_path / "crafter.gif"
    goals = "instruction:['collect sapling','eat cow']"
    assert enjoy.main(["--algo", "amago", "--env", "CrafterInstruction-v0", "-f", str(logs), "--n-episodes", "2",
                       "--gif", str(gif), "--env-kwargs", goals]) == 0
    out = capsys.readouterr().out
    lengths = [int(n) for n in re.findall(r"length (\d+)", out)]
    assert len(lengths) == 2 and f"({sum(lengths) + 2 * enjoy.END_HOLD_FRAMES} frames)" in out  # steps + held ends
    with Image.open(gif) as im:
        assert im.size == (18 * 15, 18 * 15 + 3 * 13 + 4)  # enlarged to >= 256 px wide, 3 text lines
        im.seek(0)
        first = np.asarray(im.convert("RGB"))
        im.seek(im.n_frames - 1)
        last = np.asarray(im.convert("RGB"))
    assert not np.array_equal(first[270:], last[270:])  # "step 0" under the first frame, the result under the last


def test_aggregate_mean_and_spread():
    curves = [(np.array([0.0, 10.0]), np.array([0.0, 1.0])), (np.array([0.0, 5.0, 20.0]), np.array([1.0, 2.0, 2.0]))]
    agg = plot.aggregate(curves, n_points=3)
    np.testing.assert_allclose(agg["x"], [0.0, 5.0, 10.0])  # common grid up to the shortest run
    np.testing.assert_allclose(agg["mean"], [0.5, 1.25, 1.5])
    np.testing.assert_allclose(agg["std"], [0.5, 0.75, 0.5])


def test_plot_cli_draws_eval_curves(ppo_run, tmp_path):
    out = tmp_path / "curves.png"
    assert plot.main(["-f", str(ppo_run), "--env", ENV, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        plot.main(["-f", str(tmp_path / "empty"), "--out", str(out)])


def test_benchmark_writes_table_and_figures(tmp_path):
    md, figs = tmp_path / "docs" / "benchmark.md", tmp_path / "docs" / "figures"
    argv = [
        "--envs",
        "popgym-RepeatPreviousEasy-v0",
        "--algos",
        "ppo",
        "recurrent_ppo",
        "--seeds",
        "2",
        "--steps",
        "64",
        "-f",
        str(tmp_path / "logs"),
        "--out",
        str(md),
        "--fig-dir",
        str(figs),
        "--eval-episodes",
        "1",
        "--num-threads",
        "1",
        "--note",
        "shared CPU",
        "-params",
        "n_envs:1",
        "n_steps:32",
        "batch_size:32",
        "n_epochs:1",
    ]
    assert benchmark.main(argv) == 0
    text = md.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| popgym-RepeatPreviousEasy-v0 |"))
    assert len(re.findall(r"-?\d+\.\d{3} \+- \d+\.\d{3} \(n=2, \d+ s\)", row)) == 2  # one mean +- std cell per algo
    assert "| env | ppo | recurrent_ppo | best |" in text and "shared CPU" in text and "CPU cores" in text
    assert (figs / "popgym-RepeatPreviousEasy-v0.png").is_file()
    assert "](figures/popgym-RepeatPreviousEasy-v0.png)" in text
    runs = sorted(p.name for p in (tmp_path / "logs").glob("*/*"))
    md.unlink()
    assert benchmark.main([*argv, "--reuse"]) == 0  # resumes: every run is found, nothing is trained again
    assert sorted(p.name for p in (tmp_path / "logs").glob("*/*")) == runs and row in md.read_text()
    text = md.read_text()
    assert "IQM" in text and "| ppo | " in text and "Random-policy returns: RepeatPreviousEasy-v0 -0." in text
    # --report-only trains nothing, even for a cell that has no run (a third seed here); --results-dir records runs
    records = tmp_path / "records"
    assert benchmark.main([*argv[:6], "3", *argv[7:], "--report-only", "--results-dir", str(records)]) == 0
    assert sorted(p.name for p in (tmp_path / "logs").glob("*/*")) == runs
    names = sorted(p.name for p in records.glob("*.json"))
    assert names == [f"{a}__popgym-RepeatPreviousEasy-v0__seed{k}.json" for a in ("ppo", "recurrent_ppo") for k in (0, 1)]
    record = json.loads((records / names[0]).read_text())
    assert record["summary"]["n_timesteps"] >= 64 and len(record["evaluations"]["mean_return"]) >= 1
    # a fresh checkout has the records but no log folder: --reuse takes the recorded runs and trains nothing
    import shutil

    shutil.rmtree(tmp_path / "logs")
    md.unlink()
    (figs / "popgym-RepeatPreviousEasy-v0.png").unlink()
    assert benchmark.main([*argv, "--reuse", "--results-dir", str(records)]) == 0
    assert not (tmp_path / "logs").exists() and row in md.read_text()
    assert (figs / "popgym-RepeatPreviousEasy-v0.png").is_file()
    # a record made with other settings (another budget here) is not taken
    changed = [*argv[:8], "65", *argv[9:]]
    assert changed[7:9] == ["--steps", "65"]
    assert benchmark.main([*changed, "--report-only", "--results-dir", str(records)]) == 0
    assert "| n/a | n/a |" in md.read_text()


def test_benchmark_reports_failed_runs(tmp_path):
    results = benchmark.run_benchmark(
        ["popgym-RepeatPreviousEasy-v0"], ["ppo"], 1, 64, tmp_path, hyperparams={"policy": "NoSuchPolicy"}, eval_episodes=1
    )
    cell = results[("popgym-RepeatPreviousEasy-v0", "ppo")]
    assert not cell.finals and cell.summary().startswith("failed: ValueError") and "NoSuchPolicy" in cell.summary()


def _amago_import_error() -> str | None:
    from zoo.algos import get_algo_class

    try:
        get_algo_class("amago")
    except ImportError as err:
        return str(err)
    return None


AMAGO_TINY = [
    "-params",
    "n_envs:2",
    "batch_size:4",
    "context_len:16",
    "train_freq:8",
    "gradient_steps:1",
    "learning_starts:16",
    "policy_kwargs:{d_model: 16, n_layers: 1, n_heads: 2}",
]


@pytest.mark.skipif(_amago_import_error() is not None, reason=f"amago_sb.AMAGO cannot be imported: {_amago_import_error()}")
def test_env_kwargs_from_yml_and_cli_reach_train_and_enjoy(tmp_path, capsys):
    """TMazePassive-v0's yml entry sets Ni et al.'s env options; --env-kwargs overrides single keys; enjoy reuses them."""
    argv = ["--algo", "ppo", "--env", "TMazePassive-v0", "-n", "64", "-f", str(tmp_path), "--eval-freq", "-1",
            "--verbose", "0", "--env-kwargs", "corridor_length:3", *TINY]
    assert train.main(argv) == 0
    saved = yaml.safe_load((tmp_path / "ppo" / "TMazePassive-v0_1" / "TMazePassive-v0" / "args.yml").read_text())
    assert saved["env_kwargs"] == {"corridor_length": 3, "behind_schedule_penalty": True, "time_limit_terminates": True,
                                   "wrong_choice_reward": 0.0}
    lengths = np.loadtxt(tmp_path / "ppo" / "TMazePassive-v0_1" / "0.monitor.csv", delimiter=",", skiprows=2)[:, 1]
    assert lengths.max() <= 4  # corridor 3: every episode ends within corridor + 1 steps
    capsys.readouterr()
    assert enjoy.main(["--algo", "ppo", "--env", "TMazePassive-v0", "-f", str(tmp_path), "--n-episodes", "2"]) == 0
    assert all(int(n) <= 4 for n in re.findall(r"length (\d+)", capsys.readouterr().out))
    with pytest.raises(SystemExit):
        train.main([*argv[:-len(TINY)], "--env-kwargs", "corridor:3", *TINY])
    assert "corridor" in capsys.readouterr().err


def test_amago_train_continue_and_enjoy(tmp_path, capsys):
    """AMAGO through the same CLI: rl-zoo layout and evaluations, -i continuation, enjoy with its context state."""
    env = "popgym-RepeatPreviousEasy-v0"
    assert (
        train.main(
            [
                "--algo",
                "amago",
                "--env",
                env,
                "-n",
                "64",
                "-f",
                str(tmp_path),
                "--eval-freq",
                "64",
                "--eval-episodes",
                "1",
                "--verbose",
                "0",
                "--seed",
                "0",
                *AMAGO_TINY,
            ]
        )
        == 0
    )
    run = tmp_path / "amago" / f"{env}_1"
    assert (run / "evaluations.npz").is_file() and (run / "0.monitor.csv").is_file() and (run / f"{env}.zip").is_file()
    config = yaml.safe_load((run / env / "config.yml").read_text())
    assert config["context_len"] == 16 and config["replay_dir"] == str(run / "replay")  # replay kept with its run
    assert (
        train.main(
            [
                "--algo",
                "amago",
                "--env",
                env,
                "-n",
                "32",
                "-f",
                str(tmp_path),
                "--eval-freq",
                "-1",
                "--verbose",
                "0",
                "-i",
                str(run / f"{env}.zip"),
                *AMAGO_TINY[:2],
            ]
        )
        == 0
    )
    assert yaml.safe_load((run / "summary.yml").read_text())["n_timesteps"] == 96  # the same run, continued
    assert list((run / "replay").rglob("*.npz")) and not (tmp_path / "amago" / f"{env}_2").exists()
    capsys.readouterr()
    assert enjoy.main(["--algo", "amago", "--env", env, "-f", str(tmp_path), "--n-episodes", "1", "--exp-id", "1"]) == 0
    assert re.search(r"episode 0: return -?[\d.]+, length 51", capsys.readouterr().out)


def test_amago_with_subproc_vec_env(tmp_path):
    """`--vec-env subproc` runs the training envs in SubprocVecEnv workers (one process per env)."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from zoo.envs import make_vec_env

    venv = make_vec_env("popgym-RepeatPreviousEasy-v0", "amago", 2, seed=0, vec_env="subproc")
    try:
        assert isinstance(venv, SubprocVecEnv) and venv.num_envs == 2
    finally:
        venv.close()
    env = "popgym-RepeatPreviousEasy-v0"
    argv = ["--algo", "amago", "--env", env, "-n", "64", "-f", str(tmp_path), "--eval-freq", "-1", "--verbose", "0",
            "--seed", "0", "--vec-env", "subproc", *AMAGO_TINY]
    assert train.main(argv) == 0
    run = tmp_path / "amago" / f"{env}_1"
    assert {p.name for p in run.glob("*.monitor.csv")} == {"0.monitor.csv", "1.monitor.csv"}
    assert list((run / "replay").glob("*.npz"))
    with pytest.raises(ValueError, match="Unknown vec_env 'threads'"):
        make_vec_env(env, "amago", 1, vec_env="threads")


def test_learn_default_budget_follows_amago_update_ratio():
    """zoo.learn's default update count = the updates a single-process run of the yml budget would make."""
    from amago_sb import AMAGO
    from zoo.learn import default_n_updates

    kw = dict(n_envs=8, train_freq=16, policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2))
    model = AMAGO("Transformer", "popgym-RepeatPreviousEasy-v0", **kw)  # gradient_steps=None: 1 update / 16 env steps
    assert default_n_updates({"n_timesteps": 20_000, "n_envs": 8}, model) == 20_000 // 16
    assert model.updates_per_phase == 8
    model = AMAGO("Transformer", "popgym-RepeatPreviousEasy-v0", gradient_steps=4, **kw)
    assert default_n_updates({"n_timesteps": 1280, "n_envs": 8}, model) == 1280 * 4 // (16 * 8)


def test_benchmark_reuse_tells_held_out_evaluation_apart(tmp_path):
    """A run evaluated on held-out goals (--eval-env-kwargs) is not reused for one evaluated on training goals."""
    spec = benchmark.RunSpec("amago", "MetaWorldML1-v0", 0, 1000, str(tmp_path), 500, 2,
                             eval_env_kwargs={"split": "test"})
    assert spec.argv()[-2:] == ["--eval-env-kwargs", "split:'test'"]
    run = tmp_path / "amago" / "MetaWorldML1-v0_1"
    (run / "MetaWorldML1-v0").mkdir(parents=True)
    args = {"algo": "amago", "env": "MetaWorldML1-v0", "seed": 0, "n_timesteps": 1000, "eval_freq": 500,
            "eval_episodes": 2, "hyperparams": None, "eval_env_kwargs": {"split": "test"}}
    (run / "MetaWorldML1-v0" / "args.yml").write_text(yaml.safe_dump(args))
    (run / "summary.yml").write_text(yaml.safe_dump({"wall_time_s": 1.0, "last_eval_mean": 0.5}))
    assert benchmark.find_finished_run(spec)["args"]["eval_env_kwargs"] == {"split": "test"}
    assert benchmark.find_finished_run(spec)["run_dir"] == str(run)
    spec.eval_env_kwargs = None
    assert benchmark.find_finished_run(spec) is None


def test_benchmark_reports_in_context_adaptation_of_trial_envs(tmp_path):
    """A trial env's runs get the return per inner episode of evaluation trials (recorded in the run folder, the JSON
    record and the report's adaptation table); a plain env's runs get none."""
    import json

    tiny = {"n_envs": 1, "n_steps": 32, "batch_size": 32, "n_epochs": 1}
    kwargs = dict(eval_episodes=3, hyperparams=tiny, num_threads=1)
    trial_env, plain_env = "DarkKeyToDoor-v0", "popgym-RepeatPreviousEasy-v0"
    results = benchmark.run_benchmark([trial_env, plain_env], ["recurrent_ppo"], 1, 64, tmp_path, **kwargs)
    trial_run = results[(trial_env, "recurrent_ppo")].records[0]
    returns = trial_run["trials"]["returns"]
    assert len(returns) == 3 and {len(t) for t in returns} == {4}  # the yml's trial: 4 inner episodes
    assert [len(t) for t in trial_run["trials"]["successes"]] == [4, 4, 4]  # is_success: the door was opened
    assert json.loads((Path(trial_run["run_dir"]) / benchmark.TRIALS_FILE).read_text()) == trial_run["trials"]
    assert "trials" not in results[(plain_env, "recurrent_ppo")].records[0]
    md = benchmark.write_report(results, tmp_path / "report.md", tmp_path / "figs", "cmd", 64, 1)
    text = md.read_text()
    assert "## In-context adaptation (trial envs)" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {trial_env} | recurrent_ppo |"))
    assert re.search(r"\| [-+]\d+\.\d\d \+- 0\.00 \| (\d\.\d\d, ){3}\d\.\d\d \| 1 \|$", row) and row.count(",") == 6
    records = benchmark.write_run_records(results, tmp_path / "records")
    assert any(json.loads(p.read_text()).get("trials") == trial_run["trials"] for p in records)


def test_benchmark_report_names_ties(tmp_path):
    """Equal final returns are a tie in the 'best' column, never the first algo listed."""
    def record(final):
        return {"summary": {"last_eval_mean": final, "wall_time_s": 1.0}, "args": {"seed": 0}}

    results = {("popgym-LabyrinthEscapeEasy-v0", a): benchmark.Cell([record(-0.999)]) for a in ("amago", "ppo")}
    results[("popgym-RepeatFirstEasy-v0", "amago")] = benchmark.Cell([record(1.0)])
    results[("popgym-RepeatFirstEasy-v0", "ppo")] = benchmark.Cell([record(-0.5)])
    text = benchmark.write_report(results, tmp_path / "r.md", tmp_path / "f", "cmd", 10, 1).read_text()
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| popgym-")}
    assert rows["popgym-LabyrinthEscapeEasy-v0"].endswith("| tie: amago, ppo |")
    assert rows["popgym-RepeatFirstEasy-v0"].endswith("| amago |")
    assert "amago ahead of ppo on 1 of 2 envs" in text
