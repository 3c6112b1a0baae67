"""Data-parallel AMAGO learner on ``torch.distributed`` (DDP) that trains from a shared replay directory.

Run it under ``torchrun`` through ``python -m zoo.learn`` (one process per GPU with NCCL, or per CPU slot with
``--backend gloo``), next to any number of ``python -m zoo.collect`` processes that write trajectories into the same
replay directory: AMAGO's asynchronous "learner only" mode (docs/scaling.md).

One update (:meth:`DistributedLearner.update`) on every rank, mirroring ``AMAGO.train``:

1. draw ``batch_size`` windows with the rank's own sampler (seed ``SeedSequence([seed, rank])``);
2. run the AMAGO loss through ``DistributedDataParallel`` (optionally under bf16 autocast on GPU);
3. ``backward``: DDP all-reduces (averages) the gradients, so every rank takes the same clipped optimizer step;
4. Polyak-update the target heads (identical on every rank, because the online weights are).

The running statistics that the networks update inside the forward pass (``InputNorm`` of the timestep encoder,
PopArt's target moments) are summed over ranks in that same forward pass (:func:`sync_running_stats`), so the
buffers stay identical too, and ``N`` ranks of ``B`` windows train exactly like one process on the ``N * B`` windows
(up to float rounding, when every rank's windows hold the same number of valid steps; random critic subsets aside).

Rank 0 writes checkpoints (atomic: temp file then ``os.replace``, so collectors never load a half-written zip) and
logs. Collectors report progress in small JSON files under ``<replay_dir>/collectors/`` (:func:`write_status`),
from which the learner knows how many env steps were collected (logging, optional update-to-data throttle).
"""

from __future__ import annotations

import datetime
import inspect
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from amago_sb.collector_status import collected_env_steps
from amago_sb.losses import amago_loss
from amago_sb.networks import InputNorm, PopArt
from amago_sb.replay import Batch, TrajectoryStore, WindowSampler
from amago_sb.update import StepResult, accumulate, gradient_step

__all__ = [
    "DistContext",
    "DistributedLearner",
    "init_distributed",
    "cleanup_distributed",
    "rank_seed",
    "sync_running_stats",
]

