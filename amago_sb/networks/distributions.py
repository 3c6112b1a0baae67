"""Action spaces -> actor output layout, policy distributions, and the action representation the critics see.

* ``Discrete(n)``: Categorical whose probabilities are clipped to [0.001, 0.99] and renormalized (normalizer
  detached, as in AMAGO) so that log-probabilities of replay actions stay finite. The clip acts on the values only:
  gradients are those of the unclipped softmax (straight-through). A plain clamp has zero gradient outside its range,
  so once an action's probability fell below 0.001 neither the actor's Q term nor filtered behaviour cloning could
  raise it again, however good the critics found it (seen on the passive T-maze: correct critics, a policy frozen on
  "wait"). The critic outputs Q for every action.
* ``MultiDiscrete(nvec)``: product of such Categoricals. The critic takes the concatenated one-hot action as input;
  the policy's action is fed straight-through (hard one-hot forward, probability gradients backward).
* ``Box``: tanh-squashed Gaussian in [-1, 1] (SAC-style), ``log_std`` squashed into [-5, 2], rescaled to the
  action bounds when acting; the critic takes the action in [-1, 1].

Shapes: ``...`` is any batch shape (e.g. ``(B, L, G)`` with one distribution per discount factor).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from wrappers.spaces import shape_of

__all__ = ["ActionSpec", "ClippedCategorical", "MultiCategorical", "TanhGaussian", "unsupported_action_reason"]


def unsupported_action_reason(space: spaces.Space) -> str | None:
    """Why AMAGO cannot act in ``space`` (None if it can)."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return None
    if isinstance(space, spaces.Box):
        if not np.all(np.isfinite(space.low)) or not np.all(np.isfinite(space.high)):
            return f"Box action space {space} must have finite bounds; rescale it (gymnasium.wrappers.RescaleAction)"
        return None
    return (f"unsupported action space {space}: AMAGO supports Discrete, MultiDiscrete and bounded Box actions "
            "(convert MultiBinary actions to MultiDiscrete([2] * n))")


class ClippedCategorical:
    """Categorical over the last dim of ``logits`` ``(..., n)`` with probabilities clipped to [0.001, 0.99]."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.log_softmax = logits.float().log_softmax(-1)  # (..., n), unclipped
        p = self.log_softmax.exp()
        clipped = p.clamp(1e-3, 0.99)
        clipped = clipped / clipped.sum(-1, keepdim=True)
        self.probs = p + (clipped - p).detach()  # (..., n): clipped values, softmax gradients

    def log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(...)`` int64 -> ``(...)``: log of the clipped probability, gradient of the unclipped log-softmax
        (``one_hot(a) - softmax``, which never vanishes for an improbable action)."""
        idx = a.long().unsqueeze(-1)
        exact = self.log_softmax.gather(-1, idx).squeeze(-1)
        clipped = self.probs.detach().gather(-1, idx).squeeze(-1).log()
        return exact + (clipped - exact).detach()

    def sample(self) -> torch.Tensor:
        flat = self.probs.detach().reshape(-1, self.probs.shape[-1])
        return torch.multinomial(flat, 1).reshape(self.probs.shape[:-1])

    def mode(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.probs.log()).sum(-1)


