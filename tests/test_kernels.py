"""Attention kernels: Triton (through TRITON_INTERPRET=1, set in conftest) and SDPA against the reference.

Shapes stay small: the interpreter runs each tile op in numpy. Tiles under the interpreter are 32x16 (fwd, dQ)
and 16x32 (dK/dV), so L=40 already covers several tiles, partial tiles and diagonals across key tiles.
"""

from __future__ import annotations

import re

import pytest
import torch

from amago_sb import kernels
from amago_sb.kernels import (
    attention,
    attention_backend,
    attention_entropy,
    attention_reference,
    decode_attention,
    decode_attention_reference,
    resolve_backend,
)

pytestmark = pytest.mark.skipif(not kernels.triton_available(), reason="triton does not import")


def _qkv(B, H, L, D, dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3)]


def _triton(*args, **kw):
    with attention_backend("triton"):
        return attention(*args, **kw)


def _check_against_reference(B, H, L, D, lengths, causal, atol=2e-5, seed=0):
    """Triton in float32 vs the reference in float64: output, entropy and all three gradients."""
    q, k, v = _qkv(B, H, L, D, seed=seed)
    lens = None if lengths is None else torch.tensor(lengths)
    ref, ref_ent = attention_reference(q, k, v, lens, causal, return_entropy=True)
    out, ent = _triton(q.float(), k.float(), v.float(), lens, causal=causal, return_entropy=True)
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent.detach(), atol=atol, rtol=0)
    do = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    ref_grads = torch.autograd.grad(ref, (q, k, v), do)
    grads = torch.autograd.grad(out, (q, k, v), do.float())
    for name, g, rg in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g.double(), rg, atol=atol, rtol=0, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lengths", [None, [40, 1, 17, 0, 33]], ids=["full", "ragged"])
def test_triton_matches_reference_fwd_bwd_entropy(causal, lengths):
    _check_against_reference(5 if lengths else 2, 2, 40, 16, lengths, causal)


@pytest.mark.parametrize("D", [16, 32, 64, 128, 24])
def test_triton_head_dims(D):
    _check_against_reference(2, 1, 19, D, [19, 6], causal=True, seed=D)


