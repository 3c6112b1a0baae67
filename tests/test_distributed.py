"""Data-parallel learner (``amago_sb.distributed``): 2 gloo ranks vs one process on the same windows, statistics
sync, bad input. Ranks are forked processes (no re-import), tiny networks, a few updates."""

from __future__ import annotations

import multiprocessing as mp
import re
import traceback

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import KVWriter, Logger

from amago_sb import AMAGO
from amago_sb.distributed import (
    DistributedLearner,
    _SyncedInputNorm,
    _SyncedPopArt,
    cleanup_distributed,
    init_distributed,
    rank_seed,
    sync_running_stats,
)
from amago_sb.networks import InputNorm, PopArt
from amago_sb.replay import Batch

# one critic and a one-critic TD target: no random critic subsets, so the two runs see the same randomness
TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=0, learning_starts=0, n_envs=2, num_critics=1,
            num_critics_td=1, lr_warmup_steps=2, learning_rate=3e-3,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
N_UPDATES = 4


class FixedBatches:
    """A sampler that returns prepared batches in order (same windows for the DDP and the single-process run)."""

    def __init__(self, batches: list[Batch], store=None) -> None:
        self.batches, self.i, self.store = batches, 0, store

    def sample(self, batch_size: int) -> Batch:
        b = self.batches[self.i]
        assert b.actions.shape[0] == batch_size
        self.i += 1
        return b


