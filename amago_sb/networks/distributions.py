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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from wrappers.spaces import shape_of

__all__ = ["ActionSpec", "BOX_CRITIC_CLAMP", "BoxActions", "ClippedCategorical", "DiscreteActions", "MultiCategorical",
           "MultiDiscreteActions", "TanhGaussian", "unsupported_action_reason"]


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

    def rsample_with_log_prob(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized sample ``(..., A)`` and its log density ``(...)``, computed from the pre-tanh value
        (stable at the border, where ``atanh`` of the squashed action is not)."""
        u = self.mu + self.std * torch.randn_like(self.mu)
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log(1 - tanh(u)^2)
        return torch.tanh(u), (self._normal_log_density(u) - log_det).sum(-1)

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mu)

    def log_prob(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(..., A)`` in [-1, 1] (clamped to +-0.995 as in AMAGO) -> ``(...)`` summed over action dims."""
        a = a.clamp(-0.995, 0.995)
        return (self._normal_log_density(torch.atanh(a)) - torch.log1p(-(a**2) + 1e-6)).sum(-1)

    def _normal_log_density(self, u: torch.Tensor) -> torch.Tensor:
        """Per-dimension log density of the pre-tanh Gaussian at ``u`` ``(..., A)``."""
        return -0.5 * ((u - self.mu) / self.std) ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)

    def entropy(self) -> torch.Tensor:
        return self.log_std.sum(-1)


#: Box actions enter the critics clamped to +-BOX_CRITIC_CLAMP (the original's guard: past it the ``-Q`` gradient is zero,
#: so the actor cannot be pushed to the border of the action space, where tanh saturates and learning stalls).
BOX_CRITIC_CLAMP = 0.999


class ActionSpec:
    """How an action space maps to actor outputs, distributions, critic inputs and exploration noise.

    ``ActionSpec(space)`` returns the class of the space's kind: :class:`DiscreteActions`, :class:`MultiDiscreteActions`
    or :class:`BoxActions`; code that differs per kind lives in these classes, not in ``if kind`` tests elsewhere.
    ``discrete`` (critics output Q for every action instead of taking the action as input) is the one distinction
    the loss's math makes itself.

    Attributes:
        param_dim: actor outputs per discount head; critic_action_dim: width of the critic's action input (0 when
        the critic outputs Q per action).
    """

    kind: str = ""
    discrete: bool = False
    param_dim: int
    critic_action_dim: int

    def __new__(cls, space: spaces.Space | None = None) -> ActionSpec:
        if cls is ActionSpec and space is not None:  # dispatch to the class of the space's kind (copies pass no space)
            reason = unsupported_action_reason(space)
            if reason is not None:
                raise ValueError(reason)
            kind = (DiscreteActions if isinstance(space, spaces.Discrete)
                    else MultiDiscreteActions if isinstance(space, spaces.MultiDiscrete) else BoxActions)
            return super().__new__(kind)
        return super().__new__(cls)

    def __init__(self, space: spaces.Space) -> None:
        self.space = space

    def dist(self, params: torch.Tensor) -> ClippedCategorical | MultiCategorical | TanhGaussian:
        """The policy distribution(s) from actor outputs ``(..., param_dim)``."""
        raise NotImplementedError

    def normalize(self, env_action: torch.Tensor) -> torch.Tensor:
        """Replay actions (env units) as the policy sees them: Box -> [-1, 1] ``(..., A)``; ids counted from 0."""
        raise NotImplementedError

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Policy actions ``(n, ...)`` -> env actions."""
        raise NotImplementedError

    def critic_input(self, a: torch.Tensor) -> torch.Tensor:
        """Actions as the critics take them (only for ``discrete=False``)."""
        raise NotImplementedError

    def differentiable_action(self, pi: Any) -> torch.Tensor:
        """An action of ``pi`` through which ``-Q`` has a gradient w.r.t. the policy (only for ``discrete=False``)."""
        raise NotImplementedError

    def critic_input_scale(self, d_features: int) -> float:
        """Factor on the critic's action input (1: unscaled)."""
        return 1.0

    def explore(self, actions: np.ndarray, eps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy copy of policy actions ``(n_envs, ...)`` at per-env levels ``eps`` ``(n_envs,)``."""
        raise NotImplementedError


class _IntegerActions(ActionSpec):
    start: torch.Tensor | None = None  # first id (gymnasium's ``start``), when not 0

    def normalize(self, env_action: torch.Tensor) -> torch.Tensor:
        return env_action if self.start is None else env_action - self.start.to(env_action.device)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return action if self.start is None else action + self.start.numpy()

    def _random_ids(self, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def explore(self, actions: np.ndarray, eps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy: with probability ``eps`` a uniformly random action replaces the policy's."""
        out = actions.copy()
        swap = rng.random(len(eps)) < eps
        if swap.any():
            out[swap] = self._random_ids(int(swap.sum()), rng)
        return out


class DiscreteActions(_IntegerActions):
    """``Discrete(n)``: clipped Categorical; the critics output Q for each of the ``n`` actions."""

    kind, discrete = "discrete", True

    def __init__(self, space: spaces.Space) -> None:
        super().__init__(space)
        assert isinstance(space, spaces.Discrete)
        self.n = int(space.n)
        self.param_dim, self.critic_action_dim = self.n, 0
        if int(space.start) != 0:
            self.start = torch.tensor(int(space.start))

    def dist(self, params: torch.Tensor) -> ClippedCategorical:
        return ClippedCategorical(params)

    def _random_ids(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.n, size=k)


class MultiDiscreteActions(_IntegerActions):
    """``MultiDiscrete(nvec)``: product of clipped Categoricals; the critics take concatenated one-hots."""

    kind = "multidiscrete"

    def __init__(self, space: spaces.Space) -> None:
        super().__init__(space)
        assert isinstance(space, spaces.MultiDiscrete)
        self.nvec = [int(n) for n in space.nvec.reshape(-1)]
        self.param_dim = self.critic_action_dim = int(sum(self.nvec))
        if np.any(space.start != 0):
            self.start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.long)

    def dist(self, params: torch.Tensor) -> MultiCategorical:
        return MultiCategorical(params, self.nvec)

    def critic_input(self, a: torch.Tensor) -> torch.Tensor:
        """Integer ids -> concatenated one-hots; one-hot (straight-through) inputs unchanged."""
        if a.is_floating_point():
            return a
        return torch.cat([F.one_hot(a[..., i].long(), n).float() for i, n in enumerate(self.nvec)], dim=-1)

    def differentiable_action(self, pi: Any) -> torch.Tensor:
        return pi.straight_through()

    def _random_ids(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, n, size=k) for n in self.nvec], axis=-1)


