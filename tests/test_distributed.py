"""Data-parallel learner (``amago_sb.distributed``): 2 gloo ranks vs one process on the same windows, statistics
sync, bad input. Ranks are forked processes (no re-import), tiny networks, a few updates."""

from __future__ import annotations

import multiprocessing as mp
import re
import traceback

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger

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
            loss, _ = learner.update(learner.sampler.sample(8 // world))
            torch.distributed.all_reduce(loss)
            losses.append(float(loss) / world)
        state = {k: v.numpy().copy() for k, v in model.policy.state_dict().items()}  # numpy: safe through a Queue
        cleanup_distributed()
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
