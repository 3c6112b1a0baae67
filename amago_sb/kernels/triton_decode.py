"""Triton decode attention: one new query per sequence against a KV cache with per-sequence lengths.

Used when acting (``AMAGO.predict``): each step appends one key/value to the cache and attends over the
first ``lengths[b]`` entries. Only those entries are read, so a cache allocated for the full context costs
in proportion to what it holds.

Flash-decoding: with few (batch * head) rows and a long cache, the key axis is split into ``num_splits``
chunks processed by separate programs, each writing a partial (max, normalizer, unnormalized output) in
base 2; a second small kernel merges the partials. With one split the first kernel writes the output
directly. A single query has no tile to feed tensor cores, so scores are elementwise products reduced
over head_dim (the kernel is bound by reading the cache anyway).

Caution: tested on CPU through ``TRITON_INTERPRET=1`` and compiled ahead of time for sm80 / sm90.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from .tuning import decode_config

__all__ = ["triton_decode_attention", "default_num_splits"]

_LOG2E = 1.4426950408889634


@triton.jit(do_not_specialize=["S", "chunk"])
def _decode_partial(Q, K, V, O, M_PART, L_PART, ACC_PART, LENGTHS, qk_scale,
                    stride_qb, stride_qh, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_od,
                    H, S, chunk, NUM_SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    """Program (split, b * H + h) attends cache entries [split * chunk, min((split + 1) * chunk, length))."""
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    seq_len = tl.minimum(tl.load(LENGTHS + b).to(tl.int32), S)
    lo = split * chunk
    hi = tl.minimum(lo + chunk, seq_len)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    offs_n0 = tl.arange(0, BLOCK_N)
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d * stride_qd, mask=d_ok, other=0.0).to(tl.float32)
    q = q * qk_scale  # scores in log2 units
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_n0[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + b * stride_vb + h * stride_vh + offs_n0[:, None] * stride_vn + offs_d[None, :] * stride_vd
    m_i = -1.0e30
    l_i = 0.0
    acc = tl.zeros([D_PAD], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        n_ok = (start_n + offs_n0) < hi
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptrs + start_n * stride_kn, mask=kv_mask, other=0.0)  # (BN, D)
        s = tl.sum(k.to(tl.float32) * q[None, :], 1)  # (BN,)
        s = tl.where(n_ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new)
        v = tl.load(v_ptrs + start_n * stride_vn, mask=kv_mask, other=0.0)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
        m_i = m_new
    if NUM_SPLITS == 1:
        out = tl.where(l_i > 0.0, acc / tl.maximum(l_i, 1e-30), 0.0)
        tl.store(O + b * stride_ob + h * stride_oh + offs_d * stride_od, out.to(O.dtype.element_ty), mask=d_ok)
    else:
        part = bh * NUM_SPLITS + split
        tl.store(M_PART + part, m_i)
        tl.store(L_PART + part, l_i)
        tl.store(ACC_PART + part * D_PAD + offs_d, acc)


@triton.jit
def _decode_combine(O, M_PART, L_PART, ACC_PART, stride_ob, stride_oh, stride_od, H, NUM_SPLITS: tl.constexpr,
                    SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr):
    """Merge the partial softmax states of one (b, h): out = sum_s w_s acc_s / sum_s w_s l_s, w_s = 2^(m_s - M)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    offs_s = tl.arange(0, SPLITS_PAD)
    s_ok = offs_s < NUM_SPLITS
    offs_d = tl.arange(0, D_PAD)
    m = tl.load(M_PART + bh * NUM_SPLITS + offs_s, mask=s_ok, other=-1.0e30)
    lsum = tl.load(L_PART + bh * NUM_SPLITS + offs_s, mask=s_ok, other=0.0)
    acc = tl.load(ACC_PART + (bh * NUM_SPLITS + offs_s[:, None]) * D_PAD + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    w = tl.exp2(m - tl.max(m, 0))
    total = tl.sum(w * lsum, 0)
    out = tl.sum(w[:, None] * acc, 0) / tl.maximum(total, 1e-30)
    out = tl.where(total > 0.0, out, 0.0)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d * stride_od, out.to(O.dtype.element_ty), mask=offs_d < HEAD_DIM)


@functools.lru_cache(maxsize=16)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(batch_heads: int, cache_len: int, device: torch.device) -> int:
    """Splits so that about two waves of programs cover the GPU, each chunk at least 128 cache entries."""
    if device.type != "cuda":
        return 1 if cache_len <= 64 else 2
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    want = triton.cdiv(2 * sms, max(batch_heads, 1))
    return int(max(1, min(want, triton.cdiv(cache_len, 128), 64)))


def triton_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Decode attention on validated inputs: q ``(B, H, D)``, caches ``(B, H, S, D)``, lengths ``(B,)`` int32.

    Returns ``(B, H, D)`` in q's dtype. ``num_splits`` (default: ``default_num_splits``) chunks of the key axis
    are reduced in parallel and merged.
    """
    B, H, D = q.shape
    S = k_cache.shape[2]
    d_pad = max(16, triton.next_power_of_2(D))
    splits = num_splits if num_splits is not None else default_num_splits(B * H, S, q.device)
    splits = max(1, min(int(splits), S))
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    cfg = decode_config(d_pad, q.element_size(), interpret)
    chunk = triton.cdiv(triton.cdiv(S, splits), cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    splits = triton.cdiv(S, chunk)
    out = torch.empty_like(q)
    if splits > 1:
        m_part = torch.empty((B * H, splits), dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty((B * H, splits, d_pad), dtype=torch.float32, device=q.device)
    else:
        m_part = l_part = acc_part = out  # not touched with one split
    _decode_partial[(splits, B * H)](
        q, k_cache, v_cache, out, m_part, l_part, acc_part, lengths, _LOG2E / math.sqrt(D),
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *out.stride(), H, S, chunk,
        NUM_SPLITS=splits, HEAD_DIM=D, D_PAD=d_pad, **cfg,
    )
    if splits > 1:
        _decode_combine[(B * H,)](out, m_part, l_part, acc_part, *out.stride(), H, NUM_SPLITS=splits,
                                  SPLITS_PAD=triton.next_power_of_2(splits), HEAD_DIM=D, D_PAD=d_pad)
    return out
