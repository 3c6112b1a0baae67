"""The two extension points of the sequence model, as typed protocols: a trajectory encoder and its acting state.

A trajectory encoder turns timestep features into per-timestep features for the actor and critics, over a whole
training window at once (``forward``) and one step at a time when acting (``step``, carrying a context state per
env). :class:`~amago_sb.networks.TransformerTrajEncoder`, :class:`~amago_sb.networks.GRUTrajEncoder`,
:class:`~amago_sb.networks.FFTrajEncoder` and :class:`~amago_sb.networks.LRUTrajEncoder` implement it; a new one is
one class (see docs/ARCHITECTURE.md, "How to add an encoder"), chosen with
``AMAGO(policy_kwargs=dict(traj_encoder_class=MyEncoder, traj_encoder_kwargs={...}))``.

Constructor: ``cls(d_in, *, d_model, n_layers, n_heads, d_ff, context_len, dropout, normformer, **your_kwargs)``;
accept ``**_`` for the common arguments an encoder does not use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

__all__ = ["ContextState", "TrajEncoder"]


@runtime_checkable
class ContextState(Protocol):
    """Per-env acting context (a dataclass of tensors whose batch dimension indexes the envs)."""

    def reset(self, done: torch.Tensor) -> None:
        """Empty the context of the envs where ``done`` ``(B,)`` bool is true, in place."""
        ...

    def clone(self) -> ContextState:
        """An independent copy (to branch a rollout)."""
        ...


@runtime_checkable
class TrajEncoder(Protocol):
    """``forward``: ``(B, L, d_in)`` window features, ``time_idx`` ``(B, L)``, ``lengths`` ``(B,)`` valid rows (padding
    at the end) -> ``((B, L, out_dim), per-layer attention entropies (maybe empty))``. ``step``: ``(B, d_in)`` and the
    envs' state -> ``((B, out_dim), state)``; a valid row must never depend on later (padded) rows."""

    out_dim: int

    def __call__(self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None,
                 want_entropy: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None,
                want_entropy: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def init_state(self, batch: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> ContextState: ...

    def step(self, x: torch.Tensor, state: ContextState) -> tuple[torch.Tensor, ContextState]: ...
