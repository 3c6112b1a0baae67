"""Actor and critic-ensemble heads with one output per discount factor, and PopArt value normalization.

Shapes: ``B`` batch, ``L`` sequence, ``D`` trajectory-encoder features, ``G`` discount factors, ``C`` critics,
``A`` discrete actions (or actor parameters per gamma).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amago_sb.networks.distributions import ActionSpec
from amago_sb.networks.layers import MLP, EnsembleLinear, identity_sums

__all__ = ["Actor", "CriticEnsemble", "PopArt", "polyak_update"]


class Actor(nn.Module):
    """``MLP(D -> G * param_dim)``: one action distribution per gamma. ``forward`` returns ``(..., G, param_dim)``."""

    def __init__(self, d_in: int, spec: ActionSpec, n_gammas: int, d_hidden: int = 128, n_layers: int = 2) -> None:
        super().__init__()
        self.spec, self.n_gammas = spec, n_gammas
        self.net = MLP(d_in, d_hidden, n_gammas * spec.param_dim, n_layers=n_layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s).unflatten(-1, (self.n_gammas, self.spec.param_dim))


class CriticEnsemble(nn.Module):
    """``C`` critics evaluated by batched einsum layers; outputs are raw (before PopArt's ``w, b``).

    * discrete actions: ``Q(s)`` for every action, ``forward(s (..., D)) -> (..., C, G, A)``;
    * other actions: the action and the discount are inputs, ``forward(s (..., D), a (..., G, A_in)) -> (..., C, G)``
      where ``a[..., g, :]`` is the action evaluated under gamma ``g`` (the policy's head ``g`` picks its own).
    """

    gamma_feat: torch.Tensor  # buffer (Box / MultiDiscrete actions): the discount feature (G, 1)

    def __init__(self, d_in: int, spec: ActionSpec, gammas: torch.Tensor, n_critics: int = 4, d_hidden: int = 128) -> None:
        super().__init__()
        self.spec, self.n_critics, self.n_gammas = spec, n_critics, len(gammas)
        if spec.discrete:
            d_inp, d_out = d_in, self.n_gammas * spec.param_dim
        else:
            d_inp, d_out = d_in + spec.critic_action_dim + 1, 1
            # the discount enters as a feature: -log(1 - gamma) / 5 spreads 0.1 ... 0.9995 over ~[0, 1.5]
            self.register_buffer("gamma_feat", (-torch.log1p(-gammas.float()) / 5.0)[:, None])  # (G, 1)
            # Box actions are scaled by sqrt(D / A) so that the A action inputs weigh as much as the D unit-variance
            # state features in the first layer. Unscaled (1 of 65 inputs on Pendulum), the critics learned Q nearly
            # flat in the action, and the actor drifted to a saturated tanh (mu -4, std 4) where no gradient is left.
            self.action_scale = spec.critic_input_scale(d_in)
        self.l1 = EnsembleLinear(n_critics, d_inp, d_hidden)
        self.l2 = EnsembleLinear(n_critics, d_hidden, d_hidden)
        self.l3 = EnsembleLinear(n_critics, d_hidden, d_out)

    def _hidden(self, h1: torch.Tensor, detach_params: bool) -> torch.Tensor:
        """First-layer pre-activations ``(C, N, H)`` -> outputs ``(C, N, d_out)``."""
        h = F.leaky_relu(h1)
        h = F.leaky_relu(self.l2(h, detach_params))  # (C, N, H)
        return self.l3(h, detach_params)  # (C, N, d_out)

    def forward(self, s: torch.Tensor, a: torch.Tensor | None = None, detach_params: bool = False) -> torch.Tensor:
        lead = s.shape[:-1]
        C = self.n_critics
        if self.spec.discrete:
            h1 = self.l1.shared(s.reshape(-1, s.shape[-1]), detach_params)  # (C, N, H)
            q = self._hidden(h1, detach_params)  # (C, N, G * A)
            return q.transpose(0, 1).reshape(*lead, C, self.n_gammas, self.spec.param_dim)  # (..., C, G, A)
        if a is None:
            raise ValueError("CriticEnsemble needs the action for non-Discrete action spaces.")
        G, D = self.n_gammas, s.shape[-1]
        # The first layer on [s, a, gamma] is factored: W [s; a; g] + b = (W_s s + b) + W_ag [a; g]. The state part
        # is computed once per timestep instead of once per (timestep, gamma): G times less work than concatenating
        # the inputs, and no (N * G, D + A + 1) copy. Same parameters (and checkpoints) as the concatenated layer.
        w, bias = self.l1.params(detach_params)  # (C, D + A_in + 1, H), (C, H)
        H, n = w.shape[-1], s[..., 0].numel()
        w_s = w[:, :D].permute(1, 0, 2).reshape(D, C * H)
        h_s = torch.addmm(bias.reshape(-1), s.reshape(n, D), w_s).view(n, C, H).transpose(0, 1)  # (C, n, H)
        ag = torch.cat([a * self.action_scale, self.gamma_feat.expand(*lead, G, 1)], dim=-1)  # (..., G, A_in + 1)
        h_ag = torch.bmm(ag.reshape(1, n * G, -1).expand(C, n * G, -1), w[:, D:])  # (C, n * G, H)
        h1 = (h_ag.view(C, n, G, H) + h_s.unsqueeze(2)).view(C, n * G, H)  # (C, n * G, H)
        q = self._hidden(h1, detach_params)  # (C, n * G, 1)
        return q.reshape(C, *lead, G).movedim(0, -2)  # (..., C, G)


class PopArt(nn.Module):
    """Per-gamma value normalization (van Hasselt et al. 2016) as AMAGO uses it.

    Keeps running ``mu``, ``nu`` (second moment) of the TD targets per gamma with a bias-corrected EMA, and an affine
    ``w, b`` (buffers, not trained) applied to raw critic outputs: ``normalized(q) = w * q + b``,
    ``denormalized(q) = sigma * (w * q + b) + mu``. Each stats update rescales ``w, b`` so denormalized outputs are
    preserved. All tensors here have gamma as the last dim: ``(..., G)``.
    """

    #: Hook on the batch sums ``(3G,)``: identity here, an all-reduce in data-parallel training (``amago_sb.distributed``).
    reduce_sums = staticmethod(identity_sums)
    mu: torch.Tensor  # buffers (typed for the type checker)
    nu: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    count: torch.Tensor

    def __init__(self, n_gammas: int, beta: float = 5e-4, init_nu: float = 100.0) -> None:
        super().__init__()
        self.beta = beta
        self.register_buffer("mu", torch.zeros(n_gammas))
        self.register_buffer("nu", torch.full((n_gammas,), init_nu))
        self.register_buffer("w", torch.ones(n_gammas))
        self.register_buffer("b", torch.zeros(n_gammas))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def sigma(self) -> torch.Tensor:
        return (self.nu - self.mu**2).clamp_min(0).sqrt().clamp(1e-4, 1e6)

    def normalized(self, q: torch.Tensor) -> torch.Tensor:
        return self.w * q + self.b

    def denormalized(self, q: torch.Tensor) -> torch.Tensor:
        return self.sigma * (self.w * q + self.b) + self.mu

    def normalize_target(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mu) / self.sigma

    @torch.no_grad()
    def update_stats(self, y: torch.Tensor, mask: torch.Tensor) -> None:
        """``y`` ``(..., G)`` targets, ``mask`` broadcastable to ``y`` (valid entries)."""
        y = y.float()
        m = mask.expand_as(y).float()
        G = y.shape[-1]
        sums = self.reduce_sums(torch.cat([(t * m).flatten(0, -2).sum(0) for t in (y, y**2, torch.ones_like(y))]))  # (3G,)
        n = sums[2 * G:].clamp_min(1.0)
        mean, sq = sums[:G] / n, sums[G:2 * G] / n
        self.count += 1
        # bias-corrected step, counted from 2 as in the original: the first update blends the batch with the initial
        # statistics (beta_t ~ 1/2) instead of replacing them, so one early batch cannot set the scale alone
        beta_t = self.beta / (1.0 - (1.0 - self.beta) ** (self.count.item() + 1))
        old_mu, old_sigma = self.mu.clone(), self.sigma
        self.mu.lerp_(mean, beta_t)
        self.nu.lerp_(sq, beta_t)
        sigma = self.sigma
        self.w.mul_(old_sigma / sigma)
        self.b.copy_((old_sigma * self.b + old_mu - self.mu) / sigma)


def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * online`` over parameters (buffers copied)."""
    with torch.no_grad():
        tp: list[torch.Tensor] = list(target.parameters())
        op: list[torch.Tensor] = list(online.parameters())
        torch._foreach_lerp_(tp, op, tau)
        for tb, ob in zip(target.buffers(), online.buffers()):
            tb.copy_(ob)

