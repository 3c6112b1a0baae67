"""TrajectoryStore on real files: round trip, atomic writes, FIFO, orphans, corrupt / vanished files, permissions."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from amago_sb.replay import ReplayDiskFullError, ReplayFileWarning, TrajectoryStore, WindowSampler, traj_steps_from_name
from tests.replay_helpers import make_traj

request_cleanup: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _cleanup_dirs():
    yield
    for d in request_cleanup:
        for p in d.rglob("*"):
            os.chmod(p, 0o755)
        shutil.rmtree(d, ignore_errors=True)


def _tmp_files(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_round_trip_and_index(tmp_path):
    store = TrajectoryStore(tmp_path / "r", max_steps=10_000, fsync=True)
    traj = make_traj(7, offset=40, achieved=True, writer=3)
    traj.observations["image"] = np.random.default_rng(0).integers(0, 255, (8, 4, 4, 3), dtype=np.uint8)
    path = store.add(traj)
    assert path.parent == tmp_path / "r" and path.suffix == ".npz"
    assert traj_steps_from_name(path.name) == 7
    back = store.load(path)
    assert back is not None
    assert set(back.observations) == set(traj.observations)
    for k, v in traj.observations.items():
        np.testing.assert_array_equal(back.observations[k], v)
        assert back.observations[k].dtype == v.dtype
    np.testing.assert_array_equal(back.actions, traj.actions)
    np.testing.assert_array_equal(back.achieved, traj.achieved)
    np.testing.assert_array_equal(back.terminated, traj.terminated)
    assert back.time_offset == 40 and back.meta == {"writer": 3}
    store.add(make_traj(5, terminated=False))
    assert store.num_trajectories == 2 and store.num_steps == 12
    # a second store on the same dir sees the same index from file names alone
    other = TrajectoryStore(tmp_path / "r", read_only=True)
    assert other.num_trajectories == 2 and other.num_steps == 12
    assert [p.name for p in other.paths()] == [p.name for p in store.paths()]
    assert _tmp_files(tmp_path / "r") == []


def test_names_unique_and_fifo_ordered(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    paths = [store.add(make_traj(2)) for _ in range(50)]
    assert len({p.name for p in paths}) == 50
    assert [p.name for p in store.paths()] == [p.name for p in paths]  # creation order == name order


def test_fifo_eviction_by_steps(tmp_path):
    store = TrajectoryStore(tmp_path, max_steps=100, fsync=False)
    paths = [store.add(make_traj(30)) for _ in range(5)]
    # 5 * 30 = 150 > 100: the two oldest go, the newest three (90 steps) stay
    assert [p.name for p in store.paths()] == [p.name for p in paths[2:]]
    assert store.num_steps == 90 and not paths[0].exists() and not paths[1].exists()
    big = store.add(make_traj(150))  # larger than the cap: everything older goes, the newest file is kept
    assert store.paths() == [big] and store.num_steps == 150


def test_add_is_atomic_for_concurrent_readers(tmp_path):
    """A reader thread loads every *.npz it sees while large files are written: it never sees a partial file."""
    store = TrajectoryStore(tmp_path, max_steps=10**9, fsync=True)
    stop = threading.Event()
    seen: set[str] = set()
    failures: list[str] = []

    def reader():
        rd = TrajectoryStore(tmp_path, read_only=True)
        while not stop.is_set():
            for p in tmp_path.glob("*.npz"):
                if p.name in seen:
                    continue
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    if rd.load(p) is None:
                        failures.append(f"{p.name}: {[str(x.message) for x in w]}")
                seen.add(p.name)

    th = threading.Thread(target=reader)
    th.start()
    try:
        for _ in range(12):
            store.add(make_traj(20_000, obs_dim=16))  # ~1.5 MB each: slow enough to be caught mid-write if not atomic
    finally:
        stop.set()
        th.join()
    assert failures == []
    assert len(seen) >= 1 and _tmp_files(tmp_path) == []


def _endless_writer(directory: str, ready) -> None:
    store = TrajectoryStore(directory, max_steps=10**9, fsync=False)
    ready.set()
    while True:
        store.add(make_traj(40_000, obs_dim=16))


def test_sigkill_mid_write_leaves_only_loadable_files(tmp_path):
    rng = np.random.default_rng(0)
    ctx = mp.get_context("fork")  # forked children start at once (no re-import of torch)
    orphans = 0
    for _ in range(4):
        ready = ctx.Event()
        proc = ctx.Process(target=_endless_writer, args=(str(tmp_path), ready))
        proc.start()
        assert ready.wait(30)
        time.sleep(0.05 + 0.25 * rng.random())
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        orphans += len(_tmp_files(tmp_path))
    assert orphans >= 1  # at least one kill landed mid-write (writing is most of the writer's loop)
    store = TrajectoryStore(tmp_path)  # opening cleans the dead writers' temp files
    assert _tmp_files(tmp_path) == []
    assert store.num_trajectories >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(store.load(p) is not None for p in store.paths())


def test_orphaned_temp_files_cleaned_on_open(tmp_path):
    store = TrajectoryStore(tmp_path)
    host = store._host
    dead = tmp_path / f".traj_x.npz.{host}.{_dead_pid()}.tmp"
    live = tmp_path / f".traj_y.npz.{host}.{os.getpid()}.tmp"  # a writer in progress (this process): kept
    stale = tmp_path / f".traj_z.npz.{host}.{os.getpid()}.tmp"
    junk = tmp_path / ".whatever.tmp"  # not our temp layout: a user's file, never deleted
    for p in (dead, live, stale, junk):
        p.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))  # older than stale_tmp_seconds: orphan even though the pid lives
    TrajectoryStore(tmp_path)
    assert sorted(_tmp_files(tmp_path)) == sorted([live.name, junk.name])


def _write_good(store: TrajectoryStore, n: int = 3) -> list[Path]:
    return [store.add(make_traj(10)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["truncated", "zero_bytes", "garbage", "missing_keys"])
def test_corrupt_file_skipped_with_warning(tmp_path, kind):
    store = TrajectoryStore(tmp_path, fsync=False)
    good = _write_good(store)
    bad = tmp_path / good[1].name.replace("_T10", "_T11")
    data = good[0].read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "zero_bytes":
        bad.write_bytes(b"")
    elif kind == "garbage":
        bad.write_bytes(os.urandom(500))
    else:
        np.savez(bad, something=np.zeros(3))
    store.refresh()
    assert store.num_trajectories == 4
    with pytest.warns(ReplayFileWarning, match=re.escape(bad.name)):
        assert store.load(bad) is None
    # the sampler never crashes on it and never returns it: every window comes from a good file
    sampler = WindowSampler(store, 4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplayFileWarning)
        for _ in range(20):
            b = sampler.sample(8)
            assert b.mask.all()  # T=10 >= 3 in every good file
    assert bad.name in store.index()[2]


def test_sampler_skips_corrupt_file_it_draws(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    good = store.add(make_traj(10))
    bad = tmp_path / good.name.replace("_T10", "_T1000")  # heavy weight: drawn almost surely
    bad.write_bytes(b"not a zip")
    store.refresh()
    sampler = WindowSampler(store, 4, seed=0)
    with pytest.warns(ReplayFileWarning, match=re.escape(bad.name)):
        b = sampler.sample(16)
    assert b.time_idx.max() <= 10


def test_vanished_file_tolerated(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    a, b = _write_good(store, 2)
    a.unlink()
    with pytest.warns(ReplayFileWarning, match=re.escape(a.name)):
        assert store.load(a) is None
    assert store.num_trajectories == 1  # dropped from the index
    c = store.add(make_traj(10))
    c.unlink()  # removed behind the sampler's back (another writer's FIFO): silently redrawn
    sampler = WindowSampler(store, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(8)


def test_empty_store_sample_error(tmp_path):
    with pytest.raises(RuntimeError, match="holds no readable trajectories"):
        WindowSampler(TrajectoryStore(tmp_path), 8).sample(4)


def _read_only_checks(d: str, drop_to_nobody: bool, out) -> None:
    lines = []
    if drop_to_nobody:  # root ignores permissions: check as an unprivileged user
        os.setgid(65534)
        os.setuid(65534)
    try:
        TrajectoryStore(d)
    except PermissionError as e:
        lines.append(f"PermissionError: {e}")
    s = TrajectoryStore(d, read_only=True)
    lines.append(f"read_only ok {s.num_trajectories} {sum(s.load(p) is not None for p in s.paths())}")
    try:
        s.add(make_traj(3))
    except PermissionError as e:
        lines.append(f"add refused: {e}")
    out.put("\n".join(lines))


def test_read_only_dir(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="amago_ro_"))  # pytest's tmp root is private (0700) to its user
    request_cleanup.append(base)
    d = base / "ro"
    _write_good(TrajectoryStore(d, fsync=False), 2)
    os.chmod(base, 0o755)
    os.chmod(d, 0o555)
    for p in d.iterdir():
        os.chmod(p, 0o444)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_read_only_checks, args=(str(d), os.geteuid() == 0, q))
    proc.start()
    text = q.get(timeout=60)
    proc.join()
    assert re.search(r"PermissionError: Replay directory .*ro is not writable.*read_only=True", text), text
    assert "read_only ok 2 2" in text and "add refused: " in text


def test_non_creatable_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="Cannot create replay directory"):
        TrajectoryStore(blocker / "replay")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrajectoryStore(tmp_path / "missing", read_only=True)


def _fill_disk(d: str, out) -> None:
    store = TrajectoryStore(d)
    store.add(make_traj(5))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the kernel refuses to grow files past 20 kB
    try:
        store.add(make_traj(5000))
        out.put("no error")
    except ReplayDiskFullError as e:
        out.put(f"full: {e}")


def test_disk_full_clear_error_no_partial_file(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_fill_disk, args=(str(tmp_path), q))
    proc.start()
    text = q.get(timeout=60)
    proc.join()
    assert text.startswith("full: ") and "no partial file was left" in text, text
    assert _tmp_files(tmp_path) == []
    store = TrajectoryStore(tmp_path)
    assert store.num_trajectories == 1 and store.load(store.paths()[0]) is not None


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        TrajectoryStore(tmp_path, max_steps=0)
    store = TrajectoryStore(tmp_path)
    with pytest.raises(TypeError, match="expects a wrappers.trajectory.Trajectory"):
        store.add({"obs": 1})
    with pytest.raises(ValueError, match="0 transitions"):
        store.add(make_traj(0))
    bad_meta = make_traj(3)
    bad_meta.meta = {"x": object()}
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.add(bad_meta)
    short = make_traj(3)
    short.actions = short.actions[:2]
    with pytest.raises(ValueError, match="actions has 2 rows"):
        store.add(short)
    assert store.num_trajectories == 0 and list(tmp_path.iterdir()) == []


def test_fifo_eviction_by_bytes(tmp_path):
    probe = TrajectoryStore(tmp_path / "probe", fsync=False)
    size = probe.add(make_traj(50, obs_dim=32)).stat().st_size
    assert probe.num_bytes == size
    store = TrajectoryStore(tmp_path / "r", max_steps=10**9, max_bytes=int(2.5 * size), fsync=False)
    paths = [store.add(make_traj(50, obs_dim=32)) for _ in range(5)]
    assert store.paths() == paths[3:] and store.num_bytes == 2 * size
    assert sum(p.stat().st_size for p in store.paths()) == store.num_bytes
    assert TrajectoryStore(tmp_path / "r", read_only=True).num_bytes == 2 * size  # from names alone
    with pytest.raises(ValueError, match="max_bytes must be a positive int or None"):
        TrajectoryStore(tmp_path, max_bytes=0)


def test_directory_removed_while_in_use(tmp_path):
    store = TrajectoryStore(tmp_path / "r", fsync=False)
    store.add(make_traj(3))
    shutil.rmtree(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="was removed while in use"):
        store.paths()
