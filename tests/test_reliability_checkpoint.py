"""Checkpoints: atomic writes, rotation, corrupt / truncated files, exact resume state, full disk, read-only replay."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from amago_sb import AMAGO
from amago_sb.checkpoint import (
    AtomicCheckpointCallback,
    CheckpointDiskFullError,
    CheckpointManager,
    CheckpointWarning,
    CorruptCheckpointError,
    atomic_write,
    clean_temp_files,
    validate_checkpoint,
)
from amago_sb.replay import ReplayDiskFullError, ReplayFileWarning, TrajectoryStore
from zoo.envs import make_vec_env

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
ENV = "TMazePassive-v0"


def _env():
    return make_vec_env(ENV, "amago", n_envs=2)  # the zoo's factory: trajectory form, monitored


def _model(tmp_path: Path, **kw) -> AMAGO:
    return AMAGO("Transformer", _env(), seed=0, replay_dir=str(tmp_path / "replay"), **{**TINY, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model after 80 env steps (updates done) and its checkpoint directory."""
    root = tmp_path_factory.mktemp("trained")
    model = _model(root)
    model.learn(80, callback=AtomicCheckpointCallback(10, root / "ckpt", keep_last=2))
    return model, root


# ---------------------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda p: p.write_bytes(b"old"))

    def half_then_crash(p: Path) -> None:
        p.write_bytes(b"new but only half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with pytest.raises(FileNotFoundError, match="did not create"):
        atomic_write(target, lambda p: None)


def test_clean_temp_files_removes_dead_writers_only(tmp_path):
    from amago_sb.atomic_files import host_tag

    dead = tmp_path / f".a.zip.1234abcd.{host_tag()}.999999999.tmp"  # no such pid
    live = tmp_path / f".b.zip.1234abcd.{host_tag()}.{os.getpid()}.tmp"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    assert clean_temp_files(tmp_path) == [dead]
    assert live.exists()


# ---------------------------------------------------------------------------------------------------- rotation
def test_rotation_keeps_last_n_and_latest_skips_corrupt(trained):
    model, root = trained
    mgr = CheckpointManager(root / "ckpt", keep_last=2)
    names = [p.name for p in mgr.checkpoints()]
    assert names == ["amago_60_steps.zip", "amago_80_steps.zip"]  # saved every 10 calls (20 env steps), keep 2
    latest = mgr.latest()
    assert latest.name == "amago_80_steps.zip"
    # a damaged newest checkpoint is skipped with a warning naming it
    bad = root / "ckpt" / "amago_90_steps.zip"
    bad.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(CheckpointWarning, match=r"amago_90_steps\.zip"):
        assert mgr.latest() == latest
    bad.unlink()
    with pytest.raises(ValueError, match="keep_last must be"):
        CheckpointManager(root / "x", keep_last=0)


# ---------------------------------------------------------------------------------------------------- corrupt checkpoints
def _corruptions(good: bytes) -> dict[str, bytes]:
    mid = len(good) // 2
    flipped = bytearray(good)
    flipped[mid:mid + 64] = bytes(b ^ 0xFF for b in flipped[mid:mid + 64])
    return {"cut in half": good[:mid], "empty": b"", "not a zip": b"hello world" * 100, "bytes flipped": bytes(flipped)}


@pytest.mark.parametrize("case", ["cut in half", "empty", "not a zip", "bytes flipped"])
def test_corrupt_checkpoint_load_names_file_and_fix(trained, tmp_path, case):
    model, root = trained
    good = (root / "ckpt" / "amago_80_steps.zip").read_bytes()
    d = tmp_path / "ckpts"
    d.mkdir()
    (d / "amago_40_steps.zip").write_bytes(good)
    path = d / "amago_80_steps.zip"
    path.write_bytes(_corruptions(good)[case])
    msg = rf"Checkpoint {re.escape(str(path))} is corrupt or truncated .*load an earlier checkpoint .*amago_40_steps\.zip"
    with pytest.raises(CorruptCheckpointError, match=msg):
        AMAGO.load(path, env=_env())
    with pytest.raises(CorruptCheckpointError, match="load an earlier checkpoint"):
        AMAGO.load(d / "amago_80_steps", env=_env())  # SB3-style name without .zip
    assert AMAGO.load(d / "amago_40_steps.zip", env=_env()).num_timesteps == 80


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate_checkpoint(tmp_path / "nope.zip")


# ---------------------------------------------------------------------------------------------------- exact resume state
def _draws(model: AMAGO) -> list:
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), model.sampler.rng.random(3).tolist(),
            model.exploration.rng.random(3).tolist(), model.exploration.multiplier.tolist()]


