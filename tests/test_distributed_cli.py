"""``python -m zoo.learn`` as a plain process and under ``torchrun`` with 2 gloo ranks, on a prefilled replay."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amago_sb import AMAGO

ROOT = Path(__file__).resolve().parents[1]
ENV = "TMazePassive-v0"
PARAMS = ["batch_size:4", "context_len:8", "learning_starts:50",
          "policy_kwargs:{d_model: 16, n_layers: 1, n_heads: 2, head_hidden: 16}"]


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("learn_cli") / "replay"
    AMAGO("Transformer", ENV, seed=0, replay_dir=str(d), batch_size=4, context_len=8, gradient_steps=0, n_envs=2,
          policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16)).learn(200)
    return d


def _learn(replay: Path, out: Path, launcher: list[str], extra: list[str], params: tuple = ()) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "zoo.learn", "--env", ENV, "--replay-dir", str(replay), "--checkpoint", str(out / "ckpt"),
           "-f", str(out / "logs"), "--n-updates", "6", "--save-interval", "3", "--log-interval", "3", "--seed", "0",
           "--backend", "gloo", "--wait-timeout", "30", *extra, "-params", *PARAMS, *params]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)


def _check_run(out: Path, world_size: int) -> dict:
    run_dir = out / "logs" / "amago" / f"{ENV}_1"
    summary = yaml.safe_load((run_dir / "summary.yml").read_text())
    assert summary["updates"] == 6 and summary["world_size"] == world_size
    args = yaml.safe_load((run_dir / ENV / "args.yml").read_text())
    assert args["world_size"] == world_size and args["n_updates"] == 6
    with open(run_dir / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["train/n_updates"])) for r in rows] == [3, 6]  # rank 0 logs, once per log point
    assert all(float(r["train/critic_loss"]) >= 0 for r in rows)
    final = AMAGO.load(run_dir / f"{ENV}.zip", device="cpu", replay_dir=str(out / "tmp_replay"))
    assert final._n_updates == 6 and final.zoo_env_id == ENV
    assert AMAGO.load(out / "ckpt" / "latest.zip", device="cpu", replay_dir=str(out / "tmp_replay"))._n_updates == 6
    return summary


def test_learn_cli_single_process(replay, tmp_path):
    r = _learn(replay, tmp_path, [sys.executable], [])
    assert r.returncode == 0, r.stdout + r.stderr
    _check_run(tmp_path, 1)
    assert "1 rank(s) on gloo" in r.stdout
    # continue from the final model (-i): counters carry over into a new run folder
    final = tmp_path / "logs" / "amago" / f"{ENV}_1" / f"{ENV}.zip"
    r = _learn(replay, tmp_path, [sys.executable], ["-i", str(final), "--n-updates", "3"], params=("learning_rate:1e-4",))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = yaml.safe_load((tmp_path / "logs" / "amago" / f"{ENV}_2" / "summary.yml").read_text())
    assert summary["updates"] == 3 and summary["n_updates_total"] == 9


def test_learn_cli_under_torchrun_with_two_gloo_ranks(replay, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = _learn(replay, tmp_path, launcher, [])
    assert r.returncode == 0, r.stdout + r.stderr
    _check_run(tmp_path, 2)
    assert not (tmp_path / "logs" / "amago" / f"{ENV}_2").exists()  # rank 1 made no run folder of its own


def test_learn_cli_bad_input_exits_2(replay, tmp_path):
    r = _learn(replay, tmp_path, [sys.executable], [], params=("no_such_param:1",))
    assert r.returncode == 2 and "no_such_param" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "zoo.learn", "--env", ENV, "--replay-dir", str(tmp_path / "empty"),
                        "-f", str(tmp_path / "logs2"), "--wait-timeout", "0.5", "--backend", "gloo", "-params", *PARAMS],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Start collectors" in r.stderr, r.stderr
