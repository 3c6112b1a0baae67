"""The Triton kernels compiled for real GPUs: sm80 / sm90 compiles without a GPU, and a native CUDA check with one.

Runs ``python -m amago_sb.kernels.compile_check`` in a subprocess with the interpreter off (conftest turns
it on for this process). The default test compiles the fp16 head_dim-64 kernels for sm90 (~15 s); the slow
one compiles every dtype / head_dim for both targets and fails on shared memory over the device limit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ptxas_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return os.path.exists(get_ptxas(90).path)
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _ptxas_available(), reason="triton's bundled ptxas is not available")


def _run(*args: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "amago_sb.kernels.compile_check", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    return res.stdout


def test_kernels_compile_for_h100():
    out = _run("--arch", "90", "--quick")
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert names == ["fwd", "dkdv", "dq", "delta", "decode", "combine"]
    for line in out.splitlines()[1:]:
        cols = line.split()
        assert int(cols[7]) == 0, f"register spills in the fp16 head_dim-64 kernels: {line}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["80", "90"])
def test_all_configs_compile_within_shared_memory(arch):
    _run("--arch", arch)


_CUDA_CHECK = r"""
import torch
from amago_sb.kernels import attention, attention_backend, attention_reference, decode_attention, decode_attention_reference
torch.manual_seed(0)
for dtype, tol in ((torch.float32, 2e-3), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)):
    for (B, H, L, D) in ((3, 2, 1, 16), (4, 3, 200, 64), (2, 2, 333, 128), (2, 2, 130, 24)):
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.float64, requires_grad=True) for _ in range(3))
        lens = torch.randint(1, L + 1, (B,), device="cuda"); lens[0] = L
        ref, ref_ent = attention_reference(q, k, v, lens, True, return_entropy=True)
        do = torch.randn_like(ref)
        ref_g = torch.autograd.grad(ref, (q, k, v), do)
        with attention_backend("triton"):
            out, ent = attention(q.to(dtype), k.to(dtype), v.to(dtype), lens, return_entropy=True)
        g = torch.autograd.grad(out, (q, k, v), do.to(dtype))
        assert (out.double() - ref).abs().max() < tol, ("out", dtype, B, H, L, D)
        assert (ent.double() - ref_ent).abs().max() < 10 * tol, ("entropy", dtype, B, H, L, D)
        for a, b in zip(g, ref_g):
            assert (a.double() - b).abs().max() < 10 * tol * max(1.0, b.abs().max().item()), ("grad", dtype, B, H, L, D)
        S = L
        rows = torch.arange(B, device="cuda")
        for splits in (None, 1, 4):
            with attention_backend("triton"):
                dec = decode_attention(q[rows, :, lens - 1].to(dtype), k.to(dtype), v.to(dtype), lens, num_splits=splits)
            assert (dec.double() - ref[rows, :, lens - 1]).abs().max() < tol, ("decode", dtype, splits)
print("ok")
"""


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_kernels_on_cuda_match_reference():
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", _CUDA_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr[-3000:]
