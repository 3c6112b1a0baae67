"""Input validation shared by every attention backend (clear errors instead of wrong numbers)."""

from __future__ import annotations

import weakref

import torch

__all__ = ["check_attention_inputs", "check_decode_inputs", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# the last lengths tensor that passed the range check: id -> (weakref, (version, max_len), int32 copy)
_last_checked: dict[int, tuple[weakref.ref, tuple[int, int], torch.Tensor]] = {}


def _check_floats(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        got = ", ".join(f"{n}={t.dtype}" for n, t in zip(names, tensors))
        raise TypeError(f"attention inputs must share one dtype, got {got}; cast them with .to(q.dtype)")
    dtype = tensors[0].dtype
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"attention needs floating inputs (float32, float16, bfloat16, float64), got {dtype}")
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        got = ", ".join(f"{n} on {t.device}" for n, t in zip(names, tensors))
        raise ValueError(f"attention inputs must be on one device, got {got}; move them with .to(q.device)")


def _check_lengths(lengths: torch.Tensor, batch: int, max_len: int, device: torch.device, what: str) -> torch.Tensor:
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a torch.Tensor of shape ({batch},), got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers (e.g. torch.int64), got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one length per sequence), got {tuple(lengths.shape)}")
    if lengths.device != device:
        raise ValueError(f"lengths is on {lengths.device} but the inputs are on {device}; move it with .to({device})")
    cached = _last_checked.get(id(lengths))
    if cached is not None and cached[0]() is lengths and cached[1] == (lengths._version, max_len):
        return cached[2]  # the same unmodified tensor (e.g. every layer of one forward pass): no new host sync
    if batch and bool(((lengths < 0) | (lengths > max_len)).any()):  # one host sync
        raise ValueError(
            f"lengths must lie in [0, {max_len}] ({what}), got min {int(lengths.min())} max {int(lengths.max())}"
        )
    lens32 = lengths.to(torch.int32).contiguous()
    _last_checked.clear()
    _last_checked[id(lengths)] = (weakref.ref(lengths), (lengths._version, max_len), lens32)
    return lens32


def check_attention_inputs(q, k, v, lengths) -> torch.Tensor | None:
    """Validate ``attention`` inputs; returns lengths as contiguous int32 (or None).

    Raises:
        TypeError: non-tensors, mixed or non-float dtypes, non-integer lengths.
        ValueError: shapes that are not (B, H, L, D) and equal, mixed devices, lengths out of range.
    """
    _check_floats(("q", "k", "v"), (q, k, v))
    if q.dim() != 4:
        raise ValueError(f"q must have shape (batch, heads, seq, head_dim), got {q.dim()} dims: {tuple(q.shape)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must have the same shape (batch, heads, seq, head_dim), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}; for one new query against a cache use decode_attention"
        )
    if q.shape[-1] == 0 or q.shape[-2] == 0:
        raise ValueError(f"seq and head_dim must be positive, got q of shape {tuple(q.shape)}")
    if lengths is None:
        return None
    return _check_lengths(lengths, q.shape[0], q.shape[2], q.device, "valid steps per sequence, padding at the end")


def check_decode_inputs(q, k_cache, v_cache, lengths) -> torch.Tensor:
    """Validate ``decode_attention`` inputs; returns lengths as contiguous int32."""
    _check_floats(("q", "k_cache", "v_cache"), (q, k_cache, v_cache))
    if q.dim() != 3:
        raise ValueError(f"q must have shape (batch, heads, head_dim) (one new query), got {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must have the same shape (batch, heads, cache_len, head_dim), got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    B, H, S, D = k_cache.shape
    if S == 0 or D == 0:
        raise ValueError(f"cache_len and head_dim must be positive, got a cache of shape {tuple(k_cache.shape)}")
    if (B, H, D) != tuple(q.shape):
        raise ValueError(f"q {tuple(q.shape)} does not match the cache {tuple(k_cache.shape)}: expected ({B}, {H}, {D})")
    if lengths is None:
        raise ValueError("decode_attention needs lengths (valid cache entries per sequence, the new token included)")
    return _check_lengths(lengths, B, S, q.device, "valid cache entries per sequence")