class MultiCategorical:
    """Independent :class:`ClippedCategorical` per sub-action; ``logits`` ``(..., sum(nvec))``."""

    def __init__(self, logits: torch.Tensor, nvec: list[int]) -> None:
        self.parts = [ClippedCategorical(x) for x in torch.split(logits, nvec, dim=-1)]
        self.nvec = nvec

    def log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(..., n_sub)`` -> ``(...)`` (sum over sub-actions)."""
        return torch.stack([d.log_prob(a[..., i]) for i, d in enumerate(self.parts)]).sum(0)

    def sample(self) -> torch.Tensor:
        return torch.stack([d.sample() for d in self.parts], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.stack([d.mode() for d in self.parts], dim=-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([d.entropy() for d in self.parts]).sum(0)

    def straight_through(self) -> torch.Tensor:
        """A sampled action as concatenated one-hots ``(..., sum(nvec))`` whose gradient is that of the probs."""
        outs = []
        for d in self.parts:
            hard = F.one_hot(d.sample(), d.probs.shape[-1]).to(d.probs.dtype)
            outs.append(hard + d.probs - d.probs.detach())
        return torch.cat(outs, dim=-1)


class TanhGaussian:
    """``a = tanh(mu + std * eps)`` with ``params`` ``(..., 2 * A)`` = (mu, raw log std)."""

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, params: torch.Tensor) -> None:
        mu, raw = params.float().chunk(2, dim=-1)
        self.mu = mu
        self.log_std = self.LOG_STD_MIN + 0.5 * (self.LOG_STD_MAX - self.LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
        self.std = self.log_std.exp()

    def rsample(self) -> torch.Tensor:
        return torch.tanh(self.mu + self.std * torch.randn_like(self.mu))

    def sample(self) -> torch.Tensor:
        return self.rsample().detach()

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mu)

    def log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(..., A)`` in [-1, 1] (clamped to +-0.995 as in AMAGO) -> ``(...)`` summed over action dims."""
        a = a.clamp(-0.995, 0.995)
        u = torch.atanh(a)
        normal = -0.5 * ((u - self.mu) / self.std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)
        return (normal - torch.log1p(-(a**2) + 1e-6)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.log_std.sum(-1)


class ActionSpec:
    """How an action space maps to actor outputs, distributions and critic inputs."""

    def __init__(self, space: spaces.Space) -> None:
        reason = unsupported_action_reason(space)
        if reason is not None:
            raise ValueError(reason)
        self.space = space
        self.start: torch.Tensor | None = None  # first id of integer actions (gymnasium's ``start``), when not 0
        if isinstance(space, spaces.Discrete):
            self.kind, self.n = "discrete", int(space.n)
            self.param_dim, self.critic_action_dim = self.n, 0
            if int(space.start) != 0:
                self.start = torch.tensor(int(space.start))
        elif isinstance(space, spaces.MultiDiscrete):
            self.kind = "multidiscrete"
            self.nvec = [int(n) for n in space.nvec.reshape(-1)]
            self.param_dim = self.critic_action_dim = int(sum(self.nvec))
            if np.any(space.start != 0):
                self.start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.long)
        else:
            self.kind = "box"
            assert isinstance(space, spaces.Box)
            self.shape: tuple[int, ...] = shape_of(space)
            self.dim = int(np.prod(self.shape))
            self.low = torch.as_tensor(space.low.reshape(-1), dtype=torch.float32)
            self.high = torch.as_tensor(space.high.reshape(-1), dtype=torch.float32)
            self.param_dim, self.critic_action_dim = 2 * self.dim, self.dim

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    def dist(self, params: torch.Tensor) -> ClippedCategorical | MultiCategorical | TanhGaussian:
        if self.kind == "discrete":
            return ClippedCategorical(params)
        if self.kind == "multidiscrete":
            return MultiCategorical(params, self.nvec)
        return TanhGaussian(params)

    def normalize(self, env_action: torch.Tensor) -> torch.Tensor:
        """Replay actions as the policy sees them: Box -> [-1, 1] ``(..., A)``; integer actions -> ids from 0."""
        if self.kind != "box":
            return env_action if self.start is None else env_action - self.start.to(env_action.device)
        low, high = self.low.to(env_action.device), self.high.to(env_action.device)
        flat = env_action.reshape(*env_action.shape[: env_action.dim() - len(self.shape)], self.dim).float()
        return (2.0 * (flat - low) / (high - low) - 1.0).clamp(-1.0, 1.0)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Policy actions ``(n, ...)`` -> env actions: Box rescaled from [-1, 1] to the bounds and reshaped; integer
        ids shifted by the space's ``start``."""
        if self.kind != "box":
            return action if self.start is None else action + self.start.numpy()
        low, high = self.low.numpy(), self.high.numpy()
        out = low + 0.5 * (np.clip(action, -1.0, 1.0) + 1.0) * (high - low)
        return out.reshape(action.shape[0], *self.shape).astype(self.space.dtype)