def _half(batch: Batch, rank: int, world: int) -> Batch:
    n = batch.actions.shape[0] // world
    s = slice(rank * n, (rank + 1) * n)
    return Batch({k: v[s] for k, v in batch.observations.items()}, batch.actions[s], batch.rewards[s],
                 batch.terminated[s], batch.mask[s], batch.time_idx[s])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved initial model and full-window batches drawn from a replay collected on TMazePassive."""
    tmp = tmp_path_factory.mktemp("ddp")
    model = AMAGO("Transformer", "TMazePassive-v0", seed=0, replay_dir=str(tmp / "replay"), **TINY)
    model.learn(200)
    rng_batches = []
    while len(rng_batches) < N_UPDATES:  # windows with all 8 rows valid: every rank holds the same number of steps
        b = model.sampler.sample(64)
        full = b.mask.all(1)
        if int(full.sum()) >= 8:
            idx = torch.nonzero(full).flatten()[:8]
            rng_batches.append(Batch({k: v[idx] for k, v in b.observations.items()}, b.actions[idx], b.rewards[idx],
                                     b.terminated[idx], b.mask[idx], b.time_idx[idx]))
    model.save(tmp / "init.zip")
    return tmp, rng_batches


def _rank_main(rank: int, world: int, tmp: str, batches: list[Batch], out: mp.Queue) -> None:
    try:
        torch.set_num_threads(1)
        ctx = init_distributed("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world)
        model = AMAGO.load(f"{tmp}/init.zip", device="cpu", replay_dir=f"{tmp}/replay")
        learner = DistributedLearner(model, ctx, seed=123, sampler=FixedBatches([_half(b, rank, world) for b in batches]))
        losses = []
        for _ in batches:
            loss = learner.update(learner.sampler.sample(8 // world)).loss
            torch.distributed.all_reduce(loss)
            losses.append(float(loss) / world)
        state = {k: v.numpy().copy() for k, v in model.policy.state_dict().items()}  # numpy: safe through a Queue
        cleanup_distributed(wait_for_peers=True)  # leave the gloo group together (a lone leaver can abort)
        out.put((rank, losses, state, None))
    except Exception:  # report instead of hanging the test
        out.put((rank, None, None, traceback.format_exc()))


def _run_ranks(world: int, tmp, batches):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, world, str(tmp), batches, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, losses, state, err = q.get(timeout=120)
        assert err is None, err
        results[rank] = (losses, state)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_two_gloo_ranks_match_one_process_on_the_same_windows(setup):
    tmp, batches = setup
    results = _run_ranks(2, tmp, batches)

    # reference: the agent's own single-process AMAGO.train on the concatenated windows
    ref = AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp / "replay"))
    ref.set_logger(Logger(None, []))
    ref.sampler = FixedBatches(batches)
    cfg = ref.loss_config
    ref_losses = []
    for _ in batches:
        ref.train(1, 8)
        v = ref.logger.name_to_value
        ref_losses.append(v["train/actor_loss"] + cfg.critic_coeff * v["train/critic_loss"])

    (loss0, state0), (loss1, state1) = results[0], results[1]
    assert loss0 == loss1  # the all-reduced mean loss, seen by both ranks
    np.testing.assert_allclose(loss0, ref_losses, rtol=1e-4, atol=1e-5)
    for k in state0:  # parameters, targets and running statistics are identical across ranks
        assert np.array_equal(state0[k], state1[k]), k
    ref_state = ref.policy.state_dict()
    moved = 0
    start = AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp / "replay")).policy.state_dict()
    for k, v in ref_state.items():  # ... and equal to the single process that saw all windows
        torch.testing.assert_close(torch.from_numpy(state0[k]), v, rtol=1e-4, atol=1e-5, msg=k)
        moved += int(not torch.equal(v, start[k]))
    assert moved > 10  # the updates changed the weights (the comparison is not vacuous)


def test_synced_statistics_equal_the_agents_modules_in_one_process():
    """Without a process group the synced modules must update exactly like InputNorm / PopArt (guards against drift)."""
    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 4) * 3 + 1, torch.rand(3, 5) > 0.3
    a, b = InputNorm(4), InputNorm(4)
    b.__class__ = _SyncedInputNorm
    y, ym = torch.randn(3, 5, 1, 2) * 4 - 2, (torch.rand(3, 5) > 0.2)[..., None, None]
    p, q = PopArt(2), PopArt(2)
    q.__class__ = _SyncedPopArt
    for _ in range(3):
        a.update(x, mask), b.update(x, mask)
        p.update_stats(y, ym), q.update_stats(y, ym)
    for m1, m2 in ((a, b), (p, q)):
        for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
            torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-6, msg=k)
    model_policy = torch.nn.Sequential(InputNorm(3), torch.nn.Sequential(PopArt(2)), torch.nn.Linear(2, 2))
    assert sync_running_stats(model_policy) == 2
    assert type(model_policy[0]) is _SyncedInputNorm and type(model_policy[1][0]) is _SyncedPopArt
    assert list(model_policy.state_dict()) == ["0.mu", "0.nu", "0.count", "1.0.mu", "1.0.nu", "1.0.w", "1.0.b", "1.0.count",
                                               "2.weight", "2.bias"]  # checkpoints keep the agent's keys


def test_one_rank_bf16_learner_logs_and_waits(setup, tmp_path):
    tmp, _ = setup
    model = AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp / "replay"))
    dumps = []

    class Capture(KVWriter):
        def write(self, key_values, key_excluded, step=0):
            dumps.append(dict(key_values))

    model.set_logger(Logger(None, [Capture()]))
    ctx = init_distributed("gloo", "cpu")
    try:
        assert (ctx.rank, ctx.world_size, ctx.device.type) == (0, 1, "cpu") and ctx.is_main
        learner = DistributedLearner(model, ctx, seed=1, bf16=True)
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
        summary = learner.learn(3, checkpoint_path=tmp_path / "ckpt" / "latest.zip", save_interval=2, log_interval=2,
                                learning_starts=10)
        assert summary["updates"] == 3 and model._n_updates == 3 and summary["skipped"] == 0
        assert any(not torch.equal(v, model.policy.state_dict()[k]) for k, v in before.items())
        assert len(dumps) == 2  # log points at updates 2 and 3
        assert np.isfinite(dumps[-1]["train/critic_loss"]) and dumps[-1]["time/updates_per_s"] > 0
        assert dumps[-1]["train/n_updates"] == 3 and dumps[-1]["dist/world_size"] == 1
        loaded = AMAGO.load(tmp_path / "ckpt" / "latest.zip", device="cpu", replay_dir=str(tmp_path / "r2"))
        assert loaded._n_updates == 3  # rank 0 saved the final state
        # an empty replay: the learner waits, then says what to do
        empty = DistributedLearner(AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp_path / "empty")), ctx,
                                   replay_dir=tmp_path / "empty")
        with pytest.raises(TimeoutError, match="Start collectors"):
            empty.wait_for_data(1, timeout_s=0.2, poll_s=0.05)
        with pytest.raises(ValueError, match="n_updates and log_interval must be >= 1"):
            learner.learn(0)
    finally:
        cleanup_distributed()


def test_bad_setup_is_rejected(setup):
    tmp, _ = setup
    with pytest.raises(ValueError, match="backend must be 'gloo'"):
        init_distributed("mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=re.escape("backend 'nccl' needs CUDA GPUs")):
            init_distributed("nccl")
    model = AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp / "replay"))
    with pytest.raises(RuntimeError, match="needs a process group"):
        DistributedLearner(model, None)
    assert rank_seed(0, 0) != rank_seed(0, 1) and rank_seed(3, 1) == rank_seed(3, 1)


def test_skip_path_is_the_same_under_ddp_and_in_one_process(setup):
    """A batch whose rewards overflow (1e38 x reward_multiplier = inf) among good ones: one process (AMAGO.train) and a
    one-rank DDP learner skip the same update and end with the same counters, logged means and weights."""
    tmp, batches = setup
    bad = Batch(batches[1].observations, batches[1].actions, torch.full_like(batches[1].rewards, 1e38),
                batches[1].terminated, batches[1].mask, batches[1].time_idx)
    seq = [batches[0], bad, batches[2], batches[3]]
    logged = []
    models = []
    for mode in ("single", "ddp"):
        model = AMAGO.load(tmp / "init.zip", device="cpu", replay_dir=str(tmp / "replay"), batch_size=8)
        dumps = []

        class Capture(KVWriter):
            def write(self, key_values, key_excluded, step=0, dumps=dumps):
                dumps.append(dict(key_values))

        model.set_logger(Logger(None, [Capture()]))
        if mode == "single":
            it = iter(seq)
            model._next_batch = lambda batch_size, it=it: next(it)
            model.train(len(seq), 8)
            model.logger.dump(model._n_updates)
        else:
            ctx = init_distributed("gloo", "cpu")
            try:
                learner = DistributedLearner(model, ctx, seed=1, sampler=FixedBatches(list(seq), store=model.replay))
                summary = learner.learn(len(seq), log_interval=len(seq), learning_starts=0)
                assert summary["skipped"] == 1 and summary["updates"] == len(seq)
            finally:
                cleanup_distributed()
        assert (model._n_updates, model._nonfinite_skips) == (3, 1), mode
        logged.append(dumps[-1])
        models.append(model)
    single, ddp = logged
    assert single["train/nonfinite_skips"] == ddp["train/nonfinite_skips"] == 1
    for key in ("train/critic_loss", "train/actor_loss", "train/n_updates"):
        assert np.isfinite(single[key]) and single[key] == pytest.approx(ddp[key], rel=1e-4, abs=1e-6), key
    for (k, v1), v2 in zip(models[0].policy.state_dict().items(), models[1].policy.state_dict().values()):
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-6, msg=k)
