"""WindowSampler / Batch / ReplayDataset: windows, padding, masks, time indices, weighting, relabel, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amago_sb.replay import Batch, ReplayDataset, TrajectoryStore, WindowSampler
from tests.replay_helpers import make_traj


def _check_batch(b: Batch, L: int) -> None:
    """Every valid entry equals its absolute time index (make_traj encodes time in obs/actions/rewards)."""
    B, W = b.mask.shape
    assert W <= L
    assert b.actions.shape == (B, W - 1) and b.rewards.shape == (B, W - 1) and b.terminated.shape == (B, W - 1)
    for i in range(B):
        r = int(b.mask[i].sum())
        assert b.mask[i, :r].all() and not b.mask[i, r:].any()  # right-padded, contiguous
        t = b.time_idx[i, :r]
        assert torch.equal(t, torch.arange(int(t[0]), int(t[0]) + r))
        assert torch.equal(b.observations["obs"][i, :r, 0], t.float())
        assert torch.equal(b.observations["time"][i, :r, 0], t.float())
        assert torch.equal(b.actions[i, : r - 1], t[:-1])
        assert torch.equal(b.rewards[i, : r - 1], t[:-1].float())
        # padding is zero everywhere
        assert not b.observations["obs"][i, r:].any() and not b.time_idx[i, r:].any()
        assert not b.actions[i, r - 1:].any() and not b.rewards[i, r - 1:].any() and not b.terminated[i, r - 1:].any()


def test_windows_padding_masks_time_idx(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    lengths = {3: 0, 9: 100, 40: 1000}  # T -> time_offset (chunks of long episodes keep their absolute time)
    for T, off in lengths.items():
        store.add(make_traj(T, offset=off, terminated=(T != 40)))
    L = 8
    sampler = WindowSampler(store, L, seed=0)
    starts: dict[int, set[int]] = {T: set() for T in lengths}
    saw_terminal = False
    for _ in range(60):
        b = sampler.sample(6)
        _check_batch(b, L)
        assert b.mask.shape[1] == int(b.mask.sum(1).max())  # W = longest window of the batch
        for i in range(6):
            r = int(b.mask[i].sum())
            t0 = int(b.time_idx[i, 0])
            T = next(T for T, off in lengths.items() if off <= t0 <= off + T)
            assert r == min(T + 1, L)
            starts[T].add(t0 - lengths[T])
            ends_episode = t0 - lengths[T] + r - 1 == T
            # terminated only on the last transition of a terminated trajectory, never on a truncated one
            assert b.terminated[i].sum() == (1.0 if ends_episode and T != 40 else 0.0)
            if ends_episode and T != 40:
                assert b.terminated[i, r - 2] == 1.0
                saw_terminal = True
    assert saw_terminal
    # window start uniform over all max(1, T + 2 - L) starts
    assert starts == {3: {0}, 9: set(range(3)), 40: set(range(34))}


@pytest.mark.parametrize("padded", ["none", "left", "right", "both"])
def test_padded_sampling_covers_the_first_and_last_rows(tmp_path, padded):
    store = TrajectoryStore(tmp_path, fsync=False)
    T, L = 30, 8  # 31 rows, windows of 8
    store.add(make_traj(T, offset=0, terminated=True))
    sampler = WindowSampler(store, L, seed=0, padded_sampling=padded)
    hits = np.zeros(T + 1)
    for _ in range(400):
        b = sampler.sample(8)
        _check_batch(b, L)  # windows stay consistent: values equal their time index, padding masked
        for i in range(8):
            r = int(b.mask[i].sum())
            assert r >= 2
            t0 = int(b.time_idx[i, 0])
            hits[t0:t0 + r] += 1
    ratio_first, ratio_last = hits[0] / hits[T // 2], hits[T] / hits[T // 2]
    if padded == "none":
        assert ratio_first < 0.3 and ratio_last < 0.3  # ends under-sampled: 1 window start of 24 covers row 0
    if padded in ("left", "both"):
        assert ratio_first > 0.75
    if padded in ("right", "both"):
        assert ratio_last > 0.75
    with pytest.raises(ValueError, match="padded_sampling must be one of"):
        WindowSampler(store, L, padded_sampling="middle")


def test_short_trajectories_give_short_batch(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(4))
    store.add(make_traj(2))
    b = WindowSampler(store, 64).sample(8)
    assert b.mask.shape == (8, 5) and b.actions.shape == (8, 4)
    _check_batch(b, 64)


def test_context_len_one(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(5))
    b = WindowSampler(store, 1).sample(4)
    assert b.mask.shape == (4, 1) and b.actions.shape == (4, 0) and b.mask.all()


def test_dtypes(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    T = 6
    traj = make_traj(T)
    traj.observations = {
        "obs/image": np.full((T + 1, 4, 4, 3), 200, np.uint8),
        "obs/id": np.arange(T + 1, dtype=np.int64),
        "obs/multi": np.ones((T + 1, 2), np.int32),
        "obs/bits": np.ones((T + 1, 3), np.int8),
        "obs/vec": np.ones((T + 1, 2), np.float64),
        "instruction": np.ones((T + 1, 2, 3), np.int64),
    }
    traj.actions = np.ones((T, 2), np.float64)
    store.add(traj)
    b = WindowSampler(store, 4).sample(2)
    dt = {k: v.dtype for k, v in b.observations.items()}
    assert dt == {"obs/image": torch.uint8, "obs/id": torch.int64, "obs/multi": torch.int64, "obs/bits": torch.float32,
                  "obs/vec": torch.float32, "instruction": torch.int64}
    assert b.observations["obs/image"].shape == (2, 4, 4, 4, 3) and b.observations["obs/image"].max() == 200
    assert b.actions.dtype == torch.float32 and b.actions.shape == (2, 3, 2)
    assert b.rewards.dtype == torch.float32 and b.terminated.dtype == torch.float32
    assert b.mask.dtype == torch.bool and b.time_idx.dtype == torch.int64


def test_length_weighted_choice(tmp_path):
    """P(traj) ~ max(T, L-1): a T=1000 trajectory is drawn 100x as often as a T=10 one with L=11."""
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(10, offset=0))
    store.add(make_traj(1000, offset=10_000))
    for T in (2, 5):
        store.add(make_traj(T, offset=100_000 * T))  # shorter than the window: same weight as T = L - 1
    sampler = WindowSampler(store, 11, seed=0)
    trajs = sampler.sample_trajectories(20_000)
    which = {0: 0, 10_000: 1, 200_000: 2, 500_000: 3}
    counts = np.bincount([which[t.time_offset] for t in trajs], minlength=4)
    expected = np.array([10, 1000, 10, 10]) / 1030 * 20_000
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5), (counts, expected)


def test_relabel_hook(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(30, achieved=True))
    calls = []

    def relabel(traj, rng):
        assert isinstance(rng, np.random.Generator)
        calls.append(len(traj))  # the whole trajectory, before windowing
        out = make_traj(12, offset=traj.time_offset)
        out.rewards = np.full(12, 7.0, np.float32)
        return out

    b = WindowSampler(store, 8, relabel=relabel, seed=0).sample(5)
    assert calls == [30] * 5
    assert torch.all(b.rewards == 7.0) and b.time_idx.max() <= 12


def test_cached_arrays_are_read_only(tmp_path):
    """Relabel functions that edit the cached trajectory in place fail loudly instead of corrupting later samples."""
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(10))

    def bad_relabel(traj, rng):
        traj.rewards[:] = 1.0
        return traj

    with pytest.raises(ValueError, match="read-only"):
        WindowSampler(store, 4, relabel=bad_relabel).sample(2)


def test_lru_cache_bounded(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    for _ in range(20):
        store.add(make_traj(100, obs_dim=8))  # ~4.5 kB each
    sampler = WindowSampler(store, 8, cache_bytes=20_000)
    for _ in range(10):
        sampler.sample(8)
    assert 0 < len(sampler.cache) <= 5 and sampler.cache.bytes <= 20_000


def test_sees_new_files_and_evictions(tmp_path):
    store = TrajectoryStore(tmp_path, max_steps=30, fsync=False)
    store.add(make_traj(10, offset=0))
    sampler = WindowSampler(store, 4, seed=0)
    assert sampler.sample(16).time_idx.max() <= 10
    for k in range(1, 4):  # same store object: its index updates on add (no rescan needed)
        store.add(make_traj(10, offset=1000 * k))
    t = sampler.sample(64).time_idx
    assert t.min() >= 1000  # the first file was evicted by FIFO and is never drawn again
    writer = TrajectoryStore(tmp_path, max_steps=30, fsync=False)  # another writer: seen after a refresh
    writer.add(make_traj(10, offset=50_000))
    writer.add(make_traj(10, offset=60_000))
    writer.add(make_traj(10, offset=70_000))
    sampler.refresh_interval = 0.0
    assert sampler.sample(64).time_idx.min() >= 50_000


def test_seeded_determinism(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    for T in (5, 17, 40):
        store.add(make_traj(T, offset=T * 100))
    a = WindowSampler(store, 8, seed=3).sample(10)
    b = WindowSampler(store, 8, seed=3).sample(10)
    c = WindowSampler(store, 8, seed=4).sample(10)
    assert torch.equal(a.time_idx, b.time_idx) and not torch.equal(a.time_idx, c.time_idx)


def test_batch_to_and_pin(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    store.add(make_traj(5))
    b = WindowSampler(store, 4).sample(2).to("cpu")
    assert isinstance(b, Batch) and b.observations["obs"].device.type == "cpu"


def test_bad_arguments(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    with pytest.raises(ValueError, match="context_len must be an int >= 1"):
        WindowSampler(store, 0)
    with pytest.raises(TypeError, match="relabel must be callable"):
        WindowSampler(store, 4, relabel=3)
    with pytest.raises(TypeError, match="needs a TrajectoryStore or a directory"):
        WindowSampler(42, 4)
    store.add(make_traj(5))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        WindowSampler(store, 4).sample(0)
    other = make_traj(5)
    other.observations["extra"] = other.observations.pop("reset")
    store.add(other)
    with pytest.raises(ValueError, match="one replay dir must hold one env's trajectories"):
        WindowSampler(store, 4).sample(64)


def test_dataset_with_dataloader_workers(tmp_path):
    store = TrajectoryStore(tmp_path, fsync=False)
    for k in range(8):
        store.add(make_traj(200, offset=1000 * k))
    ds = ReplayDataset(tmp_path, context_len=8, batch_size=4, seed=0)
    single = next(iter(DataLoader(ds, batch_size=None, num_workers=0)))
    assert isinstance(single, Batch) and single.mask.shape == (4, 8)
    _check_batch(single, 8)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    it = iter(loader)
    batches = [next(it) for _ in range(4)]  # workers alternate: 0, 1, 0, 1
    del it
    for b in batches:
        assert isinstance(b, Batch)
        _check_batch(b, 8)
    assert not torch.equal(batches[0].time_idx, batches[1].time_idx)  # distinct seeds per worker
    other_rank = next(iter(DataLoader(ReplayDataset(tmp_path, 8, 4, seed=0, rank=1), batch_size=None)))
    assert not torch.equal(other_rank.time_idx, single.time_idx)
