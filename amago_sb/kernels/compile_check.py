"""Compile the attention kernels for a GPU target without a GPU, and report registers, spills and shared memory.

Triton compiles ahead of time down to a cubin with the ``ptxas`` shipped in its wheel, so this catches what
the CPU interpreter cannot: constructs that do not lower, shared memory over the device limit, register
spills. It uses the same tile heuristics as the launches (``tuning``) with the target's shared-memory budget.

    python -m amago_sb.kernels.compile_check --arch 90          # H100; --arch 80 for A100
    python -m amago_sb.kernels.compile_check --arch 90 --quick  # one config per kernel

Must run with ``TRITON_INTERPRET`` unset or 0 (the interpreter replaces ``triton.jit`` functions).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from unittest import mock

import torch

__all__ = ["compile_kernel", "check_all", "SMEM_LIMIT"]

SMEM_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
_TORCH_TO_TRITON = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def compile_kernel(kernel, arch: int, pointer_types: dict[str, str], constexprs: dict, num_warps: int = 4,
                   num_stages: int = 3) -> dict:
    """Compile one ``@triton.jit`` kernel for ``cuda:sm<arch>``; strides named ``stride_*d`` are specialized to 1
    (head_dim contiguous, as in real launches) and other strides / pointers marked 16-divisible."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    fn = kernel
    while not isinstance(fn, triton.runtime.JITFunction):  # unwrap an Autotuner / Heuristics
        fn = fn.fn
    signature, consts, attrs = {}, dict(constexprs), {}
    for i, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
            if name not in consts:
                raise ValueError(f"constexpr {name} of {fn.__name__} needs a value")
        elif name in pointer_types:
            signature[name] = "*" + pointer_types[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif re.fullmatch(r"stride_\w*d", name):
            signature[name] = "constexpr"
            consts[name] = 1
        elif name.startswith("stride_"):
            signature[name] = "i32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("qk_scale", "sm_scale"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps, num_stages=num_stages))
    info = {"kernel": fn.__name__, "shared": int(ck.metadata.shared), "regs": -1, "spills": -1}
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(ck.asm["ptx"])
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", ptx, "-o", os.path.join(tmp, "k.o")],
                             capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    info["regs"] = int(regs.group(1)) if regs else -1
    info["spills"] = int(spills.group(1)) if spills else 0
    return info


def _cases(quick: bool):
    dtypes = [torch.float16] if quick else [torch.float16, torch.bfloat16, torch.float32]
    dims = [64] if quick else [16, 32, 64, 128]
    for dtype in dtypes:
        for d in dims:
            yield dtype, d, True, True
    if not quick:
        yield torch.float16, 64, False, False
        yield torch.float16, 24, True, True


def check_all(arch: int, quick: bool = False, L: int = 1024) -> list[dict]:
    """Compile every kernel at the tile configs the launcher would pick on an ``sm<arch>`` GPU."""
    from . import triton_attention as ta
    from . import triton_backward as tb
    from . import triton_decode as td
    from . import tuning

    budget = SMEM_LIMIT.get(arch, 99 * 1024)
    rows = []
    with mock.patch.object(tuning, "_budget", lambda: budget):
        for dtype, d, causal, has_len in _cases(quick):
            t = _TORCH_TO_TRITON[dtype]
            d_pad = ta._d_pad(d)
            elem = torch.empty((), dtype=dtype).element_size()
            prec = "tf32x3" if dtype == torch.float32 else "ieee"  # fp32 default unless torch allows TF32
            base = dict(HEAD_DIM=d, D_PAD=d_pad, CAUSAL=causal, HAS_LENGTHS=has_len, PRECISION=prec, UPCAST=False)
            ptr_in = {n: t for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")}
            ptr_f32 = {n: "fp32" for n in ("LSE", "ENT", "DELTA", "M_PART", "L_PART", "ACC_PART")}
            ptrs = {**ptr_in, **ptr_f32, "LENGTHS": "i32"}
            jobs = [
                ("fwd", ta._attn_fwd, {**base, "ENTROPY": True, **tuning.fwd_config(d_pad, elem, L)}),
                ("dkdv", tb._attn_bwd_dkdv, {**base, **tuning.bwd_config(d_pad, elem, L, "dkdv")}),
                ("dq", tb._attn_bwd_dq, {**base, **tuning.bwd_config(d_pad, elem, L, "dq")}),
                ("delta", tb._attn_bwd_delta, dict(HEAD_DIM=d, D_PAD=d_pad, BLOCK_M=64)),
                ("decode", td._decode_partial,
                 dict(NUM_SPLITS=4, HEAD_DIM=d, D_PAD=d_pad, **tuning.decode_config(d_pad, elem))),
                ("combine", td._decode_combine, dict(NUM_SPLITS=4, SPLITS_PAD=4, HEAD_DIM=d, D_PAD=d_pad)),
            ]
            for name, kernel, cfg in jobs:
                cfg = dict(cfg)
                warps, stages = cfg.pop("num_warps", 4), cfg.pop("num_stages", 3)
                info = compile_kernel(kernel, arch, ptrs, cfg, warps, stages)
                info.update(name=name, dtype=t, head_dim=d, causal=causal, lengths=has_len, warps=warps, stages=stages,
                            tiles=f"{cfg.get('BLOCK_M', '-')}x{cfg.get('BLOCK_N', '-')}", smem_ok=info["shared"] <= budget)
                rows.append(info)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (80 = A100, 90 = H100)")
    parser.add_argument("--quick", action="store_true", help="fp16, head_dim 64 only")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter replaces the kernels this script compiles", file=sys.stderr)
        return 2
    bad = 0
    print(f"{'kernel':8} {'dtype':5} {'D':>4} {'tiles':>8} {'warps':>5} {'stages':>6} {'regs':>5} {'spills':>6} {'smem':>7}")
    for r in check_all(args.arch, args.quick):
        flag = "" if r["smem_ok"] and r["spills"] == 0 else "  <-- check"
        bad += not r["smem_ok"]
        print(f"{r['name']:8} {r['dtype']:5} {r['head_dim']:>4} {r['tiles']:>8} {r['warps']:>5} {r['stages']:>6} "
              f"{r['regs']:>5} {r['spills']:>6} {r['shared']:>7}{flag}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
