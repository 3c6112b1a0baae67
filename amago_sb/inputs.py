"""Checks of what users hand to ``predict`` (observations, ``episode_start``, ``state``), before any context is written.

A wrong shape, an id outside its ``Discrete`` space or a NaN would otherwise be written into an env's KV cache and
poison every later step of that env (even after ``episode_start``), so each raises a ``ValueError`` that names the
argument, what was expected and what came.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from wrappers.spaces import shape_of

__all__ = ["check_episode_start", "check_number", "check_observation", "check_state", "integer_bounds"]


def integer_bounds(space: spaces.Space) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` inclusive id bounds of a Discrete / MultiDiscrete / MultiBinary space (None for others)."""
    if isinstance(space, spaces.Discrete):
        return np.asarray(space.start), np.asarray(space.start + space.n - 1)
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(space.start), np.asarray(space.start + space.nvec - 1)
    if isinstance(space, spaces.MultiBinary):
        return np.zeros(space.shape, np.int64), np.ones(space.shape, np.int64)
    return None


def check_observation(key: str, arr: np.ndarray, space: spaces.Space, batch: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``arr`` has shape ``(*batch, *space.shape)``, finite floats and in-space ids."""
    expected = (*batch, *shape_of(space))
    if arr.shape != expected:
        raise ValueError(f"predict(observation): key {key!r} has shape {arr.shape}, expected {expected} "
                         f"({'one row per env, ' if batch else ''}space {space}).")
    bounds = integer_bounds(space)
    if bounds is not None:
        low, high = bounds
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"predict(observation): key {key!r} must hold integer ids of {space}, got {arr!r}.")
        bad = (arr < low) | (arr > high)
        if bad.any():
            raise ValueError(f"predict(observation): key {key!r} holds {arr[bad].reshape(-1)[:4].tolist()} outside "
                             f"its space {space} (ids from {low.min()} to {high.max()}).")
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"predict(observation): key {key!r} holds NaN or inf; it would be written into this env's "
                         "context. Fix the env (or replace non-finite values in an ObservationWrapper).")


def check_episode_start(episode_start: Any, n: int) -> np.ndarray:
    """``episode_start`` as a ``(n,)`` bool array; ``ValueError`` for another length or non-boolean values."""
    arr = np.asarray(episode_start)
    if arr.dtype.kind not in "biuf" or arr.size != n:
        raise ValueError(f"predict(episode_start): expected {n} booleans (one per env), got {episode_start!r}.")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"predict(episode_start): values must be 0/1 or booleans, got {episode_start!r}.")
    return arr.reshape(n).astype(bool)


def _tensors(state: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        out.extend(v if isinstance(v, list) else [v] if isinstance(v, torch.Tensor) else [])
    return out


def check_state(state: Any, template: Any, n: int) -> None:
    """Raise ``ValueError`` unless ``state`` is a context of this model for ``n`` envs.

    ``template`` is this model's empty context for one env: the state must be of its type and every tensor must have
    its shape, with ``n`` where the template has its batch dimension.
    """
    if type(state) is not type(template) or not dataclasses.is_dataclass(state):
        raise ValueError(f"predict(state): got a {type(state).__name__}, but this model's context is a "
                         f"{type(template).__name__} (a state from another model or encoder?); pass state=None.")
    mine, theirs = _tensors(template), _tensors(state)
    ok = len(mine) == len(theirs) and all(
        t.dim() == m.dim() and all(ts == ms or (ms == 1 and ts == n) for ts, ms in zip(t.shape, m.shape))
        for t, m in zip(theirs, mine))
    if not ok:
        got = [tuple(t.shape) for t in theirs][:3]
        raise ValueError(f"predict(state): the context does not fit this model for {n} envs (tensor shapes {got}...; "
                         "a state from another model, or for another number of envs?); pass state=None.")
    if getattr(state, "batch", n) != n:
        raise ValueError(f"predict(state): the context is for {getattr(state, 'batch', '?')} envs but the observation "
                         f"has {n}; pass state=None to start fresh contexts.")


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False, allow_none: bool = False) -> Any:
    """``value`` if it is a real number (an integral one with ``integer``) in ``[low, high]`` (``(low, high]`` with
    ``low_open``), else ``TypeError`` / ``ValueError`` naming ``name``, the value and the allowed range."""
    if value is None and allow_none:
        return None
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if integer and ok_type and not float(value).is_integer():
        ok_type = False
    if not ok_type:
        raise TypeError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r} "
                        f"({type(value).__name__}).")
    v = int(value) if integer else float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    bad_low = low is not None and (v <= low if low_open else v < low)
    if bad_low or (high is not None and v > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{lo}, {hi}]{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return v