def test_resume_restores_counters_optimizer_targets_stats_rng_and_replay(trained, tmp_path):
    model, root = trained
    path = tmp_path / "m.zip"
    model.save(path)
    expected = _draws(model)  # what the saved run would have drawn next
    n_traj = model.replay.num_trajectories
    loaded = AMAGO.load(path, env=_env(), replay_dir=str(root / "replay"))
    assert _draws(loaded) == expected
    for attr in ("num_timesteps", "_n_updates", "_episode_num", "_nonfinite_skips"):
        assert getattr(loaded, attr) == getattr(model, attr), attr
    sd, lsd = model.policy.state_dict(), loaded.policy.state_dict()
    assert sd.keys() == lsd.keys()
    for k in sd:  # online + target heads, PopArt and input-norm statistics, sigma-reparam vectors
        torch.testing.assert_close(lsd[k], sd[k], rtol=0, atol=0, msg=k)
    assert any(k.startswith("target_critics") for k in sd) and any("popart" in k for k in sd)
    opt, lopt = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert opt["param_groups"] == lopt["param_groups"] and len(opt["state"]) == len(lopt["state"]) > 0
    for i in opt["state"]:
        for k in opt["state"][i]:
            torch.testing.assert_close(lopt["state"][i][k], opt["state"][i][k], rtol=0, atol=0)
    assert loaded.replay.num_trajectories == n_traj > 0
    # the resumed run continues its counters (and its tensorboard curve) instead of restarting them
    steps, updates = loaded.num_timesteps, loaded._n_updates
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.num_timesteps == steps + 16 and loaded._n_updates == updates + 4
    assert loaded.replay.num_trajectories >= n_traj


def test_save_is_atomic_for_plain_model_save(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "plain")  # SB3 naming: .zip appended
    assert sorted(os.listdir(tmp_path)) == ["plain.zip"]
    validate_checkpoint(tmp_path / "plain")


