"""Registration of every env id the project ships, and :func:`make_env` (ids or instances -> trajectory form)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from wrappers.trajectory_wrapper import ensure_trajectory_env

__all__ = ["make_env", "register_all"]

_REGISTERED = False


def register_all() -> None:
    """Register POPGym, Crafter and the toy envs with gymnasium (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from wrappers.envs import register_envs
    from wrappers.envs.popgym_adapter import register_popgym

    register_popgym()
    register_envs()
    _REGISTERED = True


def make_env(env_id_or_env: str | gym.Env, **kwargs: Any) -> gym.Env:
    """Return ``env_id_or_env`` in trajectory form.

    Args:
        env_id_or_env: a gymnasium id (any registered id, including ``popgym-*``, ``Crafter*`` and the toy envs)
            or an env instance.
        **kwargs: passed to ``gymnasium.make`` for ids; not allowed with an instance.
    """
    if isinstance(env_id_or_env, str):
        register_all()
        env = gym.make(env_id_or_env, **kwargs)
    elif isinstance(env_id_or_env, gym.Env):
        if kwargs:
            raise TypeError(
                f"make_env got keyword arguments {sorted(kwargs)} with an env instance; pass them to its constructor."
            )
        env = env_id_or_env
    else:
        raise TypeError(f"make_env expects a gymnasium id (str) or a gymnasium.Env, got {type(env_id_or_env).__name__}.")
    return ensure_trajectory_env(env)
