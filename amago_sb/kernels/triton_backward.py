"""Triton flash attention backward: dQ, dK, dV from the forward's saved base-2 log-sum-exp.

FlashAttention-2 style, with no atomics and no materialized ``L x L`` matrix: ``delta = rowsum(dO * O)``
first; then one program per key tile accumulates dK and dV over the query tiles that can see it, and one
program per query tile accumulates dQ over the key tiles it sees. Both recompute ``P = exp2(s - lse)``.
Tiles on the causal diagonal or the length boundary run masked; the rest mask-free; tiles past a
sequence's length are not visited (their gradients are written as zeros). Launched from
``triton_attention._backward``.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["_attn_bwd_delta", "_attn_bwd_dkdv", "_attn_bwd_dq", "_mma"]


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b with float32 accumulation. UPCAST feeds float32 operands (the CPU interpreter's bf16 tl.dot is
    wrong in triton 3.9; only set under TRITON_INTERPRET)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit(do_not_specialize=["L"])
def _attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_od, stride_dob, stride_doh, stride_dom,
                    stride_dod, H, L, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta[bh, i] = sum_d dO[i, d] * O[i, d] (float32)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, D_PAD)
    mask = (offs_m[:, None] < L) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0)
    tl.store(DELTA + bh * L + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=offs_m < L)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom, lo, hi, offs_n, offs_m0,
                d_ok, seq_len, qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Accumulate dK, dV (BN, D) of one key tile over query tiles [lo, hi), transposed: P^T is (BN, BM)."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        if MASKED:
            m_ok = offs_m < seq_len
            q = tl.load(q_ptrs + start_m * stride_qm, mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, D)
            do = tl.load(do_ptrs + start_m * stride_dom, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
            lse = tl.load(lse_ptr + offs_m, mask=m_ok, other=0.0)
            delta = tl.load(delta_ptr + offs_m, mask=m_ok, other=0.0)
        else:
            q = tl.load(q_ptrs + start_m * stride_qm, mask=d_ok[None, :], other=0.0)
            do = tl.load(do_ptrs + start_m * stride_dom, mask=d_ok[None, :], other=0.0)
            lse = tl.load(lse_ptr + offs_m)
            delta = tl.load(delta_ptr + offs_m)
        st = _mma(k, tl.trans(q), None, PRECISION, UPCAST) * qk_scale  # (BN, BM), log2 units
        pt = tl.exp2(st - lse[None, :])
        if MASKED:
            ok = m_ok[None, :] & (offs_n[:, None] < seq_len)
            if CAUSAL:
                ok = ok & (offs_n[:, None] <= offs_m[None, :])
            pt = tl.where(ok, pt, 0.0)
        dv = _mma(pt.to(do.dtype), do, dv, PRECISION, UPCAST)
        dpt = _mma(v, tl.trans(do), None, PRECISION, UPCAST)  # (BN, BM)
        dst = pt * (dpt - delta[None, :])
        dk = _mma(dst.to(q.dtype), q, dk, PRECISION, UPCAST)
    return dk, dv


@triton.jit(do_not_specialize=["L"])
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, LENGTHS, sm_scale, qk_scale,
                   stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                   H, L, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One program per (key tile, batch * head). DK, DV are contiguous (B, H, L, D)."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if HAS_LENGTHS:
        seq_len = tl.load(LENGTHS + b).to(tl.int32)
    else:
        seq_len = L
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    kv_mask = (offs_n[:, None] < L) & d_ok[None, :]
    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=kv_mask, other=0.0)
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m0[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + b * stride_dob + h * stride_doh + offs_m0[:, None] * stride_dom + offs_d[None, :] * stride_dod
    lse_ptr = LSE + bh * L
    delta_ptr = DELTA + bh * L

    # query range: masked [lo, a_hi) on the diagonal, mask-free [a_hi, b_hi), masked [b_hi, hi) at the length;
    # a key tile that crosses the length is masked throughout; one past the length visits nothing
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
    else:
        lo = start_n * 0
    hi = tl.where(start_n < seq_len, seq_len, lo)
    if CAUSAL:
        a_hi = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, hi)
    else:
        a_hi = lo
    a_hi = tl.where(start_n + BLOCK_N <= seq_len, a_hi, hi)
    b_hi = tl.maximum(a_hi, (hi // BLOCK_M) * BLOCK_M)

    dk = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom, lo, a_hi, offs_n,
                         offs_m0, d_ok, seq_len, qk_scale, BLOCK_M, True, CAUSAL, PRECISION, UPCAST)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom, a_hi, b_hi, offs_n,
                         offs_m0, d_ok, seq_len, qk_scale, BLOCK_M, False, CAUSAL, PRECISION, UPCAST)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qm, stride_dom, b_hi, hi, offs_n,
                         offs_m0, d_ok, seq_len, qk_scale, BLOCK_M, True, CAUSAL, PRECISION, UPCAST)
    out_off = bh * L * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, lo, hi, offs_m, offs_n0, d_ok, seq_len,
              qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
              UPCAST: tl.constexpr):
    """Accumulate dQ (BM, D) of one query tile over key tiles [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        if MASKED:
            n_ok = offs_n < seq_len
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # (D, BN)
            vt = tl.load(v_ptrs + start_n * stride_vn, mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        else:
            kt = tl.load(k_ptrs + start_n * stride_kn, mask=d_ok[:, None], other=0.0)
            vt = tl.load(v_ptrs + start_n * stride_vn, mask=d_ok[:, None], other=0.0)
        s = _mma(q, kt, None, PRECISION, UPCAST) * qk_scale  # (BM, BN)
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            ok = n_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(ok, p, 0.0)
        dp = _mma(do, vt, None, PRECISION, UPCAST)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq = _mma(ds.to(kt.dtype), tl.trans(kt), dq, PRECISION, UPCAST)
    return dq


@triton.jit(do_not_specialize=["L"])
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, LENGTHS, sm_scale, qk_scale,
                 stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                 stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                 H, L, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_LENGTHS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One program per (query tile, batch * head). DQ is contiguous (B, H, L, D)."""
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
    row_mask = (offs_m[:, None] < L) & d_ok[None, :]
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                 mask=row_mask, other=0.0)
    lse = tl.load(LSE + bh * L + offs_m, mask=offs_m < L, other=0.0)
    delta = tl.load(DELTA + bh * L + offs_m, mask=offs_m < L, other=0.0)
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_n0[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V + b * stride_vb + h * stride_vh + offs_n0[None, :] * stride_vn + offs_d[:, None] * stride_vd
    if CAUSAL:
        hi = tl.minimum(start_m + BLOCK_M, seq_len)
        full_hi = tl.minimum(start_m, seq_len)
    else:
        hi = seq_len
        full_hi = seq_len
    hi = tl.where(start_m < seq_len, hi, 0)
    full_hi = tl.minimum((full_hi // BLOCK_N) * BLOCK_N, hi)
    dq = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, full_hi, offs_m, offs_n0, d_ok,
                   seq_len, qk_scale, BLOCK_N, False, CAUSAL, PRECISION, UPCAST)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kn, stride_vn, full_hi, hi, offs_m, offs_n0, d_ok,
                   seq_len, qk_scale, BLOCK_N, True, CAUSAL, PRECISION, UPCAST)
    dq = tl.where((offs_m < seq_len)[:, None], dq * sm_scale, 0.0)  # padded queries send no gradient
    tl.store(DQ + bh * L * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=row_mask)