# ---------------------------------------------------------------------------------------------------- disk full
def _in_child(fn, *args, timeout: float = 120.0) -> str:
    """Run ``fn(*args) -> str`` in a forked child; return its result (or its exception as text)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def run():
        try:
            q.put(fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            q.put(f"child raised {type(e).__name__}: {e}")

    p = ctx.Process(target=run, daemon=True)
    p.start()
    out = q.get(timeout=timeout)
    p.join(10)
    return out


def _train_with_file_size_limit(root: str, limit: int, save_freq: int) -> str:
    """Train with RLIMIT_FSIZE = ``limit`` bytes (writes beyond it fail with EFBIG, as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    model = AMAGO.load(CheckpointManager(Path(root) / "ckpt").latest(), env=_env(), replay_dir=str(Path(root) / "replay"))
    try:
        model.learn(400, callback=AtomicCheckpointCallback(save_freq, Path(root) / "ckpt", keep_last=2),
                    reset_num_timesteps=False)
    except (CheckpointDiskFullError, ReplayDiskFullError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


@pytest.mark.parametrize("limit, save_freq, error", [(100_000, 5, "CheckpointDiskFullError"),  # checkpoint > limit
                                                     (2_000, 10**6, "ReplayDiskFullError")])  # replay file > limit
def test_full_disk_stops_with_clear_error_and_loadable_state(tmp_path, limit, save_freq, error):
    model = _model(tmp_path)
    model.learn(40, callback=AtomicCheckpointCallback(10, tmp_path / "ckpt", keep_last=2))
    before = sorted(os.listdir(tmp_path / "ckpt"))
    n_traj = model.replay.num_trajectories
    out = _in_child(_train_with_file_size_limit, str(tmp_path), limit, save_freq)
    assert out.startswith(error), out
    assert "free disk space" in out and ("previous checkpoints are intact" in out or "no partial file" in out)
    # nothing partial left; every file loads; the run resumes from the newest checkpoint
    assert not [n for d in ("ckpt", "replay") for n in os.listdir(tmp_path / d) if n.endswith(".tmp")]
    mgr = CheckpointManager(tmp_path / "ckpt")
    assert [p.name for p in mgr.checkpoints()] == before  # the failed save did not rotate the old ones away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = TrajectoryStore(tmp_path / "replay")
        assert all(store.load(p) is not None for p in store.paths()) and store.num_trajectories >= n_traj
        resumed = AMAGO.load(mgr.latest(), env=_env(), replay_dir=str(tmp_path / "replay"))
    resumed.learn(8, reset_num_timesteps=False)
    assert resumed.num_timesteps >= 48


# ---------------------------------------------------------------------------------------------------- replay dir faults
def test_corrupt_and_truncated_replay_files_are_skipped_on_resume(trained, tmp_path):
    model, root = trained
    path = tmp_path / "m.zip"
    model.save(path)
    replay = tmp_path / "replay"
    replay.mkdir()
    files = sorted((root / "replay").glob("*.npz"))[:6]
    for f in files:
        (replay / f.name).write_bytes(f.read_bytes())
    (replay / files[0].name).write_bytes(files[0].read_bytes()[:200])  # truncated
    (replay / files[1].name).write_bytes(os.urandom(files[1].stat().st_size))  # garbage
    (replay / files[2].name).write_bytes(b"")  # empty
    loaded = AMAGO.load(path, env=_env(), replay_dir=str(replay), gradient_steps=20)  # 80 windows: every file drawn
    with pytest.warns(ReplayFileWarning) as rec:
        loaded.learn(8, reset_num_timesteps=False)
    named = " ".join(str(w.message) for w in rec)
    assert all(f.name in named for f in files[:3])
    assert loaded.replay.index()[2] == {f.name for f in files[:3]}  # marked bad, never sampled again
    assert loaded._n_updates == model._n_updates + 20 and loaded.num_timesteps == model.num_timesteps + 8


def _as_nobody(fn):
    def run(*args):
        if os.geteuid() == 0:  # root ignores permission bits: check as an unprivileged user
            os.setgid(65534)
            os.setuid(65534)
        return fn(*args)
    return run


def _open_read_only_replay(ckpt: str, replay: str) -> str:
    try:
        AMAGO.load(ckpt, env=_env(), replay_dir=replay)
    except PermissionError as e:
        return f"PermissionError: {e}"
    return "no error"


def test_read_only_replay_dir_is_a_clear_error(trained):
    model, _ = trained
    base = Path(tempfile.mkdtemp(prefix="amago_rel_ro_"))  # pytest's tmp root is private (0700) to its user
    try:
        os.chmod(base, 0o755)
        ro = base / "replay"
        ro.mkdir()
        ckpt = base / "m.zip"
        model.save(ckpt)
        os.chmod(ckpt, 0o644)
        os.chmod(ro, 0o555)
        out = _in_child(_as_nobody(_open_read_only_replay), str(ckpt), str(ro))
        assert re.search(rf"PermissionError: Replay directory {re.escape(str(ro))} is not writable.*replay_dir", out), out
    finally:
        os.chmod(base / "replay", 0o755)
        shutil.rmtree(base)