@pytest.mark.parametrize("L", [1, 16, 33])
def test_triton_lengths_not_multiple_of_tile(L):
    _check_against_reference(3, 2, L, 16, [L, max(L // 2, 1), 1], causal=True, seed=L)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_triton_low_precision_forward(dtype, tol):
    q, k, v = _qkv(2, 2, 40, 32, grad=False)
    lens = torch.tensor([40, 13])
    ref, ref_ent = attention_reference(q, k, v, lens, True, return_entropy=True)
    out, ent = _triton(q.to(dtype), k.to(dtype), v.to(dtype), lens, return_entropy=True)
    assert out.dtype == dtype and ent.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent, atol=tol, rtol=0)
    qh = q.to(dtype).requires_grad_()
    _triton(qh, k.to(dtype), v.to(dtype), lens).sum().backward()
    assert qh.grad.dtype == dtype and torch.isfinite(qh.grad).all()


def test_padding_gives_zeros_and_no_gradient():
    q, k, v = _qkv(2, 2, 24, 16, dtype=torch.float32)
    lens = torch.tensor([24, 9])
    out, ent = _triton(q, k, v, lens, return_entropy=True)
    assert torch.isfinite(out).all() and torch.isfinite(ent).all()
    assert out[1, :, 9:].abs().max() == 0 and ent[1, :, 9:].abs().max() == 0
    assert out[1, :, :9].abs().min() > 0
    out.sum().backward()  # dO is 1 on padded rows too: they must still send no gradient
    for t in (q, k, v):
        assert t.grad[1, :, 9:].abs().max() == 0
        assert t.grad[1, :, :9].abs().max() > 0
    # the valid part does not depend on what the padding holds
    q2, k2, v2 = (t.detach().clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[1, :, 9:] = 1e4
    torch.testing.assert_close(_triton(q2, k2, v2, lens), out.detach(), atol=1e-6, rtol=0)


def test_entropy_is_a_monitoring_signal():
    q, k, v = _qkv(1, 2, 20, 16, dtype=torch.float32)
    out, ent = _triton(q, k, v, return_entropy=True)
    assert not ent.requires_grad
    # uniform attention (all scores equal) has entropy log(number of attended keys)
    z = torch.zeros(1, 1, 20, 16)
    _, ent0 = _triton(z, z, torch.randn(1, 1, 20, 16), return_entropy=True)
    torch.testing.assert_close(ent0[0, 0], torch.log(torch.arange(1, 21, dtype=torch.float32)), atol=1e-5, rtol=0)


def test_strided_inputs_from_a_packed_projection():
    B, L, H, D = 2, 21, 2, 16
    qkv = torch.randn(B, L, 3, H, D, dtype=torch.float32)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, D) views, not contiguous
    assert not q.is_contiguous()
    lens = torch.tensor([21, 5])
    ref = attention_reference(q.double(), k.double(), v.double(), lens)
    torch.testing.assert_close(_triton(q, k, v, lens).double(), ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("num_splits", [None, 1, 3, 8])
def test_decode_matches_full_attention_on_the_same_cache(num_splits):
    B, H, S, D = 4, 2, 50, 32
    q, k, v = _qkv(B, H, S, D, dtype=torch.float32, grad=False)
    lens = torch.tensor([50, 1, 23, 37])
    full = attention_reference(q.double(), k.double(), v.double(), lens, causal=True)  # (B, H, S, D)
    last = lens - 1
    rows = torch.arange(B)
    q_new = q[rows, :, last]  # (B, H, D): the query of each sequence's newest step
    with attention_backend("triton"):
        out = decode_attention(q_new, k, v, lens, num_splits=num_splits)
    torch.testing.assert_close(out.double(), full[rows, :, last], atol=2e-6, rtol=0)
    torch.testing.assert_close(decode_attention(q_new, k, v, lens).double(), full[rows, :, last], atol=2e-6, rtol=0)


def test_decode_ragged_cache_low_precision_and_empty():
    B, H, S, D = 3, 2, 40, 24
    g = torch.Generator().manual_seed(3)
    q, kc, vc = torch.randn(B, H, D, generator=g), torch.randn(B, H, S, D, generator=g), torch.randn(B, H, S, D, generator=g)
    lens = torch.tensor([0, 40, 7])
    ref = decode_attention_reference(q.double(), kc.double(), vc.double(), lens)
    assert ref[0].abs().max() == 0
    for dtype, tol in ((torch.float32, 2e-6), (torch.float16, 3e-3), (torch.bfloat16, 3e-2)):
        with attention_backend("triton"):
            out = decode_attention(q.to(dtype), kc.to(dtype), vc.to(dtype), lens, num_splits=2)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_backend_matches_reference(causal):
    q, k, v = _qkv(3, 2, 30, 16)
    lens = torch.tensor([30, 0, 11])
    ref, ref_ent = attention_reference(q, k, v, lens, causal, return_entropy=True)
    with attention_backend("sdpa"):
        out, ent = attention(q, k, v, lens, causal=causal, return_entropy=True)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(ent.double(), ref_ent.detach(), atol=1e-5, rtol=0)
    do = torch.randn_like(ref)
    for g, rg in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(g, rg, atol=1e-10, rtol=0)
    with attention_backend("sdpa"):
        torch.testing.assert_close(attention(q, k, v, None, causal=causal), attention_reference(q, k, v, None, causal))


def test_blocked_entropy_matches_reference():
    q, k, _ = _qkv(2, 3, 37, 16, grad=False)
    lens = torch.tensor([37, 5])
    _, ref_ent = attention_reference(q, k, k, lens, True, return_entropy=True)
    for block in (1, 8, 64):
        torch.testing.assert_close(attention_entropy(q, k, lens, True, block=block).double(), ref_ent, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="block must be a positive"):
        attention_entropy(q, k, lens, block=0)


def test_dispatch_picks_what_it_says(monkeypatch):
    from amago_sb.kernels import sdpa as sdpa_mod
    from amago_sb.kernels import triton_attention as ta

    x = torch.randn(1, 1, 8, 16)
    monkeypatch.delenv("AMAGO_ATTENTION", raising=False)
    assert resolve_backend(x) == "sdpa"  # auto on CPU
    assert resolve_backend(x.double()) == "sdpa"
    calls = []
    monkeypatch.setattr(ta, "triton_attention", lambda *a: calls.append("triton") or ta._FlashAttention.apply(*a))
    monkeypatch.setattr(kernels, "sdpa_attention", lambda *a: calls.append("sdpa") or sdpa_mod.sdpa_attention(*a))
    monkeypatch.setattr(kernels, "attention_reference", lambda *a: calls.append("reference") or attention_reference(*a))
    attention(x, x, x)
    monkeypatch.setenv("AMAGO_ATTENTION", "triton")
    assert resolve_backend(x) == "triton"
    attention(x, x, x)
    with attention_backend("reference"):  # the context manager beats the environment
        assert resolve_backend(x) == "reference"
        attention(x, x, x)
        with attention_backend("sdpa"):
            attention(x, x, x)
        attention(x, x, x)
    assert calls == ["sdpa", "triton", "reference", "sdpa", "reference"]
    monkeypatch.setenv("AMAGO_ATTENTION", "flash")
    with pytest.raises(ValueError, match=re.escape("unknown attention backend 'flash' from $AMAGO_ATTENTION")):
        attention(x, x, x)
    with pytest.raises(ValueError, match="choose one of auto, triton, sdpa, reference"):
        with attention_backend("cuda"):
            pass


def test_forced_triton_explains_what_cannot_run(monkeypatch):
    x = torch.randn(1, 1, 8, 16)
    with attention_backend("triton"):
        with pytest.raises(TypeError, match="support float32, float16 and bfloat16, got torch.float64"):
            attention(x.double(), x.double(), x.double())
        big = torch.randn(1, 1, 8, 160)
        with pytest.raises(ValueError, match="head_dim up to 128, got 160"):
            attention(big, big, big)
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="need CUDA tensors, got cpu; set TRITON_INTERPRET=1"):
            attention(x, x, x)
    big = torch.randn(1, 1, 8, 160)
    assert attention(big, big, big).shape == big.shape  # auto falls back to SDPA for any head_dim


def test_bad_inputs_raise_clear_errors():
    q = torch.randn(2, 2, 8, 16)
    with pytest.raises(ValueError, match=re.escape("q, k, v must have the same shape")):
        attention(q, q[:, :, :4], q)
    with pytest.raises(ValueError, match=re.escape("q must have shape (batch, heads, seq, head_dim)")):
        attention(q[0], q[0], q[0])
    with pytest.raises(TypeError, match="share one dtype, got q=torch.float32, k=torch.float16"):
        attention(q, q.half(), q)
    with pytest.raises(TypeError, match="needs floating inputs"):
        attention(q.long(), q.long(), q.long())
    with pytest.raises(ValueError, match="must be on one device, got q on cpu, k on meta"):
        attention(q, q.to("meta"), q)
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [0, 8]")):
        attention(q, q, q, lengths=torch.tensor([9, 3]))
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [0, 8]")):
        attention(q, q, q, lengths=torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match=re.escape("lengths must have shape (2,)")):
        attention(q, q, q, lengths=torch.tensor([8]))
    lens = torch.tensor([8, 3])
    attention(q, q, q, lengths=lens)
    lens[0] = 9  # modified in place after passing the check once: checked again
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [0, 8]")):
        attention(q, q, q, lengths=lens)
    with pytest.raises(TypeError, match="lengths must hold integers"):
        attention(q, q, q, lengths=torch.tensor([8.0, 3.0]))
    kc = torch.randn(2, 2, 10, 16)
    with pytest.raises(ValueError, match=re.escape("does not match the cache (2, 2, 10, 16): expected (2, 2, 16)")):
        decode_attention(torch.randn(2, 3, 16), kc, kc, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=re.escape("lengths must lie in [0, 10]")):
        decode_attention(torch.randn(2, 2, 16), kc, kc, torch.tensor([11, 2]))
    with pytest.raises(ValueError, match="decode_attention needs lengths"):
        decode_attention(torch.randn(2, 2, 16), kc, kc, None)
    with pytest.raises(ValueError, match="num_splits must be a positive int"):
        decode_attention(torch.randn(2, 2, 16), kc, kc, torch.tensor([1, 2]), num_splits=0)


def test_tile_configs_fit_and_shrink_for_short_sequences(monkeypatch):
    from amago_sb.kernels import tuning

    monkeypatch.setattr(tuning, "_budget", lambda: 99 * 1024)  # an sm86-class GPU
    for elem in (2, 4):
        for d_pad in (16, 32, 64, 128):
            for kernel in ("fwd", "dkdv", "dq"):
                def cfg_fn(d, e, L, kernel=kernel):
                    return tuning.fwd_config(d, e, L) if kernel == "fwd" else tuning.bwd_config(d, e, L, kernel)

                cfg = cfg_fn(d_pad, elem, 4096)
                assert cfg["BLOCK_M"] >= 16 and cfg["BLOCK_N"] >= 16 and cfg["num_stages"] >= 1
                short = cfg_fn(d_pad, elem, 20)
                assert short["BLOCK_M"] <= 32 and short["BLOCK_N"] <= 32
    # 128x64 fp16 tiles at head_dim 128 need 32 KiB per K/V stage: only one stage fits 99 KiB next to Q
    assert tuning.fwd_config(128, 2, 4096)["num_stages"] < tuning.fwd_config(64, 2, 4096)["num_stages"]
    assert len(tuning.attention_configs("fwd", 64)) > len(tuning.attention_configs("fwd", 128)) > 0
