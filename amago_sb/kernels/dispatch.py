"""Backend choice for ``attention`` / ``decode_attention``: Triton on CUDA, SDPA elsewhere, or a forced one.

Order of precedence: ``with attention_backend(name):`` (innermost wins), then the environment variable
``AMAGO_ATTENTION`` (read at each call), then ``"auto"``. Names:

* ``"auto"``: ``"triton"`` for CUDA tensors of fp32/fp16/bf16 with head_dim <= 128 when Triton imports,
  ``"sdpa"`` otherwise (CPU, fp64, larger heads, no Triton).
* ``"triton"``: the Triton kernels; raises if they cannot run on these inputs. CPU tensors need
  ``TRITON_INTERPRET=1`` (set before Triton is imported: slow, meant for tests).
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``; entropy from a no-grad blocked recompute.
* ``"reference"``: materialized softmax in plain PyTorch (differentiable entropy; for tests and debugging).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

__all__ = ["BACKENDS", "attention_backend", "resolve_backend", "requested_backend", "triton_available"]

BACKENDS = ("auto", "triton", "sdpa", "reference")
ENV_VAR = "AMAGO_ATTENTION"
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("amago_attention_backend", default=None)
_triton_error: list[str] = []


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r} from {source}; choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block (thread- and task-local).

    >>> import torch
    >>> from amago_sb.kernels import attention_backend, resolve_backend
    >>> with attention_backend("reference"):
    ...     resolve_backend(torch.zeros(1, 1, 4, 16))
    'reference'
    """
    token = _forced.set(_check_name(name, "attention_backend()"))
    try:
        yield
    finally:
        _forced.reset(token)


def requested_backend() -> str:
    """The backend asked for by the innermost ``attention_backend`` block, else ``$AMAGO_ATTENTION``, else auto."""
    forced = _forced.get()
    if forced is not None:
        return forced
    env = os.environ.get(ENV_VAR, "").strip().lower()
    return _check_name(env, f"${ENV_VAR}") if env else "auto"


def triton_available() -> bool:
    """Whether the Triton kernels import (Triton installed and working)."""
    if _triton_error:
        return False
    try:
        from . import triton_attention, triton_decode  # noqa: F401
    except Exception as exc:  # ImportError, or a broken Triton install
        _triton_error.append(f"{type(exc).__name__}: {exc}")
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_problem(x: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run on x, or None."""
    from .triton_attention import MAX_HEAD_DIM

    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"the Triton kernels support float32, float16 and bfloat16, got {x.dtype}"
    if x.shape[-1] > MAX_HEAD_DIM:
        return f"the Triton kernels support head_dim up to {MAX_HEAD_DIM}, got {x.shape[-1]}; use more heads"
    if x.device.type != "cuda" and not _interpreting():
        return (f"the Triton kernels need CUDA tensors, got {x.device}; set TRITON_INTERPRET=1 before importing "
                "triton to run them (slowly) on CPU, or use the sdpa backend")
    return None


def resolve_backend(x: torch.Tensor) -> str:
    """The backend (``"triton"``, ``"sdpa"`` or ``"reference"``) that a call on ``x`` uses now.

    ``x`` is q (or the decode query): its device, dtype and head_dim decide. Raises if a forced Triton
    backend cannot run on it.
    """
    name = requested_backend()
    if name == "auto":
        if x.device.type == "cuda" and triton_available() and _triton_problem(x) is None:
            return "triton"
        return "sdpa"
    if name == "triton":
        if not triton_available():
            raise RuntimeError(f"attention backend 'triton' was forced but Triton does not import: {_triton_error[0]}")
        problem = _triton_problem(x)
        if problem is not None:
            kind = TypeError if "support float32" in problem else ValueError if "head_dim" in problem else RuntimeError
            raise kind(f"attention backend 'triton' was forced but {problem}")
    return name