# ---------------------------------------------------------------------------------------------------- process group
@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that writes checkpoints and logs)."""
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(
    backend: str = "auto",
    device: str | torch.device = "auto",
    *,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    timeout_s: float = 1800.0,
) -> DistContext:
    """Join (or start) the process group and pick this rank's device.

    Under ``torchrun`` the rank, world size and rendezvous come from the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without them, a one-process group is started on a free
    local port, so the same code runs as a plain ``python -m zoo.learn``.

    Args:
        backend: ``"gloo"`` (CPU), ``"nccl"`` (CUDA GPUs, one per rank) or ``"auto"`` (nccl when CUDA is available).
        device: ``"auto"`` (``cuda:<local_rank>`` with NCCL, else CPU), or an explicit device.
        init_method, rank, world_size: explicit rendezvous (tests: ``file://...``); default ``env://``.
        timeout_s: collective timeout (a rank that died makes the others fail after this long instead of hanging).
    """
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPU), 'nccl' (GPUs) or 'auto', got {backend!r}.")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA GPUs, and none is visible; use --backend gloo on CPU.")
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}.")
    if init_method is None:
        if "MASTER_ADDR" not in os.environ and world_size == 1:
            init_method = f"tcp://127.0.0.1:{_free_port()}"
        else:
            init_method = "env://"
    if device == "auto":
        device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, backend, device)


def cleanup_distributed(wait_for_peers: bool = False) -> None:
    """Leave the process group (no-op if none).

    ``wait_for_peers``: first meet every rank at a barrier (use it on the normal exit path). Gloo can abort a process
    (``terminate called without an active exception``) that tears its group down while a peer still talks to it,
    e.g. rank 1 leaving while rank 0 writes the final model; on an error path a barrier could hang, so it is opt-in.
    """
    if not dist.is_initialized():
        return
    if wait_for_peers and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for ``rank`` derived from ``seed`` (distinct sampler streams per rank)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------------- statistics sync
def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


class _SyncedInputNorm(InputNorm):
    """``InputNorm`` whose batch moments are summed over all ranks (identical statistics everywhere)."""

    reduce_sums = staticmethod(_all_reduce_sum)


class _SyncedPopArt(PopArt):
    """``PopArt`` whose target moments are summed over all ranks (identical ``mu, nu, w, b`` everywhere)."""

    reduce_sums = staticmethod(_all_reduce_sum)


_SYNCED = {InputNorm: _SyncedInputNorm, PopArt: _SyncedPopArt}


def sync_running_stats(module: nn.Module) -> int:
    """Replace every ``InputNorm`` / ``PopArt`` inside ``module`` by a cross-rank synced copy; return how many.

    State-dict keys and values are unchanged (checkpoints stay plain AMAGO checkpoints). Each replaced module issues
    one ``all_reduce`` per training forward, so every rank must run the same forward passes (as DDP requires anyway).
    """
    replaced = 0
    for child in module.modules():
        cls = _SYNCED.get(type(child))
        if cls is not None:
            child.__class__ = cls  # same buffers, hyperparameters and hooks; only update() changes
            replaced += 1
    return replaced


# ---------------------------------------------------------------------------------------------------- the learner
class _LossModule(nn.Module):
    """``forward(batch)`` = the AMAGO loss of ``policy``: the module DDP wraps, so its forward drives DDP's hooks."""

    def __init__(self, policy: nn.Module, loss_config: Any) -> None:
        super().__init__()
        self.policy = policy
        self.loss_config = loss_config

    def forward(self, batch: Batch, want_entropy: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return amago_loss(self.policy, batch, self.loss_config, want_entropy=want_entropy)


class DistributedLearner:
    """Train an ``AMAGO`` model's policy data-parallel over the process group, from a replay directory.

    Build the model on every rank with the same hyperparameters (rank 0's weights and statistics are broadcast, so
    different initializations do not matter), then call :meth:`learn` on every rank.

    Args:
        model: an ``amago_sb.AMAGO`` on ``ctx.device``; its ``batch_size`` is the per-rank batch.
        ctx: from :func:`init_distributed`.
        replay_dir: directory to sample from (default: ``model.replay_dir``); opened read-only.
        seed: rank ``r`` samples windows with ``rank_seed(seed, r)`` and seeds torch with it too.
        bf16: run the loss under ``torch.autocast(dtype=bfloat16)`` (GPUs with bf16 support; allowed on CPU).
        find_unused_parameters: DDP option, only for custom policies whose loss leaves parameters without gradient.
        sampler: a ready sampler with ``sample(batch_size) -> Batch`` (default: a ``WindowSampler`` on ``replay_dir``).
    """

    def __init__(
        self,
        model: Any,
        ctx: DistContext,
        *,
        replay_dir: str | os.PathLike | None = None,
        seed: int = 0,
        bf16: bool = False,
        find_unused_parameters: bool = False,
        sampler: Any = None,
    ) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DistributedLearner needs a process group: call amago_sb.distributed.init_distributed() "
                               "first (zoo.learn does), or run under torchrun.")
        if model.device != ctx.device:
            raise ValueError(f"the model is on {model.device} but this rank's device is {ctx.device}; build the model "
                             "with device=ctx.device.")
        self.model, self.ctx, self.bf16 = model, ctx, bool(bf16)
        self.stop_requested = False  # set by a signal handler: the job stops at the next log point
        policy = model.policy
        sync_running_stats(policy)
        with torch.no_grad():  # rank 0's weights, targets and statistics everywhere (DDP only syncs part of this)
            for t in policy.state_dict().values():
                dist.broadcast(t, src=0)
        torch.manual_seed(rank_seed(seed, ctx.rank))  # critic subsets and policy samples differ per rank
        if sampler is None:
            directory = Path(replay_dir if replay_dir is not None else model.replay_dir)
            relabel = None
            if model.relabel:
                import wrappers

                relabel = wrappers.relabel
            store = TrajectoryStore(directory, read_only=True)
            sampler = WindowSampler(store, model.context_len, relabel=relabel, seed=rank_seed(seed, ctx.rank),
                                    padded_sampling=getattr(model, "padded_sampling", "none"),
                                    cache_bytes=getattr(model, "sampler_cache_bytes", 1 << 30))
            model.replay, model.sampler = store, sampler  # replay/* logs then describe the shared directory
        self.sampler = sampler
        self.replay_dir = Path(replay_dir if replay_dir is not None else model.replay_dir)
        self.params = policy.trainable_parameters()
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # every rank keeps identical buffers (synced statistics), so DDP need not broadcast them each forward
        new_kw = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # renamed in torch 2.13
        sync_kw: dict[str, Any] = {"forward_sync_buffers": False} if new_kw else {"broadcast_buffers": False}
        self.ddp = DistributedDataParallel(_LossModule(policy, model.loss_config), device_ids=device_ids,
                                           find_unused_parameters=find_unused_parameters, gradient_as_bucket_view=True,
                                           **sync_kw)
        from amago_sb.nonfinite import NonFiniteGuard

        self.guard = NonFiniteGuard(policy, policy.optimizer, getattr(model, "max_nonfinite_updates", 10))

    # ------------------------------------------------------------------ one update
    def update(self, batch: Batch, want_entropy: bool = False) -> StepResult:
        """One data-parallel update on this rank's ``batch`` (``amago_sb.update.gradient_step`` through the DDP
        module); the skip decision is taken on the all-reduced gradient norm, so every rank skips or steps together."""
        model = self.model
        model.policy.set_training_mode(True)
        batch = batch.to(self.ctx.device, non_blocking=True)
        result = gradient_step(model, self.ddp, batch, self.guard, self.params, want_entropy=want_entropy,
                               check_loss=False, autocast=(self.ctx.device.type, self.bf16))
        self.grad_norm, self.lr = result.grad_norm, result.lr
        return result

    # ------------------------------------------------------------------ the loop
    def wait_for_data(self, min_steps: int, timeout_s: float = 600.0, poll_s: float = 1.0) -> None:
        """Block until the replay holds ``min_steps`` transitions (at least one trajectory) on every rank."""
        store, deadline = self.sampler.store, time.monotonic() + timeout_s
        while True:
            store.refresh()
            if store.num_trajectories > 0 and store.num_steps >= min_steps:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"The replay {store.directory} holds {store.num_steps} transitions after "
                                   f"{timeout_s:.0f} s; the learner waits for {min_steps}. Start collectors "
                                   f"(python -m zoo.collect --replay-dir {store.directory} ...), lower learning_starts, "
                                   "or raise --wait-timeout.")
            time.sleep(poll_s)
        dist.barrier()

    def _throttle(self, max_update_ratio: float, poll_s: float) -> None:
        """Sleep while updates exceed ``max_update_ratio`` x collected env steps (collector status files)."""
        while not self.stop_requested:
            if self.model._n_updates < max_update_ratio * collected_env_steps(self.replay_dir):
                return
            time.sleep(poll_s)

    def _reduce_stats(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = sorted(sums)  # the same on every rank: they skip the same updates
        if not keys:
            return {}
        flat = torch.cat([sums[k].detach().float().reshape(-1) for k in keys])
        _all_reduce_sum(flat)
        flat /= self.ctx.world_size
        out, i = {}, 0
        for k in keys:
            n = sums[k].numel()
            out[k] = flat[i:i + n].reshape(sums[k].shape)
            i += n
        return out

    def _stop_everywhere(self, max_time_s: float | None, start: float) -> bool:
        stop = self.stop_requested or (max_time_s is not None and time.monotonic() - start >= max_time_s)
        flag = torch.tensor([1.0 if stop else 0.0])
        if self.ctx.backend == "nccl":
            flag = flag.to(self.ctx.device)
        return bool(_all_reduce_sum(flag).item() > 0)

    def save(self, path: str | os.PathLike) -> Path | None:
        """Rank 0: write a checkpoint atomically, with ``num_timesteps`` = env steps collected so far (collectors
        continue their exploration schedule from it). Other ranks: nothing."""
        if not self.ctx.is_main:
            return None
        self.model.num_timesteps = max(self.model.num_timesteps, collected_env_steps(self.replay_dir))
        self.model.save(path)  # atomic (amago_sb.checkpoint): collectors never see a partial zip
        return Path(path)

    def learn(
        self,
        n_updates: int,
        *,
        checkpoint_path: str | os.PathLike | None = None,
        save_interval: int = 100,
        log_interval: int = 50,
        learning_starts: int | None = None,
        max_update_ratio: float | None = None,
        max_time_s: float | None = None,
        wait_timeout_s: float = 600.0,
        poll_s: float = 1.0,
    ) -> dict[str, float]:
        """Run ``n_updates`` updates (fewer if stopped by ``max_time_s`` or :attr:`stop_requested`) on every rank.

        Rank 0 writes ``checkpoint_path`` before the first update (collectors can start acting), every
        ``save_interval`` updates and at the end, and logs through ``model.logger`` every ``log_interval`` updates
        (statistics averaged over ranks). ``learning_starts`` (default ``model.learning_starts``): stored transitions
        to wait for. ``max_update_ratio``: at most this many updates per collected env step. Returns a summary.
        """
        if n_updates < 1 or log_interval < 1:
            raise ValueError(f"n_updates and log_interval must be >= 1, got {n_updates} and {log_interval}.")
        model = self.model
        if checkpoint_path is not None:
            self.save(checkpoint_path)
        self.wait_for_data(model.learning_starts if learning_starts is None else learning_starts, wait_timeout_s, poll_s)
        start = time.monotonic()
        window_start, done, applied = start, 0, 0
        sums: dict[str, torch.Tensor] = {}
        while done < n_updates:
            if max_update_ratio is not None and max_update_ratio > 0:
                self._throttle(max_update_ratio, poll_s)
            model._current_progress_remaining = 1.0 - done / n_updates
            log_now = (done + 1) % log_interval == 0 or done + 1 == n_updates
            applied += accumulate(sums, self.update(self.sampler.sample(model.batch_size), want_entropy=log_now))
            done += 1
            if checkpoint_path is not None and save_interval > 0 and done % save_interval == 0:
                self.save(checkpoint_path)
            if log_now:
                n_log = (done - 1) % log_interval + 1  # updates tried in this window (for the rates)
                self._log(self._reduce_stats(sums), applied, n_log, time.monotonic() - window_start)
                sums, applied, window_start = {}, 0, time.monotonic()
                if self._stop_everywhere(max_time_s, start):
                    break
        wall = time.monotonic() - start
        if checkpoint_path is not None:
            self.save(checkpoint_path)
        return {"updates": float(done), "wall_s": wall, "updates_per_s": done / max(wall, 1e-9),
                "skipped": float(self.guard.skips)}

    def _log(self, sums: dict[str, torch.Tensor], applied: int, n: int, seconds: float) -> None:
        if not self.ctx.is_main:
            return
        model = self.model
        model._record_train_stats(sums, applied, float(self.grad_norm), self.lr)  # means over the applied updates
        log = model.logger.record
        log("time/updates_per_s", n / max(seconds, 1e-9))
        log("time/windows_per_s", n * model.batch_size * self.ctx.world_size / max(seconds, 1e-9))
        log("time/env_steps_collected", collected_env_steps(self.replay_dir))
        log("dist/world_size", self.ctx.world_size, exclude="tensorboard")
        model.logger.dump(step=model._n_updates)
