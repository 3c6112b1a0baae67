"""Skip updates whose loss or gradient is not finite, and stop a run that keeps producing them.

One bad batch (an extreme reward, an overflow in a half-precision kernel) should cost one update, not the run; a
diverged run should stop with an error that names the update instead of training on NaNs for hours.

:class:`NonFiniteGuard` is used by ``AMAGO.train`` around every update:

1. ``snapshot()`` before the loss: copies the running statistics that the loss updates in its forward pass
   (PopArt's value statistics, input-normalization statistics), so that a skipped update leaves no trace in them;
2. ``update_ok(loss, grad_norm, ...)`` after ``backward`` + gradient clipping: if both are finite it returns True;
   otherwise it restores the statistics, drops the gradients and returns False (the caller skips
   ``optimizer.step()`` and the target update). It raises ``FloatingPointError`` naming the update and env step
   when the parameters themselves are no longer finite (nothing can recover) or after ``max_consecutive``
   skipped updates in a row.
"""

from __future__ import annotations

import torch
from torch import nn

from amago_sb.networks import PopArt
from amago_sb.networks.layers import InputNorm

__all__ = ["NonFiniteGuard"]

STAT_MODULES = (PopArt, InputNorm)


class NonFiniteGuard:
    """See the module docstring.

    Args:
        policy: the module trained (its ``PopArt`` / ``InputNorm`` buffers are snapshotted, its parameters checked).
        optimizer: its gradients are cleared on a skipped update.
        max_consecutive: skipped updates in a row after which training stops (>= 1).
    """

    def __init__(self, policy: nn.Module, optimizer: torch.optim.Optimizer, max_consecutive: int = 10) -> None:
        if not isinstance(max_consecutive, int) or isinstance(max_consecutive, bool) or max_consecutive < 1:
            raise ValueError(f"max_nonfinite_updates must be an int >= 1 (skipped updates in a row before training "
                             f"stops), got {max_consecutive!r}.")
        self.policy, self.optimizer, self.max_consecutive = policy, optimizer, max_consecutive
        self._stat_buffers = [b for m in policy.modules() if isinstance(m, STAT_MODULES) for b in m.buffers()]
        self._backup: list[torch.Tensor] = []
        self.streak = 0  # skipped updates in a row
        self.skips = 0  # skipped updates since this guard was made

    def snapshot(self) -> None:
        """Copy the running statistics (a few small tensors) before the loss updates them."""
        if not self._backup:
            self._backup = [b.detach().clone() for b in self._stat_buffers]
        else:
            for dst, src in zip(self._backup, self._stat_buffers):
                dst.copy_(src)

    def update_ok(self, loss: torch.Tensor, grad_norm: torch.Tensor | float, *, update: int, env_step: int) -> bool:
        """True if ``loss`` and ``grad_norm`` are finite; else undo the statistics, clear gradients, return False.

        Raises:
            FloatingPointError: parameters are non-finite, or ``max_consecutive`` updates in a row were skipped.
        """
        loss_ok = bool(torch.isfinite(loss))
        if loss_ok and bool(torch.isfinite(torch.as_tensor(grad_norm))):
            self.streak = 0
            return True
        for b, saved in zip(self._stat_buffers, self._backup):
            b.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        self.streak += 1
        self.skips += 1
        what = f"loss {loss.item()}" if not loss_ok else f"gradient norm {float(grad_norm)}"
        bad = [n for n, p in self.policy.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise FloatingPointError(
                f"AMAGO {what} at update {update} (env step {env_step}): parameters {bad[:3]} are no longer finite, so "
                "training stopped. Resume from the last checkpoint with a lower learning_rate or max_grad_norm, and check "
                "the env's rewards/observations for huge values (or reduce reward_multiplier).")
        if self.streak >= self.max_consecutive:
            raise FloatingPointError(
                f"AMAGO {what} at update {update} (env step {env_step}): {self.streak} updates in a row were not finite "
                f"(max_nonfinite_updates={self.max_consecutive}); training stopped. Lower learning_rate, check the env's "
                "rewards/observations for huge values, or reduce reward_multiplier.")
        return False
