"""Hyperparameter files and ``key:value`` overrides, in rl-baselines3-zoo's conventions.

``zoo/hyperparams/<algo>.yml`` maps env ids to keyword arguments of the algorithm's constructor, with a
``default`` section that every entry is merged over (rl-zoo has no default section; we add one so that the
per-env entries only say what differs). A few keys are not constructor arguments:

* ``n_timesteps``: training budget used when ``-n`` is not given;
* ``n_envs``: number of parallel envs (``DummyVecEnv``);
* ``policy``: policy name (``MlpPolicy``, ``MlpLstmPolicy``, ``Transformer``, ...);
* ``env_kwargs``: keyword arguments of the env (``gymnasium.make(env_id, **env_kwargs)``), e.g. the T-maze's corridor
  length; ``--env-kwargs key:value`` on the command line overrides single keys (rl-zoo has only the CLI form).

Values that rl-zoo writes as strings keep its meaning: ``lin_3e-4`` is a linear schedule from 3e-4 to 0 (for
``learning_rate``, ``clip_range``...), and ``policy_kwargs`` is a YAML mapping whose ``activation_fn`` may name
a ``torch.nn`` activation (``tanh``, ``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``silu``). Keys ending in ``_class``
(``exploration_class``, ``replay_buffer_class``...) may name a class as ``"module:Name"``, which is imported only from
the trusted packages (``amago_sb``, ``wrappers``, ``zoo``, ``torch.nn``, SB3...; ``--trust-imports`` lifts the limit).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from amago_sb.serialization import import_trusted

__all__ = [
    "HYPERPARAMS_DIR",
    "SPECIAL_KEYS",
    "load_hyperparams",
    "parse_overrides",
    "resolve_hyperparams",
    "resolve_env_kwargs",
    "linear_schedule",
    "convert_value",
    "check_constructor_kwargs",
]

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
# Keys of a yml entry that the zoo consumes itself (not passed to the algorithm's constructor).
SPECIAL_KEYS = ("n_timesteps", "n_envs", "policy", "env_kwargs", "env_wrapper", "vec_env_wrapper", "frame_stack", "normalize",
                "callback", "monitor_kwargs")
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
_ACTIVATIONS = {
    "tanh": "Tanh",
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
}


def load_hyperparams(algo: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Read ``zoo/hyperparams/<algo>.yml`` (or ``path``) into ``{env_id or "default": {key: value}}``."""
    file = Path(path) if path is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    if not file.is_file():
        raise FileNotFoundError(f"No hyperparameter file for algo {algo!r}: {file} does not exist.")
    with open(file) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ValueError(f"{file} must map env ids (and 'default') to mappings of hyperparameters.")
    return {str(k): _numbers(dict(v or {})) for k, v in data.items()}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse rl-zoo style ``-params key:value`` overrides; values are YAML (``lr:1e-3``, ``net:[64, 64]``).

    Numbers in exponent form without a dot (``1e-3``, which YAML 1.1 reads as a string) become floats.

    Raises:
        ValueError: an item has no ``:`` or an empty key, or its value is not valid YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"Malformed hyperparameter override {item!r}: expected key:value, e.g. learning_rate:3e-4 or "
                'policy_kwargs:"{net_arch: [64, 64]}".'
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"Malformed value in hyperparameter override {item!r}: not valid YAML ({err}).") from err
        out[key] = _numbers(value)
    return out


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; turn such strings into floats, recursively."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def linear_schedule(initial_value: float) -> Callable[[float], float]:
    """SB3 schedule ``progress_remaining -> progress_remaining * initial_value`` (1 at start, 0 at the end)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial_value

    return schedule


def convert_value(key: str, value: Any, trust_imports: bool = False) -> Any:
    """Turn rl-zoo string forms into objects: ``lin_X`` schedules, ``*_class`` names and ``policy_kwargs`` activation
    names. A ``*_class`` is imported only from ``amago_sb.serialization.TRUSTED_MODULES`` unless ``trust_imports``."""
    if key in _SCHEDULE_KEYS and isinstance(value, str):
        if not value.startswith("lin_"):
            raise ValueError(f"Hyperparameter {key}={value!r}: expected a number or a schedule like 'lin_3e-4'.")
        try:
            return linear_schedule(float(value[len("lin_") :]))
        except ValueError as err:
            raise ValueError(f"Hyperparameter {key}={value!r}: 'lin_' must be followed by a number.") from err
    if key.endswith("_class") and isinstance(value, str):
        cls = import_trusted(value, f"Hyperparameter {key}", allow_any=trust_imports)
        if not isinstance(cls, type):
            raise ValueError(f"Hyperparameter {key}={value!r} is not a class.")
        return cls
    if key == "policy_kwargs":
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(
                f'policy_kwargs must be a mapping, got {value!r}; write it as YAML, e.g. policy_kwargs:"{{net_arch: [64]}}".'
            )
        value = dict(value)
        act = value.get("activation_fn")
        if isinstance(act, str):
            if act not in _ACTIVATIONS:
                raise ValueError(f"policy_kwargs.activation_fn={act!r} is unknown; use one of {sorted(_ACTIVATIONS)}.")
            import torch.nn as nn

            value["activation_fn"] = getattr(nn, _ACTIVATIONS[act])
    return value


def resolve_hyperparams(
    algo: str,
    env_id: str,
    overrides: dict[str, Any] | None = None,
    table: dict[str, dict[str, Any]] | None = None,
    trust_imports: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``default``, the env's entry and ``overrides`` (later wins); ``trust_imports``: see :func:`convert_value`.

    Returns:
        ``(raw, converted)``: ``raw`` is the plain merged mapping (what goes into ``config.yml``);
        ``converted`` has schedules and activation classes ready for the constructor.
    """
    table = load_hyperparams(algo) if table is None else table
    raw: dict[str, Any] = copy.deepcopy(table.get("default", {}))
    raw.update(copy.deepcopy(table.get(env_id, {})))
    for key, value in (overrides or {}).items():
        if key == "policy_kwargs" and isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}  # merge so that one policy kwarg can be changed alone
        else:
            raw[key] = value
    converted = {k: convert_value(k, v, trust_imports) for k, v in raw.items()}
    return raw, converted


def resolve_env_kwargs(algo: str, env_id: str, raw: dict[str, Any] | None = None,
                       cli: dict[str, Any] | None = None) -> dict[str, Any]:
    """The env's keyword arguments: ``env_kwargs`` of the merged yml entry ``raw`` (default: read it for
    ``algo``/``env_id``), then the ``--env-kwargs`` items ``cli`` (later wins).

    Raises:
        ValueError: ``env_kwargs`` in the yml is not a mapping.
    """
    if raw is None:
        raw, _ = resolve_hyperparams(algo, env_id)
    from_yml = raw.get("env_kwargs") or {}
    if not isinstance(from_yml, dict):
        raise ValueError(f"env_kwargs of {env_id!r} in zoo/hyperparams/{algo}.yml must be a mapping, got {from_yml!r}.")
    return {**from_yml, **(cli or {})}


def check_constructor_kwargs(algo: str, kwargs: dict[str, Any], valid: list[str]) -> None:
    """Raise ``ValueError`` naming unknown hyperparameters of ``algo``, with close matches from ``valid``."""
    unknown = [k for k in kwargs if k not in valid and k not in SPECIAL_KEYS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, valid + list(SPECIAL_KEYS), n=3)
            hints.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        keys = ", ".join(sorted(valid + list(SPECIAL_KEYS)))
        raise ValueError(f"Unknown hyperparameter(s) for {algo}: {'; '.join(hints)}. Valid keys: {keys}.")
