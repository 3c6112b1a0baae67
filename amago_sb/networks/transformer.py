"""The stabilized causal Transformer trajectory encoder and its KV cache.

Block (pre-norm + NormFormer norms, AMAGO paper Sec. 4 / arXiv 2310.09971)::

    h = x + LN2(Attn(LN1(x)))                        # LN2: NormFormer post-attention norm
    y = h + FF2(LN4(act(FF1(LN3(h)))))               # LN4: NormFormer norm on the d_ff hidden

All four projections (qkv, out, FF1, FF2) are sigma-reparameterized, the activation is leaky ReLU, and each head's
output is multiplied by a learned scalar (head scaling). The input is ``Linear(d_in, d_model)`` plus a fixed
sinusoidal embedding of the *absolute* time index of the step in its (outer) episode, so a window cut from the middle
of an episode and the same steps seen while acting get the same positions (the same positions, not the same features
once the KV cache has wrapped: docs/agent.md, "Sliding KV cache"). Attention runs through
``amago_sb.kernels.attention`` (training) and ``amago_sb.kernels.decode_attention`` (acting: one new token per step).

KV cache (:class:`KVCache`): per layer ``k``, ``v`` of shape ``(B, H, S, Dh)`` with ``S = context_len``, a per-env count
of tokens seen since the last reset, and a ring-buffer write position. Because positions are baked into the tokens,
attention is invariant to the order of cached keys, so when an env's cache is full its oldest entry is simply
overwritten (a sliding window of ``context_len`` tokens) without moving memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from amago_sb.kernels import attention, decode_attention
from amago_sb.networks.layers import SigmaReparamLinear, activation

__all__ = ["TransformerTrajEncoder", "KVCache", "sinusoidal_embedding"]


def sinusoidal_embedding(time_idx: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin/cos embedding of integer time indices ``(...)`` -> ``(..., dim)`` float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=time_idx.device, dtype=torch.float32) / half)
    ang = time_idx.float()[..., None] * freqs  # (..., half)
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


@dataclass
class KVCache:
    """Per-env attention context for acting. ``k[i]``, ``v[i]``: ``(B, H, S, Dh)`` for layer ``i``.

    ``count``: ``(B,)`` int64 tokens seen since the env's last reset (also the absolute time index of the next
    token); ``lengths = min(count, S)`` valid cache entries; the next token is written at slot ``count % S``.
    Invariant: slots at or past ``lengths`` hold zeros (fresh caches are zero, ``reset`` zeroes the envs it empties),
    so decoding need not mask them again.
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    count: torch.Tensor

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def reset(self, done: torch.Tensor) -> None:
        """Empty the context of the envs where ``done`` ``(B,)`` bool is true (no memory is freed or moved); their slots
        are zeroed, so nothing of the old episode (a NaN included) can reach the new one."""
        idx = torch.nonzero(done).flatten()
        if len(idx):
            for cache in (*self.k, *self.v):
                cache.index_fill_(0, idx, 0.0)
        self.count = torch.where(done, torch.zeros_like(self.count), self.count)

    def clone(self) -> KVCache:
        return KVCache([k.clone() for k in self.k], [v.clone() for v in self.v], self.count.clone())


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, act: str, normformer: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = SigmaReparamLinear(d_model, 3 * d_model, bias=False)
        self.head_scale = nn.Parameter(torch.ones(n_heads))
        self.out = SigmaReparamLinear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model) if normformer else nn.Identity()
        self.ln3 = nn.LayerNorm(d_model)
        self.ff1 = SigmaReparamLinear(d_model, d_ff)
        self.act = activation(act)
        self.ln4 = nn.LayerNorm(d_ff) if normformer else nn.Identity()
        self.ff2 = SigmaReparamLinear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def _ff(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop(self.ff2(self.ln4(self.act(self.ff1(self.ln3(h))))))

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None, want_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, D = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)
        q, k, v = qkv[0], qkv[1], qkv[2]
        ent = None
        if want_entropy:
            a, ent = attention(q, k, v, lengths=lengths, causal=True, return_entropy=True)
        else:
            a = attention(q, k, v, lengths=lengths, causal=True)
        a = a * self.head_scale[None, :, None, None]  # (B, H, L, Dh)
        a = a.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        h = x + self.ln2(self.out(a))
        return self._ff(h), ent

    def step(self, x: torch.Tensor, cache: KVCache, layer: int, slot: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One new token per env: ``x`` ``(B, D)``; writes its key/value at ``slot`` ``(B,)`` of this layer's cache."""
        B, D = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, 3, self.n_heads, self.head_dim)  # (B, 3, H, Dh)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, H, Dh)
        rows = torch.arange(B, device=x.device)
        cache.k[layer][rows, :, slot] = k
        cache.v[layer][rows, :, slot] = v
        a = decode_attention(q, cache.k[layer], cache.v[layer], lengths, zero_stale=False)  # slots past lengths: zeros
        a = (a * self.head_scale[None, :, None]).reshape(B, D)
        h = x + self.ln2(self.out(a))
        return self._ff(h)


