"""Plain-PyTorch attention: the reference the kernels are tested against, and the entropy fallback.

Conventions shared by every backend (see ``amago_sb.kernels.attention``):

* ``q, k, v``: ``(B, H, L, D)``; scores are ``q @ k^T / sqrt(D)``.
* ``lengths``: ``(B,)`` integers in ``[0, L]``; sequence ``b`` holds ``lengths[b]`` valid steps followed by
  padding. Keys at or past the length are never attended; queries at or past it produce zeros (output and
  entropy), never NaN, and receive / send no gradient.
* ``causal``: query ``i`` attends keys ``j <= i``.
* Entropy is in nats: ``H_i = -sum_j p_ij log p_ij`` over the keys query ``i`` attends.
"""

from __future__ import annotations

import torch

__all__ = ["attention_reference", "attention_entropy", "decode_attention_reference", "allowed_mask", "zero_padding"]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x`` ``(B, H, S, D)`` with the rows at or past ``lengths[b]`` set to 0 (``where``, so NaN there is gone too).

    Masking a score does not stop a NaN: ``0 * NaN`` is NaN in ``p @ v``, and a NaN key makes its whole score row NaN
    before any mask applies. Padded / stale slots are therefore zeroed before they enter a product.
    """
    if lengths is None:
        return x
    ok = torch.arange(x.shape[-2], device=x.device)[None, :] < lengths[:, None]  # (B, S)
    return torch.where(ok[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def allowed_mask(L: int, S: int, lengths: torch.Tensor | None, causal: bool, device: torch.device) -> torch.Tensor | None:
    """Boolean mask of attended (query, key) pairs, broadcastable to ``(B, 1, L, S)``; None when all are allowed.

    Causal masking is aligned so that the last query sees the last key (``j <= i + S - L``).
    """
    mask = None
    if causal:
        mask = torch.ones(L, S, dtype=torch.bool, device=device).tril(S - L)[None, None]  # (1, 1, L, S)
    if lengths is not None:
        key_ok = (torch.arange(S, device=device)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
        mask = key_ok if mask is None else mask & key_ok
    return mask


def _query_ok(L: int, lengths: torch.Tensor, device: torch.device) -> torch.Tensor:
    return (torch.arange(L, device=device)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, L)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None = None,
    causal: bool = True,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Materialized-softmax attention in the inputs' dtype; differentiable (entropy too).

    Args:
        q, k, v: ``(B, H, L, D)``.
        lengths: ``(B,)`` valid steps per sequence, or None (all valid).
        causal: mask keys after the query.
        return_entropy: also return the attention entropy ``(B, H, L)`` in nats.

    Returns:
        ``out (B, H, L, D)`` or ``(out, entropy)``.
    """
    L, S = q.shape[-2], k.shape[-2]
    q, k, v = zero_padding(q, lengths), zero_padding(k, lengths), zero_padding(v, lengths)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, L, S)
    mask = allowed_mask(L, S, lengths, causal, q.device)
    if mask is not None:
        # rows without any allowed key get a uniform softmax over zeros that the mask then removes: no NaN
        scores = scores.masked_fill(~mask, float("-inf"))
        row_ok = mask.any(-1, keepdim=True)  # (B|1, 1, L, 1)
        scores = torch.where(row_ok, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    p = scores.softmax(-1)
    if mask is not None:
        p = p * mask
    out = p @ v  # (B, H, L, D)
    if lengths is not None:
        q_ok = _query_ok(L, lengths, q.device)
        out = out * q_ok[..., None]
    if not return_entropy:
        return out
    ent = -torch.special.xlogy(p, p).sum(-1)  # (B, H, L)
    if lengths is not None:
        ent = ent * q_ok
    return out, ent


@torch.no_grad()
def attention_entropy(
    q: torch.Tensor,
    k: torch.Tensor,
    lengths: torch.Tensor | None = None,
    causal: bool = True,
    block: int | None = None,
) -> torch.Tensor:
    """Attention entropy ``(B, H, L)`` in nats, without autograd, ``block`` queries at a time in float32.

    This is the entropy path of the SDPA backend: SDPA does not expose its softmax, so the scores are
    recomputed here. Peak extra memory is ``B * H * block * S`` floats instead of the full ``L x S`` matrix
    (default block: about 2**18 scores per block on CPU, to stay in cache, and 2**26 on GPUs),
    and nothing is kept for backward. It costs about one more ``q @ k^T`` (a third of the forward FLOPs) plus
    a few elementwise passes. Masked scores are set to -1e30 (finite, so ``p * log p`` is 0 there, not NaN);
    with causal attention and end padding, a valid query never sees a padded key, so only the causal mask
    (one ``L x S`` bias fused into the matmul) is applied and padded queries are zeroed at the end.
    """
    B, H, L, D = q.shape
    S = k.shape[-2]
    if block is None:
        budget = 2**18 if q.device.type == "cpu" else 2**26
        block = min(L, max(8, budget // max(B * H * S, 1)))
    if block < 1:
        raise ValueError(f"block must be a positive number of queries, got {block!r}")
    q, k = zero_padding(q, lengths), zero_padding(k, lengths)
    qf = q.reshape(B * H, L, D).float()  # (BH, L, D)
    kt = k.reshape(B * H, S, D).float().transpose(1, 2)  # (BH, D, S)
    bias = None
    if causal:
        causal_mask = allowed_mask(L, S, None, True, q.device)
        assert causal_mask is not None
        bias = torch.zeros(L, S, device=q.device).masked_fill_(~causal_mask[0, 0], -1e30)
    key_bad = None
    if lengths is not None and not causal:
        key_bad = (torch.arange(S, device=q.device)[None, :] >= lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)
    ent = torch.empty(B * H, L, dtype=torch.float32, device=q.device)
    for i in range(0, L, block):
        j = min(i + block, L)
        if bias is not None:
            s = torch.baddbmm(bias[i:j], qf[:, i:j], kt, alpha=D**-0.5)  # (BH, b, S)
        else:
            s = torch.bmm(qf[:, i:j], kt).mul_(D**-0.5)
        if key_bad is not None:
            s = s.view(B, H, j - i, S).masked_fill_(key_bad, -1e30).view(B * H, j - i, S)
        # softmax and log_softmax separately: torch's exp of far-out-of-range inputs (-1e30) takes a slow path
        ent[:, i:j] = -torch.linalg.vecdot(torch.softmax(s, -1), torch.log_softmax(s, -1))
    ent = ent.view(B, H, L)
    if lengths is not None:
        ent = ent * _query_ok(L, lengths, q.device)
    return ent


def decode_attention_reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, zero_stale: bool = True
) -> torch.Tensor:
    """One query per sequence against a KV cache. q ``(B, H, D)``, caches ``(B, H, S, D)``, lengths ``(B,)``.

    Returns ``(B, H, D)``: softmax attention over cache entries ``< lengths[b]``; zeros where the length is 0.
    """
    S = k_cache.shape[-2]
    if zero_stale:  # stale slots may hold anything (see amago_sb.kernels.decode_attention)
        k_cache, v_cache = zero_padding(k_cache, lengths), zero_padding(v_cache, lengths)
    scores = (q[:, :, None, :] @ k_cache.transpose(-1, -2))[:, :, 0, :] * q.shape[-1] ** -0.5  # (B, H, S)
    key_ok = (torch.arange(S, device=q.device)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, S)
    scores = scores.masked_fill(~key_ok, float("-inf"))
    scores = torch.where(key_ok.any(-1, keepdim=True), scores, torch.zeros((), dtype=scores.dtype, device=q.device))
    p = scores.softmax(-1) * key_ok
    return (p[:, :, None, :] @ v_cache)[:, :, 0, :]  # (B, H, D)
