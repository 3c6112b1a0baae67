"""The timestep encoder: one trajectory-form observation (a ``Dict``, see docs/ARCHITECTURE.md) -> one vector.

Per flattened key of the timestep space:

* vectors (float ``Box``, ``MultiBinary``, and the ``prev_action`` / ``prev_reward`` / ``time`` / ``reset`` inputs):
  flattened, concatenated and normalized by a running :class:`~amago_sb.networks.layers.InputNorm`;
* ``Discrete`` / ``MultiDiscrete`` observations: one-hot codes (concatenated, then normalized like the vectors);
* ``uint8`` images (``H x W x C`` or ``C x H x W``): a small CNN (Nature-DQN layout for images >= 36 px, 3x3 convs below);
* ``instruction`` (``MultiDiscrete((k, goal_len))`` token ids): token embeddings read by a one-layer GRU (AMAGO's
  ``TokenGoalEmb``).

Everything is concatenated and mapped by ``MLP(n_layers=2) -> LayerNorm`` to ``out_dim`` features.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from torch import nn

from amago_sb.networks.layers import MLP, InputNorm
from wrappers.spaces import shape_of
from wrappers.trajectory import flatten_keys

__all__ = ["TimestepEncoder", "unsupported_reason"]


def unsupported_reason(name: str, space: spaces.Space) -> str | None:
    """Why the leaf ``space`` under key ``name`` cannot be encoded (None if it can)."""
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return None
    return (f"observation key {name!r} has unsupported space {space}; flatten it (e.g. "
            "gymnasium.wrappers.FlattenObservation) into a Box, Discrete or MultiDiscrete space")


class _CNN(nn.Module):
    def __init__(self, space: spaces.Box, d_out: int) -> None:
        super().__init__()
        self.channels_first = is_image_space_channels_first(space)
        c, h, w = space.shape if self.channels_first else (space.shape[2], space.shape[0], space.shape[1])
        if min(h, w) >= 36:
            convs = [nn.Conv2d(c, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(), nn.Conv2d(64, 64, 3, 1)]
        else:
            convs = [nn.Conv2d(c, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1)]
        self.conv = nn.Sequential(*convs, nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.proj = nn.Sequential(nn.Linear(n, d_out), nn.LayerNorm(d_out))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``(N, *image_shape)`` uint8 -> ``(N, d_out)``."""
        x = img.float() / 255.0
        if not self.channels_first:
            x = x.permute(0, 3, 1, 2)
        return self.proj(self.conv(x))


