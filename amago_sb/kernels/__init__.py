"""Attention for the trajectory Transformer: Triton flash kernels on CUDA, SDPA on CPU, a plain reference.

``attention(q, k, v, lengths=None, causal=True, return_entropy=False)``
    Self-attention over one padded batch of sequences. q, k, v: ``(B, H, L, D)`` of one float dtype on one
    device, any strides. ``lengths``: ``(B,)`` integers in ``[0, L]``, valid steps per sequence with the
    padding at the end (None: all valid). Keys past a length are not attended; queries past it give zero
    output and zero entropy, never NaN, and no gradient. Scores are scaled by ``1 / sqrt(D)``.
    Returns ``out (B, H, L, D)``, or ``(out, entropy)`` with the per-query attention entropy ``(B, H, L)`` in
    nats, float32. Differentiable in q, k, v; the entropy is a monitoring signal and carries no gradient
    (except under the ``reference`` backend).
``decode_attention(q, k_cache, v_cache, lengths, num_splits=None)``
    One new query per sequence against a KV cache (acting). q ``(B, H, D)``; caches ``(B, H, S, D)``;
    ``lengths (B,)`` valid cache entries, the new token's key/value already written. Returns ``(B, H, D)``
    (zeros where a length is 0). ``num_splits`` sets the Triton flash-decoding split of the key axis.

Backends (``dispatch``): Triton on CUDA, SDPA elsewhere; force one with ``with attention_backend("sdpa"):``
or ``AMAGO_ATTENTION=triton|sdpa|reference``. ``resolve_backend(q)`` says which one a call would use.

>>> import torch
>>> from amago_sb.kernels import attention
>>> q = k = v = torch.randn(2, 4, 8, 16)
>>> out, ent = attention(q, k, v, lengths=torch.tensor([8, 3]), return_entropy=True)
>>> out.shape, ent.shape, float(out[1, :, 3:].abs().sum())
(torch.Size([2, 4, 8, 16]), torch.Size([2, 4, 8]), 0.0)
"""

from __future__ import annotations

import torch

from .checks import check_attention_inputs, check_decode_inputs
from .dispatch import BACKENDS, attention_backend, requested_backend, resolve_backend, triton_available
from .reference import attention_entropy, attention_reference, decode_attention_reference
from .sdpa import sdpa_attention, sdpa_decode_attention

__all__ = [
    "BACKENDS",
    "attention",
    "attention_backend",
    "attention_entropy",
    "attention_reference",
    "decode_attention",
    "decode_attention_reference",
    "requested_backend",
    "resolve_backend",
    "triton_available",
]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None = None,
    causal: bool = True,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Masked multi-head attention, ``(B, H, L, D)`` in and out; see the module docstring for the contract."""
    lens = check_attention_inputs(q, k, v, lengths)
    backend = resolve_backend(q)
    if backend == "triton":
        from .triton_attention import triton_attention

        return triton_attention(q, k, v, lens, bool(causal), bool(return_entropy))
    if backend == "sdpa":
        return sdpa_attention(q, k, v, lens, bool(causal), bool(return_entropy))
    result = attention_reference(q, k, v, lens, bool(causal), bool(return_entropy))
    if return_entropy:
        out, ent = result
        return out, ent.float()
    return result


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    num_splits: int | None = None,
    zero_stale: bool = True,
) -> torch.Tensor:
    """One query per sequence against a KV cache: ``(B, H, D)``; see the module docstring for the contract.

    ``zero_stale``: zero the cache slots at or past ``lengths`` first, so that whatever they hold (NaN included) cannot
    reach the output. A caller whose caches keep those slots zero (``networks.KVCache``) passes False and saves the
    copy of both caches per call (the Triton kernel never reads them, so it ignores the flag).
    """
    lens = check_decode_inputs(q, k_cache, v_cache, lengths)
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise ValueError(f"num_splits must be a positive int or None, got {num_splits!r}")
    backend = resolve_backend(q)
    if backend == "triton":
        from .triton_decode import triton_decode_attention

        return triton_decode_attention(q, k_cache, v_cache, lens, num_splits)
    if backend == "sdpa":
        return sdpa_decode_attention(q, k_cache, v_cache, lens, zero_stale)
    return decode_attention_reference(q, k_cache, v_cache, lens, zero_stale)
