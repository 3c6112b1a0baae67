"""Many writers + a reader on one replay directory: two writer processes with FIFO while the learner samples."""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings

import numpy as np
import torch

from amago_sb.replay import ReplayFileWarning, TrajectoryStore, WindowSampler
from tests.replay_helpers import make_traj

MAX_STEPS = 1500
MAX_T = 120


def _writer(directory: str, writer: int, n: int, out: mp.Queue) -> None:
    store = TrajectoryStore(directory, max_steps=MAX_STEPS, fsync=True, refresh_interval=0.0)
    rng = np.random.default_rng(writer)
    names = []
    for k in range(n):
        # time encodes (writer, file): any mixed-up or half-read window breaks the reader's checks
        names.append(store.add(make_traj(int(rng.integers(20, MAX_T)), offset=writer * 1_000_000 + k * 1000)).name)
    out.put((writer, names))


def test_two_writer_processes_and_a_sampling_reader(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    TrajectoryStore(tmp_path, max_steps=MAX_STEPS).add(make_traj(30, offset=5_000_000))  # so the reader can start
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60, q)) for w in (1, 2)]
    for p in procs:
        p.start()
    reader = WindowSampler(TrajectoryStore(tmp_path, read_only=True), 16, seed=0, refresh_interval=0.0)
    writers_seen: set[int] = set()
    n_batches = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayFileWarning)  # a corrupt / half-written file would raise here
        deadline = time.monotonic() + 60
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            b = reader.sample(8)
            n_batches += 1
            for i in range(8):
                r = int(b.mask[i].sum())
                t = b.time_idx[i, :r]
                assert torch.equal(t, torch.arange(int(t[0]), int(t[0]) + r))
                assert torch.equal(b.observations["obs"][i, :r, 0], t.float())
                assert torch.equal(b.actions[i, : r - 1], t[:-1])
                writers_seen.add(int(t[0]) // 1_000_000)
    results = dict(q.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert n_batches > 5 and {1, 2} <= writers_seen
    written = sorted(results[1] + results[2])
    assert len(set(written)) == 120  # unique names across processes
    store = TrajectoryStore(tmp_path, max_steps=MAX_STEPS)
    survivors = {p.name for p in store.paths()}
    assert survivors <= set(written)  # the first (oldest) file was evicted, nothing foreign appeared
    # FIFO held across processes: the cap is honoured, not over-evicted, and the survivors are the newest files
    assert MAX_STEPS - 2 * MAX_T < store.num_steps <= MAX_STEPS + MAX_T
    newest = set(written[-len(survivors):])
    assert len(survivors - newest) <= 2, (sorted(survivors - newest), len(survivors))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(store.load(p) is not None for p in store.paths())
