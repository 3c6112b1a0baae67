"""Attention kernel benchmark: Triton vs SDPA (flash, efficient) vs the reference, at in-context RL shapes.

    python bench/attention.py                 # CUDA if present (all methods), else the CPU part
    python bench/attention.py --quick         # fewer shapes
    python bench/attention.py --markdown out.md

GPU (CUDA): forward and forward+backward TFLOP/s for full and ragged batches, decode latency for one new
query per sequence against a KV cache with ragged lengths. CPU: the SDPA path vs the reference (forward,
forward+backward, entropy cost, decode), plus a correctness smoke test of the Triton kernels under
``TRITON_INTERPRET=1`` in a subprocess (the interpreter is for correctness, not speed).

FLOPs count only the attended (query, key) pairs of valid queries: causal attention over a sequence of
length n costs ``4 * n(n+1)/2 * D`` per head forward and 2.5x that backward. Every method is charged the
same useful FLOPs, so a method that skips padding shows a higher rate than one that computes it.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amago_sb.kernels import attention as amago_attention  # noqa: E402
from amago_sb.kernels import attention_backend, attention_entropy, attention_reference, decode_attention  # noqa: E402


def _time_ms(fn: Callable[[], object], device: torch.device, min_time: float = 1.0, reps: int = 30) -> float:
    """Milliseconds per call: CUDA median (triton.testing.do_bench); CPU best of up to ``reps`` wall-clock runs
    (the minimum is the least disturbed by other processes on a shared machine)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps and (time.perf_counter() - start < min_time or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def _lengths(B: int, L: int, ragged: bool, device: torch.device) -> torch.Tensor:
    if not ragged:
        return torch.full((B,), L, dtype=torch.int64, device=device)
    g = torch.Generator().manual_seed(B * 7919 + L)
    return torch.randint(max(1, L // 4), L + 1, (B,), generator=g).to(device)


def _useful_flops(lengths: torch.Tensor, H: int, D: int, causal: bool = True) -> float:
    n = lengths.double().cpu()
    pairs = (n * (n + 1) / 2) if causal else n * n
    return float(4 * pairs.sum() * H * D)


def _methods(device: torch.device) -> dict[str, Callable]:
    """name -> f(q, k, v, lengths, want_entropy) returning out (and entropy when asked and supported)."""

    def triton_fn(q, k, v, lens, ent):
        with attention_backend("triton"):
            return amago_attention(q, k, v, lens, return_entropy=ent)

    def sdpa_backend(backend):
        def fn(q, k, v, lens, ent):
            from torch.nn.attention import sdpa_kernel

            with sdpa_kernel(backend):  # causal + end padding: unmasked causal SDPA, padded rows zeroed
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            q_ok = torch.arange(q.shape[2], device=q.device)[None, :] < lens[:, None]
            return out * q_ok[:, None, :, None]

        return fn

    def sdpa_auto(q, k, v, lens, ent):
        with attention_backend("sdpa"):
            return amago_attention(q, k, v, lens, return_entropy=ent)

    def reference(q, k, v, lens, ent):
        return attention_reference(q, k, v, lens, True, return_entropy=ent)

    if device.type == "cuda":
        from torch.nn.attention import SDPBackend

        return {
            "triton": triton_fn,
            "sdpa-flash": sdpa_backend(SDPBackend.FLASH_ATTENTION),
            "sdpa-efficient": sdpa_backend(SDPBackend.EFFICIENT_ATTENTION),
            "amago-sdpa": sdpa_auto,
            "reference": reference,
        }
    return {"amago-sdpa": sdpa_auto, "reference": reference}


def _run_fwd(fn, q, k, v, lens, want_ent):
    with torch.no_grad():
        return fn(q, k, v, lens, want_ent)


def _run_fwd_bwd(fn, q, k, v, lens, want_ent, do):
    out = fn(q, k, v, lens, want_ent)
    out = out[0] if isinstance(out, tuple) else out
    torch.autograd.grad(out, (q, k, v), do)


def _decode_with(backend, q, kc, vc, lens):
    with attention_backend(backend):
        return decode_attention(q, kc, vc, lens)


def _sdpa_unmasked_decode(q, kc, vc):
    return F.scaled_dot_product_attention(q[:, :, None], kc, vc)


def _truth(q, k, v, lens, do):
    """float32 SDPA output, entropy and gradients: what every method's error is measured against."""
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    with attention_backend("sdpa"):
        out, ent = amago_attention(qf, kf, vf, lens, return_entropy=True)
    grads = torch.autograd.grad(out, (qf, kf, vf), do.float())
    return (out.detach(), ent), grads


def _errors(fn, q, k, v, lens, want_ent, do, truth, truth_grads) -> dict:
    """Max abs error of the output (and entropy) and max abs gradient error relative to the largest gradient."""
    out = fn(q, k, v, lens, want_ent)
    ent = out[1] if isinstance(out, tuple) else None
    out = out[0] if isinstance(out, tuple) else out
    grads = torch.autograd.grad(out, (q, k, v), do)
    err = dict(out_err=(out.float() - truth[0]).abs().max().item())
    if ent is not None:
        err["ent_err"] = (ent.float() - truth[1]).abs().max().item()
    err["grad_rel_err"] = max(((g.float() - t).abs().max() / t.abs().max()).item() for g, t in zip(grads, truth_grads))
    return err


def bench_training(device, dtype, shapes, ragged_opts=(False, True)) -> list[dict]:
    rows = []
    for B, H, L, D in shapes:
        for ragged in ragged_opts:
            lens = _lengths(B, L, ragged, device)
            flops = _useful_flops(lens, H, D)
            q, k, v = (torch.randn(B, H, L, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(B, H, L, D, device=device, dtype=dtype)
            truth, truth_grads = _truth(q, k, v, lens, do)
            for name, fn in _methods(device).items():
                for want_ent in ((False, True) if name in ("triton", "amago-sdpa") else (False,)):
                    if name == "reference" and B * H * L * L * 4 * 6 > 8e9:
                        continue  # materialized scores (and their grads) would not fit
                    row = dict(B=B, H=H, L=L, D=D, ragged=ragged, method=name + ("+entropy" if want_ent else ""))
                    try:
                        fwd = functools.partial(_run_fwd, fn, q, k, v, lens, want_ent)
                        fwd_bwd = functools.partial(_run_fwd_bwd, fn, q, k, v, lens, want_ent, do)
                        ms_f = _time_ms(fwd, device)
                        ms_fb = _time_ms(fwd_bwd, device)
                        row.update(fwd_ms=ms_f, fwdbwd_ms=ms_fb, fwd_tflops=flops / ms_f / 1e9,
                                   fwdbwd_tflops=3.5 * flops / ms_fb / 1e9)
                        row.update(_errors(fn, q, k, v, lens, want_ent, do, truth, truth_grads))
                    except Exception as exc:  # one unsupported method must not stop the run
                        row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
                    rows.append(row)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    return rows


def bench_decode(device, dtype, shapes) -> list[dict]:
    rows = []
    for B, H, S, D in shapes:
        lens = _lengths(B, S, True, device)
        q = torch.randn(B, H, D, device=device, dtype=dtype)
        kc, vc = (torch.randn(B, H, S, D, device=device, dtype=dtype) for _ in range(2))
        methods = {}
        if device.type == "cuda":
            methods["triton"] = functools.partial(_decode_with, "triton", q, kc, vc, lens)
        methods["amago-sdpa (masked)"] = functools.partial(_decode_with, "sdpa", q, kc, vc, lens)
        methods["reference"] = functools.partial(_decode_with, "reference", q, kc, vc, lens)
        if device.type == "cuda":
            methods["sdpa, full cache, no mask"] = functools.partial(_sdpa_unmasked_decode, q, kc, vc)
        for name, fn in methods.items():
            row = dict(B=B, H=H, S=S, D=D, method=name)
            try:
                with torch.no_grad():
                    row["us"] = 1e3 * _time_ms(fn, device)
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            rows.append(row)
    return rows


def bench_entropy_cost(device, dtype, shapes) -> list[dict]:
    """CPU path: SDPA alone vs SDPA plus the blocked entropy recompute."""
    rows = []
    for B, H, L, D in shapes:
        q, k, v = (torch.randn(B, H, L, D, device=device, dtype=dtype) for _ in range(3))
        lens = _lengths(B, L, True, device)
        with torch.no_grad():
            ms_out = _time_ms(functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=True), device)
            ms_ent = _time_ms(functools.partial(attention_entropy, q, k, lens, True), device)
        rows.append(dict(B=B, H=H, L=L, D=D, sdpa_ms=ms_out, entropy_ms=ms_ent))
    return rows


_SMOKE = r"""
import torch
from amago_sb.kernels import attention, attention_backend, attention_reference, decode_attention, decode_attention_reference
torch.manual_seed(0)
q, k, v = (torch.randn(2, 2, 40, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
lens = torch.tensor([40, 17])
ref, ref_ent = attention_reference(q, k, v, lens, True, return_entropy=True)
with attention_backend("triton"):
    out, ent = attention(q.float(), k.float(), v.float(), lens, return_entropy=True)
    dec = decode_attention(q[:, :, 10].float().detach(), k.float().detach(), v.float().detach(), torch.tensor([11, 11]))
g = torch.autograd.grad(out.sum(), (q, k, v)); rg = torch.autograd.grad(ref.sum(), (q, k, v))
print("fwd", (out.double() - ref).abs().max().item(), "entropy", (ent.double() - ref_ent).abs().max().item(),
      "grads", max((a.double() - b).abs().max().item() for a, b in zip(g, rg)),
      "decode", (dec.double() - ref[:, :, 10]).abs().max().item())
"""


def interpreter_smoke() -> str:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", _SMOKE], env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return f"FAILED: {res.stderr[-500:]}"
    return res.stdout.strip()


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return str(x)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [fmt(r[c]) if c in r else (r["error"] if "error" in r and c == cols[-1] else "") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU by default")
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--no-smoke", action="store_true", help="skip the interpreter correctness smoke test")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        train_shapes = [(32, 8, 256, 64), (16, 8, 1024, 64), (8, 4, 4096, 64), (16, 8, 1024, 32), (16, 8, 1024, 128),
                        (64, 4, 512, 32)]
        decode_shapes = [(1, 8, 1024, 64), (8, 8, 1024, 64), (64, 8, 1024, 64), (8, 8, 4096, 64), (64, 4, 4096, 32)]
        if args.quick:
            train_shapes, decode_shapes = train_shapes[:2], decode_shapes[:3]
    else:
        name = platform.processor() or platform.machine()
        train_shapes = [(8, 4, 128, 32), (8, 4, 256, 32)] if not args.quick else [(8, 4, 128, 32)]
        decode_shapes = [(8, 4, 256, 32), (64, 4, 512, 32)]
    header = (f"# attention benchmark\n\ndevice: {name} ({device.type}), torch {torch.__version__}, dtype "
              f"{str(dtype).replace('torch.', '')}, threads {torch.get_num_threads()}, "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n")
    print(header, flush=True)
    out = [header]
    train = bench_training(device, dtype, train_shapes)
    t = _table(train, ["B", "H", "L", "D", "ragged", "method", "fwd_ms", "fwd_tflops", "fwdbwd_ms", "fwdbwd_tflops",
                       "out_err", "ent_err", "grad_rel_err"])
    print("## training (causal)\n\n" + t + "\n", flush=True)
    out.append("## training (causal)\n\n" + t + "\n")
    dec = bench_decode(device, dtype, decode_shapes)
    t = _table(dec, ["B", "H", "S", "D", "method", "us"])
    print("## decode (one query, ragged cache lengths in [S/4, S])\n\n" + t + "\n", flush=True)
    out.append("## decode (one query, ragged cache lengths in [S/4, S])\n\n" + t + "\n")
    if device.type == "cpu":
        ent = bench_entropy_cost(device, dtype, train_shapes)
        t = _table(ent, ["B", "H", "L", "D", "sdpa_ms", "entropy_ms"])
        print("## entropy on the CPU path (no-grad blocked recompute)\n\n" + t + "\n", flush=True)
        out.append("## entropy on the CPU path\n\n" + t + "\n")
        if not args.no_smoke:
            smoke = interpreter_smoke()
            print(f"## Triton interpreter smoke (B2 H2 L40 D16, fp32 vs fp64 reference, max abs error)\n\n{smoke}\n")
            out.append(f"## Triton interpreter smoke\n\n{smoke}\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
