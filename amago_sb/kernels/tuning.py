"""Tile sizes, warps and pipeline stages of the attention kernels, chosen per head_dim and dtype.

The defaults are fixed heuristics (no autotuning at import or in tests). ``AMAGO_ATTENTION_AUTOTUNE=1``
switches the training kernels to ``triton.autotune`` over ``attention_configs`` (keyed on sequence length,
head_dim and causality; the first call per key then times every config).

Under ``TRITON_INTERPRET=1`` small tiles are used (query tiles twice the key tiles, so tests cover
diagonals that span several key tiles).
"""

from __future__ import annotations

import functools
import os

import torch
import triton

__all__ = ["fwd_config", "bwd_config", "decode_config", "attention_configs", "autotune_enabled"]

_INTERPRET_TILES = {"fwd": (32, 16), "dkdv": (16, 32), "dq": (32, 16)}  # (BLOCK_M, BLOCK_N)


def autotune_enabled() -> bool:
    return os.environ.get("AMAGO_ATTENTION_AUTOTUNE", "0") not in ("", "0")


@functools.lru_cache(maxsize=8)
def _smem_budget(device_index: int) -> int:
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", 99 * 1024))


def _budget() -> int:
    if not torch.cuda.is_available():
        return 99 * 1024
    return _smem_budget(torch.cuda.current_device())


def _fit_stages(tile_bytes_per_stage: int, fixed_bytes: int, stages: int) -> int:
    budget = _budget() - 8 * 1024  # room for reductions / layout conversions
    while stages > 1 and fixed_bytes + stages * tile_bytes_per_stage > budget:
        stages -= 1
    return stages


def _short(L: int, tile: int) -> int:
    """Shrink a tile for short sequences (no less than 16, the tensor-core minimum)."""
    return max(16, min(tile, triton.next_power_of_2(max(L, 1))))


def fwd_config(d_pad: int, elem: int, L: int, interpret: bool = False) -> dict:
    """BLOCK_M, BLOCK_N, num_warps, num_stages of the forward kernel.

    fp16/bf16: 128x64 tiles, 8 warps (4 warps sit at the 255-register ceiling and spill without causality).
    fp32 runs 3xTF32 (or TF32) dots, which need about three times the registers: smaller tiles.
    """
    if interpret:
        bm, bn = _INTERPRET_TILES["fwd"]
        return dict(BLOCK_M=bm, BLOCK_N=bn)
    if elem >= 4:
        bm, bn, warps = (32, 32, 8) if d_pad >= 128 else (64, 32, 4)
    else:
        bm, bn, warps = 128, 64, 8
    bm, bn = _short(L, bm), _short(L, bn)
    stages = _fit_stages(2 * bn * d_pad * elem, bm * d_pad * elem, 3)
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)


def bwd_config(d_pad: int, elem: int, L: int, kernel: str, interpret: bool = False) -> dict:
    """Tiles of the backward kernels: ``dkdv`` keeps a key tile (BLOCK_N) resident, ``dq`` a query tile."""
    if interpret:
        bm, bn = _INTERPRET_TILES[kernel]
        return dict(BLOCK_M=bm, BLOCK_N=bn)
    if kernel == "dkdv":
        if elem >= 4:
            bm, bn = (16, 16) if d_pad >= 128 else (16, 32) if d_pad >= 32 else (32, 32)
            warps = 4
        else:
            (bm, bn), warps = ((32, 64) if d_pad >= 128 else (32, 128)), 8
        resident, streamed = 2 * bn * d_pad * elem, 2 * bm * d_pad * elem  # K, V resident; Q, dO streamed
    else:
        if elem >= 4:
            (bm, bn), warps = ((16, 32) if d_pad >= 128 else (32, 32) if d_pad >= 64 else (64, 32)), 4
        else:
            (bm, bn), warps = ((64, 32) if d_pad >= 128 else (128, 32)), 8
        resident, streamed = 2 * bm * d_pad * elem, 2 * bn * d_pad * elem  # Q, dO resident; K, V streamed
    bm, bn = _short(L, bm), _short(L, bn)
    stages = _fit_stages(streamed, resident, 3)
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)


def decode_config(d_pad: int, elem: int, interpret: bool = False) -> dict:
    """Key tile, warps and stages of the decode kernel (one query: bandwidth bound, no tensor cores)."""
    if interpret:
        return dict(BLOCK_N=16)
    return dict(BLOCK_N=64 if d_pad <= 64 else 32, num_warps=4, num_stages=3)


def attention_configs(kernel: str, d_pad: int) -> list[triton.Config]:
    """Autotuning space of one training kernel for one padded head_dim (used only when autotuning is on)."""
    configs = []
    if kernel == "fwd":
        tiles = [(128, 64), (128, 128), (64, 64), (128, 32), (64, 32)]
    elif kernel == "dkdv":
        tiles = [(32, 128), (32, 64), (64, 128), (64, 64), (16, 64)]
    else:
        tiles = [(128, 32), (64, 32), (128, 64), (64, 64), (64, 16)]
    for bm, bn in tiles:
        if d_pad >= 128 and bm * bn > 128 * 64:
            continue
        for warps in (4, 8):
            for stages in (2, 3, 4):
                configs.append(triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn), num_warps=warps, num_stages=stages))
    return configs
