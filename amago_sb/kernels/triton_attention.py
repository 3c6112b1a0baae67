"""Triton flash attention: causal / padded forward with fused entropy, and backward from the saved log-sum-exp.

Forward (FlashAttention-2 style): one program per (query tile, batch * head). It streams key/value tiles
through an online softmax in base 2 (scores pre-multiplied by ``log2(e) / sqrt(D)`` so that ``exp2`` is used),
and carries, besides the running max ``m_i`` and normalizer ``l_i``, ``u_i = sum_j p_ij (s_ij - m_i)``
(rescaled like ``l_i`` whenever ``m_i`` moves). The entropy then comes out of the same pass:
``H_i = ln(l_i) - ln(2) * u_i / l_i`` nats; no second read of K/V, one extra multiply-add per score.

Tiles that hold no attended pair are never visited: key tiles past the causal diagonal or past the
sequence's length, and whole query tiles past the length (their outputs are written as zeros). Key tiles
that are entirely attended run a mask-free loop; only tiles on the diagonal or the length boundary pay
for masks.

Backward (kernels in ``triton_backward.py``, launched here): ``delta = rowsum(dO * O)``; one kernel per key
tile accumulates dK and dV over query tiles, one per query tile accumulates dQ over key tiles (no atomics,
no materialized ``L x L`` matrix). P is recomputed from the saved base-2 log-sum-exp.

The entropy is a monitoring signal and is not differentiable (its gradient is ignored).

Caution: tested on CPU through ``TRITON_INTERPRET=1`` (triton 3.9, torch 2.13) and compiled ahead of time
for sm80 / sm90 (``tests/test_kernels_compile.py``); GPU speed is measured by ``bench/attention.py``.
Supports head_dim 1..128 (padded to a power of two >= 16 inside the kernel; 16/32/64/128 waste nothing),
fp32 / fp16 / bf16, any sequence length. fp32 inputs use TF32 tensor cores when
``torch.backends.cuda.matmul.allow_tf32`` is set, else 3xTF32 (about fp32 accuracy, three tensor-core
passes, smaller tiles): fp16/bf16 is the fast path.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from .triton_backward import _attn_bwd_delta, _attn_bwd_dkdv, _attn_bwd_dq, _mma
from .tuning import attention_configs, autotune_enabled, bwd_config, fwd_config

__all__ = ["triton_attention", "MAX_HEAD_DIM"]

MAX_HEAD_DIM = 128
_LOG2E = 1.4426950408889634


@triton.jit
def _fwd_inner(acc, l_i, m_i, u_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, lo, hi, offs_m, offs_n0, d_ok, seq_len,
               qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, ENTROPY: tl.constexpr,
               PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Online softmax over key tiles [lo, hi). q (BM, D); acc (BM, D); l_i, m_i, u_i (BM,)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        if MASKED:
            n_ok = offs_n < seq_len
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # (D, BN)
        else:
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=d_ok[:, None], other=0.0)
        s = _mma(q, kt, None, PRECISION, UPCAST) * qk_scale  # (BM, BN), log2 units
        if MASKED:
            ok = n_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        centred = s - m_new[:, None]
        p = tl.exp2(centred)
        if ENTROPY:
            if MASKED:
                centred = tl.where(ok, centred, 0.0)
            u_i = alpha * (u_i + (m_i - m_new) * l_i) + tl.sum(p * centred, 1)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs + start_n * stride_vn, mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, D)
        else:
            v = tl.load(v_ptrs + start_n * stride_vn, mask=d_ok[None, :], other=0.0)
        acc = _mma(p.to(v.dtype), v, acc * alpha[:, None], PRECISION, UPCAST)
        m_i = m_new
    return acc, l_i, m_i, u_i


@triton.jit(do_not_specialize=["L"])
def _attn_fwd(Q, K, V, O, LSE, ENT, LENGTHS, qk_scale,
              stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
              stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od,
              H, L, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, ENTROPY: tl.constexpr, PRECISION: tl.constexpr,
              UPCAST: tl.constexpr):
    tl.static_assert(D_PAD >= HEAD_DIM)
    tl.static_assert(D_PAD >= 16)
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M  # causal: longest rows launch first
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENGTHS:
        seq_len = tl.load(LENGTHS + b).to(tl.int32)
    else:
        seq_len = L
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_n0[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + b * stride_vb + h * stride_vh + offs_n0[:, None] * stride_vn + offs_d[None, :] * stride_vd

    # key range: [0, full_hi) needs no mask, [full_hi, hi) does; query tiles past the length visit nothing
    if CAUSAL:
        hi = tl.minimum(start_m + BLOCK_M, seq_len)
        full_hi = tl.minimum(start_m, seq_len)
    else:
        hi = seq_len
        full_hi = seq_len
    hi = tl.where(start_m < seq_len, hi, 0)
    full_hi = tl.minimum((full_hi // BLOCK_N) * BLOCK_N, hi)

    q = tl.load(q_ptrs, mask=(offs_m[:, None] < L) & d_ok[None, :], other=0.0)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    u_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc, l_i, m_i, u_i = _fwd_inner(acc, l_i, m_i, u_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, full_hi, offs_m,
                                    offs_n0, d_ok, seq_len, qk_scale, BLOCK_N, False, CAUSAL, ENTROPY, PRECISION, UPCAST)
    acc, l_i, m_i, u_i = _fwd_inner(acc, l_i, m_i, u_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, full_hi, hi, offs_m,
                                    offs_n0, d_ok, seq_len, qk_scale, BLOCK_N, True, CAUSAL, ENTROPY, PRECISION, UPCAST)

    row_ok = (offs_m < seq_len) & (l_i > 0.0)
    l_safe = tl.where(row_ok, l_i, 1.0)
    out = tl.where(row_ok[:, None], acc / l_safe[:, None], 0.0)
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=(offs_m[:, None] < L) & d_ok[None, :])
    row_store = offs_m < L
    tl.store(LSE + bh * L + offs_m, tl.where(row_ok, m_i + tl.log2(l_safe), 0.0), mask=row_store)
    if ENTROPY:
        ent = tl.log(l_safe) - 0.6931471805599453 * u_i / l_safe
        tl.store(ENT + bh * L + offs_m, tl.where(row_ok, ent, 0.0), mask=row_store)


def _d_pad(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _precision(dtype: torch.dtype) -> str:
    """fp32 dots: TF32 where torch allows it, else 3xTF32 (about fp32 accuracy on tensor cores)."""
    if dtype != torch.float32 or _interpreting():
        return "ieee"  # ignored for fp16/bf16
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _autotuned(kernel_name: str, d_pad: int):
    """Autotuned variant of a kernel (only with AMAGO_ATTENTION_AUTOTUNE=1; never in tests)."""
    kernel = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}[kernel_name]
    return triton.autotune(configs=attention_configs(kernel_name, d_pad), key=["L", "HEAD_DIM", "CAUSAL"])(kernel)


def _launch(kernel_name: str, kernel, grid_len: int, bh: int, args: tuple, consts: dict, d_pad: int, elem: int, L: int):
    if autotune_enabled() and not _interpreting():
        tuned = _autotuned(kernel_name, d_pad)
        key = "BLOCK_M" if kernel_name != "dkdv" else "BLOCK_N"
        tuned[lambda meta: (triton.cdiv(grid_len, meta[key]), bh)](*args, **consts)
        return
    cfg = (fwd_config(d_pad, elem, L, _interpreting()) if kernel_name == "fwd"
           else bwd_config(d_pad, elem, L, kernel_name, _interpreting()))
    tile = cfg["BLOCK_M"] if kernel_name != "dkdv" else cfg["BLOCK_N"]
    kernel[(triton.cdiv(grid_len, tile), bh)](*args, **consts, **cfg)


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())  # type: ignore[return-value]


def _forward(q, k, v, lengths, causal: bool, want_entropy: bool):
    B, H, L, D = q.shape
    d_pad = _d_pad(D)
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    ent = torch.empty((B, H, L), dtype=torch.float32, device=q.device) if want_entropy else lse
    lens = lengths if lengths is not None else lse  # never read when HAS_LENGTHS is False
    sm_scale = 1.0 / math.sqrt(D)
    args = (q, k, v, o, lse, ent, lens, sm_scale * _LOG2E, *_strides(q), *_strides(k), *_strides(v), *_strides(o), H, L)
    consts = dict(HEAD_DIM=D, D_PAD=d_pad, CAUSAL=causal, HAS_LENGTHS=lengths is not None, ENTROPY=want_entropy,
                  PRECISION=_precision(q.dtype),
                  UPCAST=_interpreting() and q.dtype == torch.bfloat16)
    _launch("fwd", _attn_fwd, L, B * H, args, consts, d_pad, q.element_size(), L)
    return o, lse, (ent if want_entropy else None)


def _backward(do, q, k, v, o, lse, lengths, causal: bool):
    B, H, L, D = q.shape
    d_pad = _d_pad(D)
    delta = torch.empty_like(lse)
    _attn_bwd_delta[(triton.cdiv(L, 64), B * H)](o, do, delta, *_strides(o), *_strides(do), H, L, HEAD_DIM=D,
                                                 D_PAD=d_pad, BLOCK_M=64)
    dq = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, L, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H, L, D), dtype=v.dtype, device=v.device)
    lens = lengths if lengths is not None else lse
    sm_scale = 1.0 / math.sqrt(D)
    common = (sm_scale, sm_scale * _LOG2E, *_strides(q), *_strides(k), *_strides(v), *_strides(do), H, L)
    consts = dict(HEAD_DIM=D, D_PAD=d_pad, CAUSAL=causal, HAS_LENGTHS=lengths is not None, PRECISION=_precision(q.dtype),
                  UPCAST=_interpreting() and q.dtype == torch.bfloat16)
    _launch("dkdv", _attn_bwd_dkdv, L, B * H, (q, k, v, do, dk, dv, lse, delta, lens, *common), consts, d_pad,
            q.element_size(), L)
    _launch("dq", _attn_bwd_dq, L, B * H, (q, k, v, do, dq, lse, delta, lens, *common), consts, d_pad,
            q.element_size(), L)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, lengths, causal, return_entropy):
        o, lse, ent = _forward(q, k, v, lengths, causal, return_entropy)
        ctx.save_for_backward(q, k, v, o, lse, lengths)
        ctx.causal = causal
        if ent is None:
            return o
        ctx.mark_non_differentiable(ent)
        return o, ent

    @staticmethod
    def backward(ctx, do, *_ignored_entropy_grad):
        q, k, v, o, lse, lengths = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, lengths, ctx.causal)
        return dq, dk, dv, None, None, None


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None = None,
    causal: bool = True,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton flash attention on validated inputs (see ``amago_sb.kernels.attention`` for the contract).

    Args:
        q, k, v: ``(B, H, L, D)`` of one dtype (fp32/fp16/bf16), any strides.
        lengths: ``(B,)`` int32 with values in ``[0, L]``, or None.
        causal: causal mask.
        return_entropy: also return the entropy ``(B, H, L)`` in nats, float32.

    Returns:
        ``out (B, H, L, D)`` or ``(out, entropy)``.
    """
    if max(q.numel(), k.numel(), v.numel()) >= 2**31:
        raise ValueError(f"the Triton kernels index with int32: tensors need < 2**31 elements, got q {tuple(q.shape)}; "
                         "split the batch")
    return _FlashAttention.apply(q, k, v, lengths, causal, return_entropy)
