"""Small building blocks: running input normalization, sigma-reparameterized linear layers, MLPs, ensemble linears.

Shapes use ``B`` (batch), ``L`` (sequence length), ``D`` (features), ``C`` (critic ensemble members).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InputNorm", "SigmaReparamLinear", "MLP", "EnsembleLinear", "activation"]


def activation(name: str) -> nn.Module:
    """Activation by name: ``"leaky_relu"`` (AMAGO's default everywhere), ``"relu"``, ``"gelu"``."""
    table = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "gelu": nn.GELU}
    if name not in table:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(table)}.")
    return table[name]()


def identity_sums(x: torch.Tensor) -> torch.Tensor:
    """The single-process ``reduce_sums`` hook of the running statistics (DDP swaps in an all-reduce)."""
    return x


class InputNorm(nn.Module):
    """Running mean/std normalization of input features (AMAGO's ``InputNorm``).

    Statistics are exponential moving averages with a bias-corrected step ``beta_t = beta / (1 - (1 - beta)^t)``
    and are updated only in ``train()`` mode, from the rows where ``mask`` is true (padding excluded).
    Features whose std is tiny (constant inputs such as one-hot flags that never change) are only centered.

    Args:
        dim: number of features ``D``.
        beta: EMA rate; 1e-4 as in AMAGO.
    """

    #: Hook on the batch sums ``(2D + 1,)`` before they update the EMA: identity here, an all-reduce in data-parallel
    #: training (``amago_sb.distributed``) so that every rank keeps identical statistics.
    reduce_sums = staticmethod(identity_sums)
    mu: torch.Tensor  # buffers (typed for the type checker)
    nu: torch.Tensor
    count: torch.Tensor

    def __init__(self, dim: int, beta: float = 1e-4) -> None:
        super().__init__()
        self.beta = beta
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("nu", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def sigma(self) -> torch.Tensor:
        """Running std ``(D,)``."""
        return (self.nu - self.mu**2).clamp_min(0).add(1e-5).sqrt().clamp(1e-3, 1e6)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Update the statistics with ``x`` ``(..., D)``; ``mask`` ``(...)`` bool selects valid rows."""
        flat = x.reshape(-1, x.shape[-1]).float()
        if mask is not None:
            flat = flat[mask.reshape(-1)]
        d = flat.shape[1]
        n = flat.new_full((1,), float(flat.shape[0]))
        sums = self.reduce_sums(torch.cat([flat.sum(0), (flat**2).sum(0), n]))  # (2D + 1,)
        total = float(sums[-1])
        if total == 0:
            return
        self.count += 1
        beta_t = self.beta / (1.0 - (1.0 - self.beta) ** self.count.item())
        self.mu.lerp_(sums[:d] / total, beta_t)
        self.nu.lerp_(sums[d:2 * d] / total, beta_t)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``x`` ``(..., D)``; in training mode first update the statistics."""
        if self.training:
            self.update(x, mask)
        sigma = self.sigma
        scale = torch.where(sigma > 0.01, sigma, torch.ones_like(sigma))
        return ((x - self.mu) / scale).clamp(-1e4, 1e4)


class SigmaReparamLinear(nn.Module):
    """Linear layer with sigma-reparameterized weight ``W_hat = gamma / sigma(W) * W`` (Zhai et al. 2023).

    ``sigma(W)`` (the spectral norm) is estimated by one power-iteration step per training forward pass, with the
    singular-vector estimates ``u``, ``v`` kept as buffers. ``gamma`` is a learned scalar initialized to 1. In eval
    mode the effective weight is cached until a parameter changes, so acting costs one plain matmul.
    """

    u: torch.Tensor  # buffers: power-iteration estimates of the top singular vectors
    v: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self.gamma = nn.Parameter(torch.ones(()))
        u = F.normalize(torch.randn(out_features), dim=0)
        v = F.normalize(torch.randn(in_features), dim=0)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        # start with a converged estimate so that the first forward pass has a sensible scale
        with torch.no_grad():
            for _ in range(10):
                self._power_step()
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @torch.no_grad()
    def _power_step(self) -> None:
        w = self.weight
        self.v.copy_(F.normalize(w.t() @ self.u, dim=0))
        self.u.copy_(F.normalize(w @ self.v, dim=0))

    def effective_weight(self) -> torch.Tensor:
        """``gamma / sigma * W`` ``(out, in)``; differentiable w.r.t. ``weight`` and ``gamma``."""
        if self.training:
            self._power_step()
        sigma = torch.dot(self.u, torch.mv(self.weight, self.v))  # u^T W v
        return self.weight * (self.gamma / sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., in)`` -> ``(..., out)``."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return F.linear(x, self.effective_weight(), self.bias)
        key = (self.weight._version, self.gamma._version, self.u._version, self.weight.data_ptr(), self.u.data_ptr())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.effective_weight())
        return F.linear(x, self._cache[1], self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, bias={self.bias is not None}"


class MLP(nn.Module):
    """``Linear(in, H) -> act -> [Linear(H, H) -> act] * (n_layers - 1) -> Linear(H, out)`` (AMAGO's ``ff.MLP``)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int = 2, act: str = "leaky_relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(n_layers):
            layers += [nn.Linear(d, d_hidden), activation(act)]
            d = d_hidden
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d_in)`` -> ``(..., d_out)``."""
        return self.net(x)


class EnsembleLinear(nn.Module):
    """``C`` independent linear layers in one batched matmul: ``(C, N, in)`` -> ``(C, N, out)``.

    ``shared(x)`` feeds one input ``(N, in)`` to every member with a single ``(N, in) @ (in, C * out)`` matmul.
    ``detach_params=True`` runs the layer with detached weights: used by the actor's ``-Q`` term so that the actor
    loss cannot train the critics (gradients still flow into the input, i.e. the action).
    """

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))

    def params(self, detach_params: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (C, in, out), bias (C, out))``, detached for ``detach_params=True``."""
        return (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        w, b = self.params(detach_params)
        return torch.baddbmm(b.unsqueeze(1), x, w)  # (C, N, out)

    def shared(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Same input for all members: ``(N, in)`` -> ``(C, N, out)``."""
        w, b = self.params(detach_params)
        C, d_in, d_out = w.shape
        y = torch.addmm(b.reshape(-1), x, w.permute(1, 0, 2).reshape(d_in, C * d_out))  # (N, C * out)
        return y.view(-1, C, d_out).transpose(0, 1)  # (C, N, out)
