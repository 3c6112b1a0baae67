"""Linear recurrent unit trajectory encoder (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences"): ``AMAGO("LRU", env)``.

Each layer is a diagonal complex linear recurrence with a stable, normalized parameterization, followed by a
nonlinear channel mixer:

    h_t = lambda * h_{t-1} + gamma * (B u_t)         lambda = exp(-exp(nu) + i exp(theta)),  |lambda| < 1
    y_t = Re(C h_t) + D * u_t                        gamma = sqrt(1 - |lambda|^2)

with ``u = LayerNorm(x)``, then ``x + Linear(GELU(y))`` (pre-norm residual block); ``n_layers`` blocks and a final
LayerNorm. Shapes: ``B`` batch, ``L`` window length, ``H = d_model`` features, ``N = state_dim`` complex states.

* **Training windows** (``forward``, ``(B, L, d_in)``): the recurrence is linear and time-invariant, so the states of
  a whole window are a prefix sum with decay, computed by a parallel scan in ``ceil(log2 L)`` vectorized steps
  (``h[t] += lambda^k h[t-k]`` for ``k = 1, 2, 4, ...``). Windows start from a zero state, as the GRU encoder's do;
  padded rows come last, so they never affect valid ones.
* **Acting** (``step``): one recurrence step per env and layer; the state is ``O(n_layers * N)`` per env whatever the
  episode length (the Transformer's KV cache grows with the context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

__all__ = ["LRUState", "LRUTrajEncoder"]


@dataclass
class LRUState:
    """Complex hidden states ``h`` ``(n_layers, B, N)`` of each env's recurrences."""

    h: torch.Tensor

    def reset(self, done: torch.Tensor) -> None:
        """Zero the states of the envs where ``done`` ``(B,)`` is true."""
        self.h = self.h * (~done).to(torch.float32)[None, :, None]

    def clone(self) -> LRUState:
        return LRUState(self.h.clone())


class _LRULayer(nn.Module):
    """One normalized diagonal complex recurrence ``(B, L, H) -> (B, L, H)`` (module docstring)."""

    def __init__(self, d_model: int, state_dim: int, r_min: float, r_max: float, max_phase: float) -> None:
        super().__init__()
        u1, u2 = torch.rand(state_dim), torch.rand(state_dim)
        # |lambda| uniform on the ring [r_min, r_max], phase uniform in [0, max_phase] (the paper's initialization)
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2))
        self.B_re = nn.Parameter(torch.randn(state_dim, d_model) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(state_dim, d_model) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, state_dim) / math.sqrt(state_dim))
        self.C_im = nn.Parameter(torch.randn(d_model, state_dim) / math.sqrt(state_dim))
        self.D = nn.Parameter(torch.randn(d_model))

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``lambda`` ``(N,)`` complex and the input map ``gamma * B`` ``(N, H)`` complex."""
        lam = torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))
        gamma = torch.sqrt(1.0 - lam.abs() ** 2)
        return lam, torch.complex(self.B_re, self.B_im) * gamma[:, None]

    def _out(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``Re(C h) + D u``: complex states ``(..., N)`` and inputs ``(..., H)`` -> ``(..., H)``."""
        return h.real @ self.C_re.T - h.imag @ self.C_im.T + self.D * u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        lam, bmat = self.coefficients()
        h = u.to(torch.complex64) @ bmat.T  # (B, L, N): gamma * B u_t
        L, k, lam_k = u.shape[1], 1, lam
        while k < L:  # parallel scan: after the step for k, h[t] sums the inputs of the last 2k steps with decay
            h = torch.cat([h[:, :k], h[:, k:] + lam_k * h[:, :-k]], dim=1)
            k, lam_k = 2 * k, lam_k * lam_k
        return self._out(h, u)

    def step(self, u: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` ``(B, H)``, ``h`` ``(B, N)`` -> ``(y (B, H), new h)``."""
        lam, bmat = self.coefficients()
        h = lam * h + u.to(torch.complex64) @ bmat.T
        return self._out(h, u), h


class _Block(nn.Module):
    def __init__(self, d_model: int, state_dim: int, dropout: float, **lru: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.lru = _LRULayer(d_model, state_dim, **lru)
        self.mix = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.lru(self.norm(x)))

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.lru.step(self.norm(x), h)
        return x + self.mix(y), h


class LRUTrajEncoder(nn.Module):
    """Stack of LRU blocks over the timestep features (module docstring).

    Args:
        d_in: timestep-encoder features.
        d_model: block width ``H``.
        n_layers: blocks.
        state_dim: complex states ``N`` per block (default ``d_model``).
        r_min, r_max, max_phase: initialization ring of the eigenvalues (defaults: 0.9, 0.999, pi / 10: the paper's
            long-range setting, memories from ~10 to ~1000 steps).
        dropout: in the channel mixers.
    """

    def __init__(self, d_in: int, *, d_model: int = 64, n_layers: int = 2, state_dim: int | None = None,
                 r_min: float = 0.9, r_max: float = 0.999, max_phase: float = math.pi / 10, dropout: float = 0.0,
                 **_: object) -> None:
        super().__init__()
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(f"LRU needs 0 <= r_min < r_max < 1 (eigenvalue radii), got r_min={r_min}, r_max={r_max}.")
        self.state_dim = int(state_dim or d_model)
        self.inp = nn.Linear(d_in, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, self.state_dim, dropout, r_min=r_min, r_max=r_max,
                                           max_phase=max_phase) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.n_layers, self.out_dim = n_layers, d_model

    def forward(
        self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None, want_entropy: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` ``(B, L, d_in)`` -> ``(B, L, d_model)`` (no attention, so no entropies)."""
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), []

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LRUState:
        return LRUState(torch.zeros(self.n_layers, batch, self.state_dim, dtype=torch.complex64, device=device))

    def step(self, x: torch.Tensor, state: LRUState) -> tuple[torch.Tensor, LRUState]:
        """``x`` ``(B, d_in)`` -> ``(B, d_model)``, advancing every env's states by one step."""
        h = self.inp(x)
        new = []
        for i, block in enumerate(self.blocks):
            h, hi = cast(_Block, block).step(h, state.h[i])
            new.append(hi)
        state.h = torch.stack(new)
        return self.norm(h), state