class _InstructionEmbedding(nn.Module):
    """Token ids ``(N, k, goal_len)`` -> Embedding -> GRU over the ``k * goal_len`` tokens -> Linear -> LayerNorm."""

    def __init__(self, space: spaces.MultiDiscrete, d_token: int = 16, d_hidden: int = 64, d_out: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(int(np.max(space.nvec)), d_token)
        self.rnn = nn.GRU(d_token, d_hidden, batch_first=True)
        self.proj = nn.Sequential(nn.Linear(d_hidden, d_out), nn.LayerNorm(d_out))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, k, goal_len)`` -> ``(N, d_out)``. An instruction changes only when a goal is completed or an episode
        starts, so the N rows of a batch of windows hold few distinct instructions: the GRU reads each distinct one
        once per run of consecutive equal rows and the rows gather its output (same values and gradients; ~30x less
        GRU work on Crafter windows)."""
        flat = tokens.long().flatten(1)  # (N, k*goal_len)
        changed = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
        changed[1:] = (flat[1:] != flat[:-1]).any(-1)  # rows that start a run of one instruction
        run_of = torch.cumsum(changed, 0) - 1  # (N,) index of each row's run
        _, h = self.rnn(self.emb(flat[changed]))  # (1, runs, d_hidden)
        return self.proj(h[0])[run_of]


class TimestepEncoder(nn.Module):
    """Encode timestep dicts ``{key: (*batch, *shape)}`` into ``(*batch, out_dim)``.

    Args:
        observation_space: the trajectory-form ``Dict`` space.
        out_dim: output features.
        d_hidden: MLP hidden size.
        d_image: CNN output features per image key.
    """

    def __init__(self, observation_space: spaces.Dict, out_dim: int = 64, d_hidden: int = 128, d_image: int = 128) -> None:
        super().__init__()
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(f"TimestepEncoder expects the trajectory-form Dict space, got {observation_space}.")
        self.leaves = flatten_keys(observation_space)
        self.vector_keys: list[str] = []
        self.onehot_keys: list[tuple[str, np.ndarray, np.ndarray]] = []  # (key, sizes, first ids)
        self.images = nn.ModuleDict()
        self.instruction: _InstructionEmbedding | None = None
        d_vec, d_extra = 0, 0
        for name, space in self.leaves.items():
            reason = unsupported_reason(name, space)
            if reason is not None:
                raise ValueError(reason)
            if name == "instruction" and isinstance(space, spaces.MultiDiscrete):
                self.instruction = _InstructionEmbedding(space)
                d_extra += 32
            elif isinstance(space, spaces.Box) and is_image_space(space, check_channels=False):
                self.images[name.replace("/", "__")] = _CNN(space, d_image)
                d_extra += d_image
            elif isinstance(space, spaces.Discrete):
                self.onehot_keys.append((name, np.array([space.n]), np.array([space.start])))
                d_vec += int(space.n)
            elif isinstance(space, spaces.MultiDiscrete):
                self.onehot_keys.append((name, space.nvec.reshape(-1), np.asarray(space.start).reshape(-1)))
                d_vec += int(space.nvec.sum())
            else:
                self.vector_keys.append(name)
                d_vec += int(np.prod(shape_of(space)))
        self.norm = InputNorm(d_vec)
        self.mlp = MLP(d_vec + d_extra, d_hidden, out_dim, n_layers=2)
        self.out_norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def _vector(self, obs: dict[str, torch.Tensor], batch_shape: torch.Size) -> torch.Tensor:
        parts = []
        for name in self.vector_keys:
            parts.append(obs[name].reshape(*batch_shape, -1).float())
        for name, nvec, starts in self.onehot_keys:
            ids = obs[name].reshape(*batch_shape, -1).long()  # (*batch, n_ids)
            # ids count from the space's start; the clamp only touches padded (masked) rows, since acting inputs are
            # checked against the space (amago_sb.inputs) and stored ones came from the env. All one-hots of the key
            # in one scatter: id j sets column offset_j + id_j of a (*batch, sum(nvec)) block.
            n = torch.as_tensor(nvec, device=ids.device)
            local = torch.minimum((ids - torch.as_tensor(starts, device=ids.device)).clamp_min(0), n - 1)
            offsets = torch.cumsum(n, 0) - n
            block = torch.zeros(*batch_shape, int(n.sum()), device=ids.device)
            parts.append(block.scatter_(-1, local + offsets, 1.0))
        return torch.cat(parts, dim=-1)

    def forward(self, obs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """``obs``: flattened keys -> ``(*batch, *shape)``; ``mask`` ``(*batch)`` valid rows -> ``(*batch, out_dim)``."""
        first = self.leaves["reset"] if "reset" in self.leaves else None
        ref = obs["reset"] if first is not None else next(iter(obs.values()))
        batch_shape = ref.shape[: ref.dim() - len(shape_of(first))] if first is not None else ref.shape[:1]
        feats = [self.norm(self._vector(obs, batch_shape), mask)]
        for key, cnn in self.images.items():
            img = obs[key.replace("__", "/")]
            feats.append(cnn(img.reshape(-1, *img.shape[len(batch_shape):])).reshape(*batch_shape, -1))
        if self.instruction is not None:
            tok = obs["instruction"]
            feats.append(self.instruction(tok.reshape(-1, *tok.shape[len(batch_shape):])).reshape(*batch_shape, -1))
        return self.out_norm(self.mlp(torch.cat(feats, dim=-1)))
