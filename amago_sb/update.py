"""One gradient step of AMAGO, shared by ``AMAGO.train`` (one process) and ``DistributedLearner.update`` (DDP).

A step: learning rate = schedule x linear warmup over ``lr_warmup_steps`` updates; snapshot the running statistics
(:class:`~amago_sb.nonfinite.NonFiniteGuard`); loss; backward; global-norm clip; skip the step if the loss or the
gradient norm is not finite (statistics restored, gradients dropped, ``model._nonfinite_skips`` counted); else
optimizer step, Polyak update of the targets and ``model._n_updates += 1``.

The backward always runs, also for a non-finite loss: under DDP every rank must join the gradient all-reduce, and the
decision is then taken on the all-reduced gradient norm, which is the same on every rank (a NaN anywhere makes it
NaN), so all ranks skip or step together. One process takes the same decision, with the loss checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from stable_baselines3.common.utils import update_learning_rate

from amago_sb.nonfinite import NonFiniteGuard
from amago_sb.replay.sampler import Batch

__all__ = ["StepResult", "accumulate", "gradient_step", "warmup_lr"]

LossFn = Callable[[Batch, bool], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class StepResult:
    """What one :func:`gradient_step` did: ``applied`` (False: skipped as non-finite), the detached loss and
    statistics, the clipped-before gradient norm and the learning rate used."""

    applied: bool
    loss: torch.Tensor
    stats: dict[str, torch.Tensor]
    grad_norm: torch.Tensor
    lr: float


def warmup_lr(model: Any) -> float:
    """The learning rate of the next update: the schedule at the current progress times the linear warmup."""
    warm = min(1.0, (model._n_updates + 1) / max(model.lr_warmup_steps, 1))
    return float(model.lr_schedule(model._current_progress_remaining)) * warm


def gradient_step(model: Any, loss_fn: LossFn, batch: Batch, guard: NonFiniteGuard, params: list[torch.nn.Parameter],
                  *, want_entropy: bool = False, check_loss: bool = True,
                  autocast: tuple[str, bool] | None = None) -> StepResult:
    """One update of ``model`` (an ``AMAGO``) on ``batch`` (already on the device); see the module docstring.

    Args:
        loss_fn: ``(batch, want_entropy) -> (loss, stats)``: ``amago_loss`` on the policy, or the DDP-wrapped module.
        guard: the non-finite guard of ``model.policy``.
        params: the parameters whose gradient norm is clipped.
        check_loss: also decide on this process's loss (False under DDP, where only the all-reduced gradient is the
            same on every rank).
        autocast: ``(device_type, enabled)`` for bfloat16 autocast of the loss.

    Raises:
        FloatingPointError: from the guard (parameters not finite, or too many skipped updates in a row).
    """
    policy = model.policy
    lr = warmup_lr(model)
    update_learning_rate(policy.optimizer, lr)
    guard.snapshot()  # PopArt / input-norm statistics, restored if this update is skipped
    if autocast is not None:
        with torch.autocast(autocast[0], dtype=torch.bfloat16, enabled=autocast[1]):
            loss, stats = loss_fn(batch, want_entropy)
    else:
        loss, stats = loss_fn(batch, want_entropy)
    policy.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, model.max_grad_norm, foreach=True)
    decided_loss = loss.detach() if check_loss else torch.zeros(())
    if not guard.update_ok(decided_loss, grad_norm, update=model._n_updates + 1, env_step=model.num_timesteps):
        model._nonfinite_skips = getattr(model, "_nonfinite_skips", 0) + 1
        return StepResult(False, loss.detach(), stats, grad_norm.detach(), lr)
    policy.optimizer.step()
    policy.update_targets(model.tau)
    model._n_updates += 1
    return StepResult(True, loss.detach(), stats, grad_norm.detach(), lr)


def accumulate(sums: dict[str, torch.Tensor], result: StepResult) -> int:
    """Add an applied step's statistics to ``sums``; returns 1 if it was applied, else 0 (skipped steps are not
    logged, so that the averages are over the updates that happened)."""
    if not result.applied:
        return 0
    for k, v in result.stats.items():
        sums[k] = sums[k] + v if k in sums else v.clone()
    return 1
