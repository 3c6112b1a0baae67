"""GRU and feed-forward (no memory) trajectory encoders with the same interface as the Transformer.

Interface shared by all trajectory encoders::

    s, entropies = enc(x (B, L, d_in), time_idx (B, L), lengths (B,) | None, want_entropy)   # s: (B, L, out_dim)
    state = enc.init_state(batch, device)
    s_t, state = enc.step(x_t (B, d_in), state)                                                # s_t: (B, out_dim)
    state.reset(done (B,) bool)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from amago_sb.networks.layers import activation

__all__ = ["GRUTrajEncoder", "FFTrajEncoder", "GRUState", "NoState"]


@dataclass
class GRUState:
    """Hidden state ``h`` ``(n_layers, B, d_hidden)`` of each env's GRU."""

    h: torch.Tensor

    def reset(self, done: torch.Tensor) -> None:
        self.h = self.h * (~done).to(self.h.dtype)[None, :, None]

    def clone(self) -> GRUState:
        return GRUState(self.h.clone())


@dataclass
class NoState:
    """The feed-forward encoder has no memory; kept so that ``predict`` returns a state like the others."""

    batch: int

    def reset(self, done: torch.Tensor) -> None:
        return None

    def clone(self) -> NoState:
        return NoState(self.batch)


class GRUTrajEncoder(nn.Module):
    """``nn.GRU`` -> Linear -> LayerNorm (AMAGO's ``GRUTrajEncoder``). Windows start from a zero hidden state."""

    def __init__(self, d_in: int, *, d_model: int = 64, n_layers: int = 2, **_: object) -> None:
        super().__init__()
        self.gru = nn.GRU(d_in, d_model, num_layers=n_layers, batch_first=True)
        self.proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.n_layers, self.d_model, self.out_dim = n_layers, d_model, d_model

    def forward(
        self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None, want_entropy: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` ``(B, L, d_in)`` -> ``(B, L, d_model)``; padded rows come last so they never affect valid ones."""
        out, _ = self.gru(x)  # (B, L, d_model)
        return self.norm(self.proj(out)), []

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> GRUState:
        return GRUState(torch.zeros(self.n_layers, batch, self.d_model, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: GRUState) -> tuple[torch.Tensor, GRUState]:
        """``x`` ``(B, d_in)`` -> ``(B, d_model)``."""
        out, h = self.gru(x[:, None], state.h)  # (B, 1, d_model)
        state.h = h
        return self.norm(self.proj(out[:, 0])), state


class FFTrajEncoder(nn.Module):
    """No memory: ``Linear + act -> residual FF block -> Linear -> LayerNorm`` on each timestep alone (the ablation)."""

    def __init__(self, d_in: int, *, d_model: int = 64, act: str = "leaky_relu", **_: object) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(d_in, d_model), activation(act))
        self.ff = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 4 * d_model), activation(act),
                                nn.Linear(4 * d_model, d_model))
        self.out = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.ff(h)
        return self.norm(self.out(h))

    def forward(
        self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None, want_entropy: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` ``(B, L, d_in)`` -> ``(B, L, d_model)``."""
        return self._encode(x), []

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> NoState:
        return NoState(batch)

    def step(self, x: torch.Tensor, state: NoState) -> tuple[torch.Tensor, NoState]:
        return self._encode(x), state
