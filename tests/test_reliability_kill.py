"""SIGKILL a training process at random moments, resume it each time, and check that nothing stored is ever lost.

The trainer is a forked child (a real process; forking skips re-importing torch) running ``AMAGO.learn`` on a tiny
model and env, writing replay files and a checkpoint every 2 vector steps through ``AtomicCheckpointCallback``
(keep last 3). Half of the kills come after a random delay; the other half after a random delay *and* the moment a
temp file (a checkpoint or replay file being written) appears. After each kill: the replay's trajectory count never
drops, every replay file and checkpoint loads, checkpoint counters never decrease, and the next child resumes from
the newest checkpoint with its counters.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

import wrappers
from amago_sb import AMAGO
from amago_sb.checkpoint import AtomicCheckpointCallback, CheckpointManager, validate_checkpoint
from amago_sb.replay import TrajectoryStore

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
ENV = "TMazePassive-v0"


def _vec_env():
    return make_vec_env(lambda: wrappers.make_env(ENV), n_envs=TINY["n_envs"])


def _trainer(root: str) -> None:
    """Resume from the newest valid checkpoint (or start), log the resumed counters, train until killed."""
    torch.set_num_threads(1)
    root_p = Path(root)
    cb = AtomicCheckpointCallback(save_freq=2, save_path=root_p / "ckpt", keep_last=3)
    latest = cb.manager.latest()
    if latest is None:
        model = AMAGO("Transformer", ENV, seed=0, replay_dir=str(root_p / "replay"), **TINY)
    else:
        model = AMAGO.load(latest, env=_vec_env(), replay_dir=str(root_p / "replay"))
    with open(root_p / "resumed.log", "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "from": latest.name if latest else None,
                            "num_timesteps": model.num_timesteps, "n_updates": model._n_updates}) + "\n")
    model.learn(10**7, callback=cb, reset_num_timesteps=False)


def _counters(ckpt: Path) -> tuple[int, int]:
    with zipfile.ZipFile(ckpt) as z:
        data = json.loads(z.read("data"))
    return int(data["num_timesteps"]), int(data["_n_updates"])


def _has_tmp(*dirs: Path) -> bool:
    return any(n.endswith(".tmp") for d in dirs if d.is_dir() for n in os.listdir(d))


def _kill_resume_rounds(tmp_path: Path, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    ctx = mp.get_context("fork")
    # warm up in this process (first model build and update: lazy imports, ~3 s) so that forked trainers start at once
    AMAGO("Transformer", ENV, seed=0, replay_dir=str(tmp_path / "warmup"), **TINY).learn(40)
    replay, ckpt = tmp_path / "replay", tmp_path / "ckpt"
    prev_traj, prev_steps, prev_updates = 0, 0, 0
    checked: set[str] = set()
    stats = {"kills": 0, "targeted": 0, "tmp_left": 0, "orphans_removed": 0, "replay_files": 0, "files_lost": 0,
             "resumed": 0}
    for r in range(rounds):
        proc = ctx.Process(target=_trainer, args=(str(tmp_path),), daemon=True)
        proc.start()
        if r % 2 == 1 and r > 2:  # targeted: after a random delay, the moment a write is in flight
            stats["targeted"] += 1
            time.sleep(rng.uniform(0.1, 1.0))
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and proc.is_alive() and not _has_tmp(ckpt, replay):
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.2, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL, f"round {r}: trainer exited with {proc.exitcode} before the kill"
        stats["kills"] += 1
        stats["tmp_left"] += _has_tmp(ckpt, replay)

        # replay: opening it removes the dead writer's temp files; count never drops; every file loads
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a ReplayFileWarning (corrupt file) fails the test
            store = TrajectoryStore(replay, max_steps=10**9) if replay.is_dir() else None
            if store is not None:
                assert not _has_tmp(replay), [n for n in os.listdir(replay) if n.endswith(".tmp")] + [proc.pid]
                assert store.num_trajectories >= prev_traj, f"round {r}: replay shrank {prev_traj} -> {store.num_trajectories}"
                for p in store.paths():
                    if p.name not in checked:
                        assert store.load(p) is not None
                        checked.add(p.name)
                prev_traj = store.num_trajectories
            # checkpoints: every file in the directory is complete; counters of the newest never decrease
            if ckpt.is_dir():
                mgr = CheckpointManager(ckpt, keep_last=3)
                stats["orphans_removed"] += len(mgr.removed_temp_files)
                assert not _has_tmp(ckpt)
                for p in mgr.checkpoints():
                    validate_checkpoint(p)
                latest = mgr.latest()
                if latest is not None:
                    steps, updates = _counters(latest)
                    assert steps >= prev_steps and updates >= prev_updates, f"round {r}: counters went back"
                    prev_steps, prev_updates = steps, updates
        # the trainer of this round resumed from the newest checkpoint of the previous round, with its counters
        logs = [json.loads(line) for line in (tmp_path / "resumed.log").read_text().splitlines()] \
            if (tmp_path / "resumed.log").exists() else []
        mine = [entry for entry in logs if entry["pid"] == proc.pid]
        if mine and mine[0]["from"] is not None:
            stats["resumed"] += 1
            steps, updates = _counters(ckpt / mine[0]["from"]) if (ckpt / mine[0]["from"]).exists() else (None, None)
            if steps is not None:
                assert (mine[0]["num_timesteps"], mine[0]["n_updates"]) == (steps, updates)
    stats["replay_files"], stats["final_num_timesteps"], stats["final_n_updates"] = prev_traj, prev_steps, prev_updates
    stats["files_lost"] = len(checked - {p.name for p in TrajectoryStore(replay, max_steps=10**9).paths()})
    # finally: the newest checkpoint resumes in this process and its counters go on from where they were
    latest = CheckpointManager(ckpt).latest()
    assert latest is not None, (sorted(os.listdir(ckpt)), stats)
    model = AMAGO.load(latest, env=_vec_env(), replay_dir=str(replay))
    assert model.num_timesteps == prev_steps and model.replay.num_trajectories == prev_traj
    model.learn(8, reset_num_timesteps=False)
    assert model.num_timesteps >= prev_steps + 8 and model._n_updates > prev_updates
    return stats


def test_sigkill_training_20_times_loses_nothing(tmp_path):
    stats = _kill_resume_rounds(tmp_path, rounds=22, seed=0)
    print("\nSIGKILL rounds:", stats)
    assert stats["kills"] == 22 and stats["files_lost"] == 0
    assert stats["resumed"] >= 11, stats  # most rounds got far enough to load the previous checkpoint (19-21 seen)
    assert stats["tmp_left"] >= 1, stats  # some kills did land in the middle of a write


@pytest.mark.slow
def test_sigkill_training_100_times_loses_nothing(tmp_path):
    stats = _kill_resume_rounds(tmp_path, rounds=100, seed=1)
    print("\nSIGKILL rounds:", stats)
    assert stats["kills"] == 100 and stats["files_lost"] == 0 and stats["tmp_left"] >= 5


def _preemptible_trainer(root: str) -> None:
    torch.set_num_threads(1)
    cb = AtomicCheckpointCallback(save_freq=10**6, save_path=Path(root) / "ckpt", stop_signals=(signal.SIGTERM,))
    model = AMAGO("Transformer", ENV, seed=0, replay_dir=str(Path(root) / "replay"), **TINY)
    (Path(root) / "started").touch()
    model.learn(10**7, callback=cb)
    (Path(root) / "stopped").write_text(json.dumps({"signal": cb.stopped_by, "num_timesteps": model.num_timesteps,
                                                    "checkpoint": cb.last_path.name}))


def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tmp_path):
    AMAGO("Transformer", ENV, seed=0, replay_dir=str(tmp_path / "warmup"), **TINY).learn(8)  # warm up before forking
    proc = mp.get_context("fork").Process(target=_preemptible_trainer, args=(str(tmp_path),), daemon=True)
    proc.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    assert proc.exitcode == 0  # stopped by the callback, not killed by the signal
    info = json.loads((tmp_path / "stopped").read_text())
    assert info["signal"] == signal.SIGTERM and info["num_timesteps"] > 0
    latest = CheckpointManager(tmp_path / "ckpt").latest()
    assert latest.name == info["checkpoint"] == f"amago_{info['num_timesteps']}_steps.zip"
    assert _counters(latest)[0] == info["num_timesteps"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # this process's handler untouched


ZOO_TINY = ["-params", "n_envs:2", "batch_size:4", "context_len:16", "train_freq:8", "gradient_steps:1",
            "learning_starts:16", "policy_kwargs:{d_model: 16, n_layers: 1, n_heads: 2}"]


def test_sigkilled_zoo_run_resumes_from_another_directory_with_relative_paths(tmp_path):
    """zoo.train with a relative -f is SIGKILLed after a few checkpoints; `-i` with a relative path from another
    working directory continues the same run folder and its replay (nothing starts from an empty replay)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    run = a / "logs" / "amago" / f"{ENV}_1"
    proc = subprocess.Popen([sys.executable, "-m", "zoo.train", "--algo", "amago", "--env", ENV, "-n", "1000000",
                             "-f", "logs", "--save-freq", "32", "--keep-checkpoints", "2", "--eval-freq", "-1",
                             "--verbose", "0", "--seed", "0", *ZOO_TINY], cwd=a, env=env)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and len(list(run.glob("rl_model_*_steps.zip"))) < 2:
            time.sleep(0.2)
        time.sleep(random.Random(0).uniform(0.0, 0.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpts = sorted(run.glob("rl_model_*_steps.zip"), key=lambda p: int(p.name.split("_")[2]))
    assert 1 <= len(ckpts) <= 2  # rotated: at most --keep-checkpoints (one more may have landed at the kill)
    newest = validate_checkpoint(ckpts[-1])
    steps = int(newest.name.split("_")[2])
    stored = TrajectoryStore(run / "replay", read_only=True).num_trajectories
    assert stored > 0
    rel = os.path.relpath(newest, b)
    r = subprocess.run([sys.executable, "-m", "zoo.train", "--algo", "amago", "--env", ENV, "-n", "64", "-f", "logs",
                        "--eval-freq", "-1", "--verbose", "0", "-i", rel, *ZOO_TINY[:2]], cwd=b, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not (b / "logs").exists()  # the run continued in its own folder
    import yaml

    assert yaml.safe_load((run / "summary.yml").read_text())["n_timesteps"] == steps + 64
    assert TrajectoryStore(run / "replay", read_only=True).num_trajectories > stored  # the same replay, grown
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