class BoxActions(ActionSpec):
    """Bounded ``Box``: tanh-Gaussian in [-1, 1], rescaled to the bounds when acting; Gaussian exploration noise."""

    kind = "box"

    def __init__(self, space: spaces.Space) -> None:
        super().__init__(space)
        assert isinstance(space, spaces.Box)
        self.shape: tuple[int, ...] = shape_of(space)
        self.dim = int(np.prod(self.shape))
        self.low = torch.as_tensor(space.low.reshape(-1), dtype=torch.float32)
        self.high = torch.as_tensor(space.high.reshape(-1), dtype=torch.float32)
        self.param_dim, self.critic_action_dim = 2 * self.dim, self.dim

    def dist(self, params: torch.Tensor) -> TanhGaussian:
        return TanhGaussian(params)

    def normalize(self, env_action: torch.Tensor) -> torch.Tensor:
        low, high = self.low.to(env_action.device), self.high.to(env_action.device)
        flat = env_action.reshape(*env_action.shape[: env_action.dim() - len(self.shape)], self.dim).float()
        return (2.0 * (flat - low) / (high - low) - 1.0).clamp(-1.0, 1.0)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> the bounds, reshaped to the space's shape."""
        low, high = self.low.numpy(), self.high.numpy()
        out = low + 0.5 * (np.clip(action, -1.0, 1.0) + 1.0) * (high - low)
        assert self.space.dtype is not None
        return out.reshape(action.shape[0], *self.shape).astype(self.space.dtype)

    def critic_input(self, a: torch.Tensor) -> torch.Tensor:
        """Clamped to ``+-BOX_CRITIC_CLAMP`` (see there)."""
        return a.clamp(-BOX_CRITIC_CLAMP, BOX_CRITIC_CLAMP)

    def differentiable_action(self, pi: Any) -> torch.Tensor:
        return pi.rsample()

    def critic_input_scale(self, d_features: int) -> float:
        """sqrt(D / A): the A action inputs weigh as much as the D unit-variance features (else the critic can
        ignore the action)."""
        return math.sqrt(d_features / self.critic_action_dim)

    def explore(self, actions: np.ndarray, eps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``a + eps * N(0, 1)``, clipped to [-1, 1]."""
        noise = rng.standard_normal(actions.shape).astype(actions.dtype)
        return np.clip(actions + eps.reshape(-1, *([1] * (actions.ndim - 1))) * noise, -1.0, 1.0)
