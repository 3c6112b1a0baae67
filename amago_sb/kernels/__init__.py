"""Attention entry points used by the Transformer (interim SDPA-only version; the Triton kernels replace the CUDA path).

``attention(q, k, v, lengths=None, causal=True, return_entropy=False)``
    q, k, v: (B, H, L, D). lengths: (B,) int, valid keys/queries per sequence (padding at the end).
    Returns out (B, H, L, D) and, if asked, entropy (B, H, L) of each query's attention distribution.
``decode_attention(q, k_cache, v_cache, lengths)``
    q: (B, H, D) one new query per sequence; caches (B, H, S, D); lengths (B,) valid cache entries (including
    the new token's key/value already written). Returns (B, H, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attention", "decode_attention"]


def _mask(L: int, S: int, lengths: torch.Tensor | None, causal: bool, device) -> torch.Tensor | None:
    mask = None
    if causal:
        mask = torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L)[None, None]
    if lengths is not None:
        key_ok = torch.arange(S, device=device)[None, :] < lengths[:, None]  # (B, S)
        key_ok = key_ok[:, None, None, :]
        mask = key_ok if mask is None else mask & key_ok
    return mask


def attention(q, k, v, lengths=None, causal=True, return_entropy=False):
    L, S = q.shape[-2], k.shape[-2]
    mask = _mask(L, S, lengths, causal, q.device)
    if mask is not None and lengths is not None:
        # rows with no valid key (queries past a sequence's length) attend to key 0 to avoid NaN; zeroed below
        mask = mask.clone()
        mask[..., 0] = True
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if lengths is not None:
        q_ok = (torch.arange(L, device=q.device)[None, :] < lengths[:, None])[:, None, :, None]
        out = out * q_ok
    if not return_entropy:
        return out
    with torch.no_grad():
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        p = scores.softmax(-1)
        ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        if lengths is not None:
            ent = ent * q_ok[..., 0]
    return out, ent.to(q.dtype)


def decode_attention(q, k_cache, v_cache, lengths):
    S = k_cache.shape[-2]
    key_ok = (torch.arange(S, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q[:, :, None, :], k_cache, v_cache, attn_mask=key_ok)
    return out[:, :, 0, :]
