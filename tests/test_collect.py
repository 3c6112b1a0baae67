"""``zoo.collect``: two collector processes and a learner on one replay directory (async AMAGO), checkpoint
discovery, bad input. The collectors are real ``python -m zoo.collect`` subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from stable_baselines3.common.logger import Logger

from amago_sb import AMAGO
from amago_sb.collector_status import read_statuses
from amago_sb.distributed import DistributedLearner, cleanup_distributed, init_distributed
from amago_sb.replay import ReplayFileWarning, TrajectoryStore
from zoo.collect import CollectArgs, Collector, find_checkpoint, main

ROOT = Path(__file__).resolve().parents[1]
ENV = "TMazePassive-v0"  # 11-step episodes: one file each
TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=0, learning_starts=0, n_envs=1, buffer_size=400,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
PID_RE = re.compile(r"^traj_\d+_.+_(\d+)_[0-9a-f]{8}_T\d+_B\d+\.npz$")


def _collector(tmp: Path, i: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "zoo.collect", "--env", ENV, "--replay-dir", str(tmp / "replay"), "--checkpoint",
           str(tmp / "ckpt"), "--n-envs", "2", "--seed", str(i), "--collector-id", f"c{i}", "--reload-interval", "0.2",
           "--status-interval", "0.2", "--manifest", str(tmp / f"manifest{i}.txt"), "--wait-checkpoint", "60",
           "--verbose", "0", "--env-kwargs", "corridor_length:10"]  # the learner's env (not the yml's corridor 100)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_collectors_and_a_learner_share_one_replay(tmp_path):
    replay = tmp_path / "replay"
    model = AMAGO("Transformer", ENV, seed=0, replay_dir=str(replay), device="cpu", **TINY)
    model.set_logger(Logger(None, []))
    procs = [_collector(tmp_path, i) for i in (1, 2)]
    try:
        ctx = init_distributed("gloo", "cpu")
        learner = DistributedLearner(model, ctx, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReplayFileWarning)  # a half-written or corrupt file would raise here
            learner.save(tmp_path / "ckpt" / "latest.zip")  # the collectors wait for a first checkpoint
            deadline = time.monotonic() + 90
            while len(read_statuses(replay)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            summary = learner.learn(30, checkpoint_path=tmp_path / "ckpt" / "latest.zip", save_interval=5, log_interval=10,
                                    learning_starts=100, wait_timeout_s=90, poll_s=0.1)
            # keep training briefly while the collectors reload the newest checkpoint
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and min(s["policy_updates"] for s in read_statuses(replay)) < 30:
                time.sleep(0.2)
    finally:
        cleanup_distributed()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # clean stop: unfinished episodes flushed, final status written
        outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert summary["updates"] == 30 and model._n_updates == 30

    statuses = {s["collector"]: s for s in read_statuses(replay)}
    assert set(statuses) == {"c1", "c2"} and all(s["finished"] for s in statuses.values())
    for s in statuses.values():  # every collector picked up newer checkpoints while it ran
        assert s["reloads"] >= 1 and s["policy_updates"] == 30, s
        assert s["env_steps"] > 0 and s["files_written"] > 0

    # the learner sampled trajectories written by both collectors
    sampled_pids = {int(m.group(1)) for n in learner.sampler.cache._d if (m := PID_RE.match(n))}
    assert {p.pid for p in procs} <= sampled_pids

    # nothing lost outside FIFO: every written file survives unless it is among the oldest ones
    written = []
    for i in (1, 2):
        names = (tmp_path / f"manifest{i}.txt").read_text().split()
        assert len(names) == statuses[f"c{i}"]["files_written"]
        written += names
    written.sort()
    store = TrajectoryStore(replay, max_steps=TINY["buffer_size"])
    survivors = [p.name for p in store.paths()]
    assert set(survivors) <= set(written) and len(survivors) < len(written)  # FIFO did evict
    assert set(survivors) >= set(written[-len(survivors) + 2:])  # the newest files are all there (2 in flight)
    # each writer evicts from its own view of the directory, rescanned every second (TrajectoryStore.refresh_interval),
    # so the cap can be missed (either way) by what the other collector wrote within that second, plus final flushes
    slack = max(s["env_steps_per_s"] for s in statuses.values()) * 1.0 + 6 * 11
    assert TINY["buffer_size"] - slack <= store.num_steps <= TINY["buffer_size"] + slack
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(store.load(p) is not None for p in store.paths())  # complete files only
    assert not [n for n in os.listdir(replay) if n.endswith(".tmp")]


def test_find_checkpoint_picks_the_newest_visible_zip(tmp_path):
    assert find_checkpoint(tmp_path / "missing") is None
    assert find_checkpoint(tmp_path) is None
    for i, name in enumerate(["a.zip", "b.zip", ".c.tmp.zip", "notes.txt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(10**18 + i, 10**18 + i))
    assert find_checkpoint(tmp_path) == tmp_path / "b.zip"  # the hidden temp file of a writer is never picked
    assert find_checkpoint(tmp_path / "a.zip") == tmp_path / "a.zip"


@pytest.mark.parametrize("field,value,msg", [("n_envs", 0, "--n-envs must be >= 1"),
                                             ("vec_env", "ray", "--vec-env must be 'dummy' or 'subproc'"),
                                             ("reload_interval", 0.0, "--reload-interval and --status-interval")])
def test_bad_options_are_rejected(tmp_path, field, value, msg):
    args = CollectArgs(ENV, str(tmp_path), str(tmp_path))
    setattr(args, field, value)
    with pytest.raises(ValueError, match=re.escape(msg)):
        Collector(args)


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    base = ["--replay-dir", str(tmp_path / "r"), "--checkpoint", str(tmp_path / "ckpt"), "--verbose", "0"]
    with pytest.raises(SystemExit) as e:
        main(["--env", "NoSuchEnv-v9", *base])
    assert e.value.code == 2 and "Unknown env id 'NoSuchEnv-v9'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--env", ENV, *base, "--wait-checkpoint", "0.2", "--n-envs", "1"])
    assert e.value.code == 2 and "No checkpoint at" in capsys.readouterr().err
    AMAGO("Transformer", ENV, seed=0, replay_dir=str(tmp_path / "r0"), **TINY).save(tmp_path / "tmaze.zip")
    with pytest.raises(SystemExit) as e:  # a checkpoint of another env
        main(["--env", "MetaBanditTrial-v0", "--replay-dir", str(tmp_path / "r"), "--checkpoint",
              str(tmp_path / "tmaze.zip"), "--n-envs", "1", "--verbose", "0"])
    assert e.value.code == 2 and "does not match the saved model" in capsys.readouterr().err


def test_status_file_is_json_per_collector(tmp_path):
    from amago_sb.collector_status import collected_env_steps, write_status

    write_status(tmp_path, "a", {"env_steps": 5})
    write_status(tmp_path, "b", {"env_steps": 7})
    (tmp_path / "collectors" / "broken.json").write_text("{not json")  # skipped, not fatal
    assert collected_env_steps(tmp_path) == 12
    assert json.loads((tmp_path / "collectors" / "a.json").read_text()) == {"env_steps": 5}
    with pytest.raises(ValueError, match="collector id must be a plain file name"):
        write_status(tmp_path, "../x", {})


def test_subproc_vec_env_option_builds_trajectory_form_envs(tmp_path):
    from stable_baselines3.common.vec_env import SubprocVecEnv

    import wrappers

    env = Collector(CollectArgs(ENV, str(tmp_path), str(tmp_path), n_envs=2, vec_env="subproc", seed=3))._make_env()
    try:
        assert isinstance(env, SubprocVecEnv) and env.num_envs == 2
        assert wrappers.is_trajectory_space(env.observation_space)
        obs = env.reset()
        assert obs["reset"].shape == (2, 1) and (obs["reset"] == 1).all()
    finally:
        env.close()


def test_reload_takes_newer_weights_and_skips_a_corrupt_file(tmp_path):
    import torch

    ckpt = tmp_path / "ckpt"
    learner_model = AMAGO("Transformer", ENV, seed=0, replay_dir=str(tmp_path / "lr"), **TINY)
    learner_model.save(ckpt / "latest.zip")
    c = Collector(CollectArgs(ENV, str(tmp_path / "replay"), str(ckpt), n_envs=2, seed=7, verbose=0))
    env = c._make_env()
    try:
        c.model = c._load(env)
        assert c.maybe_reload() is False  # nothing newer
        with torch.no_grad():
            for p in learner_model.policy.parameters():
                p.add_(0.5)
        learner_model._n_updates, learner_model.num_timesteps = 17, 5000
        learner_model.save(ckpt / "latest.zip")
        assert c.maybe_reload() is True and c.reloads == 1 and c.policy_updates == 17
        assert c.model.num_timesteps >= 5000  # exploration continues from the collected steps
        for k, v in learner_model.policy.state_dict().items():
            assert torch.equal(c.model.policy.state_dict()[k], v), k
        (ckpt / "newer.zip").write_bytes(b"PK\x03\x04 truncated")  # newest file, damaged
        t = (ckpt / "latest.zip").stat().st_mtime_ns + 10**9
        os.utime(ckpt / "newer.zip", ns=(t, t))
        with pytest.warns(UserWarning, match="Could not load checkpoint"):
            assert c.maybe_reload() is False
        assert c.reloads == 1 and c.policy_updates == 17  # still acting with the last good weights
    finally:
        env.close()


def _collect_forever(args: CollectArgs) -> None:
    import torch

    torch.set_num_threads(1)
    Collector(args).run()


@pytest.mark.slow
def test_async_collectors_and_learner_solve_a_recall_task(tmp_path):
    """The whole async pipeline learns: 2 forked collectors + a 1-rank learner solve the delayed recall of
    tests/test_learning.py (~1-2 min on 2 shared cores)."""
    import multiprocessing as mp

    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    import wrappers
    from tests.test_learning import SMALL, RecallCue

    if "RecallCue-v0" not in gym.registry:
        gym.register("RecallCue-v0", entry_point=RecallCue)  # forked collectors inherit the registration
    model = AMAGO("Transformer", "RecallCue-v0", seed=0, replay_dir=str(tmp_path / "replay"), device="cpu", n_envs=1,
                  **SMALL)
    model.set_logger(Logger(None, []))
    ctx_mp = mp.get_context("fork")
    procs = [ctx_mp.Process(target=_collect_forever, args=(CollectArgs(
        "RecallCue-v0", str(tmp_path / "replay"), str(tmp_path / "ckpt"), n_envs=4, seed=i, collector_id=f"c{i}",
        reload_interval=1.0, status_interval=0.5, verbose=0),)) for i in (1, 2)]
    try:
        ctx = init_distributed("gloo", "cpu")
        learner = DistributedLearner(model, ctx, seed=0)
        learner.save(tmp_path / "ckpt" / "latest.zip")
        for p in procs:
            p.start()
        summary = learner.learn(400, checkpoint_path=tmp_path / "ckpt" / "latest.zip", save_interval=20,
                                log_interval=100, wait_timeout_s=120, poll_s=0.2)
    finally:
        cleanup_distributed()
        for p in procs:
            p.terminate()
            p.join(timeout=30)
    assert summary["updates"] == 400
    statuses = read_statuses(tmp_path / "replay")
    assert len(statuses) == 2 and all(s["reloads"] >= 1 for s in statuses)
    env = make_vec_env(lambda: wrappers.make_env(RecallCue()), n_envs=4, seed=100)
    ret, _ = evaluate_policy(model, env, n_eval_episodes=40, deterministic=True)
    assert ret >= 0.9, (ret, statuses)
