"""The algorithms the zoo runs, and building a model from resolved hyperparameters.

``amago`` is ``amago_sb.AMAGO``; ``ppo`` is SB3's PPO; ``recurrent_ppo`` is sb3-contrib's RecurrentPPO.
Classes are imported lazily so that ``--help`` and the baselines work even where AMAGO cannot be imported.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from zoo.hyperparams import SPECIAL_KEYS, check_constructor_kwargs

__all__ = ["ALGOS", "check_algo", "check_hyperparams", "get_algo_class", "build_model", "constructor_keys"]

ALGOS: dict[str, str] = {
    "amago": "amago_sb:AMAGO",
    "ppo": "stable_baselines3:PPO",
    "recurrent_ppo": "sb3_contrib:RecurrentPPO",
}
RECURRENT_ALGOS = ("amago", "recurrent_ppo")


def check_algo(algo: str) -> str:
    """Return ``algo`` if known, else raise ``ValueError`` with close matches."""
    if algo in ALGOS:
        return algo
    close = difflib.get_close_matches(algo.lower(), list(ALGOS), n=2, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown algo {algo!r}.{hint} Available: {', '.join(ALGOS)}.")


def get_algo_class(algo: str) -> type[BaseAlgorithm]:
    """Import and return the class of ``algo`` (``ImportError`` with the reason if it cannot be imported)."""
    module_name, cls_name = ALGOS[check_algo(algo)].split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"Cannot use algo {algo!r}: importing {module_name}.{cls_name} failed ({err}).") from err


# Constructor arguments that the CLI sets from its own flags (--seed, --device...), not from the yml.
_CLI_KEYS = ("self", "policy", "env", "seed", "tensorboard_log", "verbose", "device", "_init_setup_model")


def constructor_keys(cls: type) -> list[str]:
    """Hyperparameters ``cls.__init__`` accepts from a yml entry (not ``policy``/``env`` or the CLI-set ones)."""
    params = inspect.signature(cls.__init__).parameters
    return [k for k, p in params.items() if k not in _CLI_KEYS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def check_hyperparams(algo: str, hyperparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` if a hyperparameter is not a constructor argument of ``algo``, or a ``policy_kwargs`` key
    not one of its policy's (close matches named)."""
    cls = get_algo_class(algo)
    check_constructor_kwargs(algo, hyperparams, constructor_keys(cls))
    policy, policy_kwargs = hyperparams.get("policy"), hyperparams.get("policy_kwargs") or {}
    policy_cls = cls.policy_aliases.get(policy) if isinstance(policy, str) else policy
    if not isinstance(policy_cls, type) or not policy_kwargs:
        return
    params = inspect.signature(policy_cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k in params if k not in ("self", "observation_space", "action_space", "lr_schedule")]
    unknown = [k for k in policy_kwargs if k not in valid]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {', '.join(c)}?)" if (c := difflib.get_close_matches(k, valid, n=3))
                             else "") for k in unknown]
        raise ValueError(f"Unknown policy_kwargs for {algo} ({policy_cls.__name__}): {'; '.join(hints)}. "
                         f"Valid keys: {', '.join(valid)}.")


def build_model(
    algo: str,
    env: VecEnv,
    hyperparams: dict[str, Any],
    *,
    seed: int | None = None,
    tensorboard_log: str | None = None,
    verbose: int = 0,
    device: str = "auto",
) -> BaseAlgorithm:
    """Construct ``algo`` on ``env`` from converted hyperparameters (the zoo's own keys, ``SPECIAL_KEYS``, dropped).

    Raises:
        ValueError: a hyperparameter is not an argument of the algorithm's constructor (close matches named).
    """
    cls = get_algo_class(algo)
    kwargs = {k: v for k, v in hyperparams.items() if k not in SPECIAL_KEYS or k == "policy"}
    policy = kwargs.pop("policy", None)
    if policy is None:
        raise ValueError(
            f"No 'policy' in the {algo} hyperparameters; set one in zoo/hyperparams/{algo}.yml or -params policy:X."
        )
    valid = constructor_keys(cls)
    check_constructor_kwargs(algo, kwargs, valid)
    if "n_envs" in valid:  # AMAGO accepts n_envs (it may build envs itself); pass the real one for consistency
        kwargs["n_envs"] = env.num_envs
    return cls(policy, env, seed=seed, tensorboard_log=tensorboard_log, verbose=verbose, device=device, **kwargs)
