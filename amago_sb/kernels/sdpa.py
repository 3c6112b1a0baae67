"""Attention through ``torch.nn.functional.scaled_dot_product_attention``: the CPU path and the non-Triton fallback.

SDPA picks its own kernel (flash / memory-efficient / math on CUDA, a fused C++ kernel on CPU). With causal
attention and padding at the end, a valid query never sees a padded key, so padding only needs the padded
queries' outputs zeroed: SDPA runs unmasked with ``is_causal=True`` (flash-eligible), and the zeroing also
stops gradients from padded rows. Non-causal padding uses a boolean key mask; SDPA returns NaN for a query
with no allowed key, so key 0 is unmasked for such rows (length-0 sequences) and their outputs are zeroed. The entropy, which
SDPA cannot return, comes from ``reference.attention_entropy`` (no autograd, query-blocked, float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import allowed_mask, attention_entropy, zero_padding

__all__ = ["sdpa_attention", "sdpa_decode_attention"]


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None = None,
    causal: bool = True,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SDPA attention on validated inputs ``(B, H, L, D)``; returns out or ``(out, entropy float32 (B, H, L))``."""
    L = q.shape[-2]
    q, k, v = zero_padding(q, lengths), zero_padding(k, lengths), zero_padding(v, lengths)  # no NaN from padding
    if lengths is None or causal:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:
        allowed = allowed_mask(L, L, lengths, causal, q.device)
        assert allowed is not None  # lengths given
        mask = allowed.clone()  # (B, 1, L, L)
        mask[..., 0] = True  # no all-masked rows (length-0 sequences); those outputs are zeroed below
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if lengths is not None:
        q_ok = torch.arange(L, device=q.device)[None, :] < lengths[:, None]  # (B, L)
        out = torch.where(q_ok[:, None, :, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    if not return_entropy:
        return out
    return out, attention_entropy(q, k, lengths, causal)


def sdpa_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, zero_stale: bool = True
) -> torch.Tensor:
    """One query per sequence, q ``(B, H, D)``, caches ``(B, H, S, D)``, lengths ``(B,)`` -> ``(B, H, D)``;
    ``zero_stale``: see ``amago_sb.kernels.decode_attention``."""
    S = k_cache.shape[-2]
    if zero_stale:  # stale slots may hold anything
        k_cache, v_cache = zero_padding(k_cache, lengths), zero_padding(v_cache, lengths)
    key_ok = torch.arange(S, device=q.device)[None, :] < lengths[:, None]  # (B, S)
    mask = key_ok.clone()
    mask[:, 0] = True
    out = F.scaled_dot_product_attention(q[:, :, None, :], k_cache, v_cache, attn_mask=mask[:, None, None, :])
    return out[:, :, 0, :] * (lengths > 0)[:, None, None].to(out.dtype)