class TransformerTrajEncoder(nn.Module):
    """Causal Transformer over timestep embeddings.

    Args:
        d_in: timestep embedding size.
        d_model, n_layers, n_heads, d_ff: Transformer size (``d_model % n_heads == 0``).
        context_len: maximum tokens attended to (KV-cache capacity when acting).
        dropout: dropout on the input embedding and the feed-forward output.
        act: activation (``"leaky_relu"`` as in AMAGO).
        normformer: add the two NormFormer norms (LN2, LN4).
    """

    def __init__(
        self,
        d_in: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_ff: int | None = None,
        context_len: int = 64,
        dropout: float = 0.0,
        act: str = "leaky_relu",
        normformer: bool = True,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.head_dim = d_model // n_heads
        self.context_len = context_len
        self.inp = nn.Linear(d_in, d_model)
        self.drop = nn.Dropout(dropout)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff, dropout, act, normformer) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.out_dim = d_model

    def _embed(self, x: torch.Tensor, time_idx: torch.Tensor) -> torch.Tensor:
        return self.drop(self.inp(x) + sinusoidal_embedding(time_idx, self.d_model))

    def forward(
        self, x: torch.Tensor, time_idx: torch.Tensor, lengths: torch.Tensor | None = None, want_entropy: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode windows.

        Args:
            x: ``(B, L, d_in)`` timestep embeddings.
            time_idx: ``(B, L)`` int64 absolute step index of each row.
            lengths: ``(B,)`` valid rows per window (right padding), or None.
            want_entropy: also return each layer's mean attention entropy (nats, over valid queries and heads).

        Returns:
            ``(s, entropies)``: ``s`` ``(B, L, d_model)`` and a list of ``n_layers`` scalars (empty unless asked).
        """
        h = self._embed(x, time_idx)  # (B, L, D)
        ents: list[torch.Tensor] = []
        for blk in self.blocks:
            h, ent = blk(h, lengths, want_entropy)
            if ent is not None:
                if lengths is None:
                    ents.append(ent.float().mean())
                else:
                    valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]).float()  # (B, L)
                    ents.append(ent.float().mean(1).mul(valid).sum() / valid.sum().clamp_min(1))  # mean over heads
        return self.ln_f(h), ents

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> KVCache:
        """An empty KV cache for ``batch`` envs."""
        shape = (batch, self.n_heads, self.context_len, self.head_dim)
        return KVCache(
            [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.n_layers)],
            [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.n_layers)],
            torch.zeros(batch, dtype=torch.long, device=device),
        )

    def step(self, x: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Encode one new timestep per env with the cache (updated in place): ``x`` ``(B, d_in)`` -> ``(B, d_model)``."""
        slot = state.count % state.capacity  # (B,)
        lengths = (state.count + 1).clamp(max=state.capacity)  # (B,) entries valid after writing this token
        h = self._embed(x, state.count)  # (B, D)
        for i, blk in enumerate(self.blocks):
            h = cast(_Block, blk).step(h, state, i, slot, lengths)
        state.count = state.count + 1
        return self.ln_f(h), state
