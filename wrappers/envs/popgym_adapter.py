"""POPGym adapters: every class in ``popgym.envs.ALL`` as a gymnasium id ``popgym-<ClassName>-v0``.

``gymnasium.make("popgym-X-v0")`` returns the plain env, as for every id of the project that has one (``AMAGO`` and
``wrappers.make_env`` put it in trajectory form); ``trajectory=True`` returns the trajectory form
(``TrajectoryWrapper``, ``time`` normalized by the env's maximum episode length). In both cases
:class:`PopgymAdapter` first turns ``Tuple`` observations (e.g. ``AutoencodeEasy``) into a
``Dict`` with keys ``"0", "1", ...`` and exposes ``max_episode_length`` for every env (POPGym names it
``episode_length`` in Concentration and leaves it implicit in HigherLower, whose episode lasts one deck).

Episode ends: POPGym's games have a fixed length that is part of the task (the agent sees ``time``), so the adapter
declares ``fixed_horizon = True`` and every trajectory form of it (``TrajectoryWrapper``, ``VecTrajectoryWrapper``,
``trajectory=True``) reports the end of that length as a termination (``truncated_is_done=True``, as the original
AMAGO treats POPGym's horizons); pass ``truncated_is_done=False`` to bootstrap through it instead. The plain env
(for SB3 baselines) is POPGym's own: truncated, which SB3 bootstraps.

Importing ``popgym`` registers its own ``popgym-*`` ids; :func:`register_popgym` replaces them with ours.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import gymnasium as gym
from gymnasium import spaces

__all__ = ["PopgymAdapter", "make_popgym", "register_popgym", "popgym_env_ids"]


def _popgym_classes() -> dict[str, type]:
    import popgym.envs

    return {cls.__name__: cls for cls in popgym.envs.ALL}


class PopgymAdapter(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Tuple observations -> ``Dict({"0": ..., "1": ...})``; sets ``max_episode_length`` (int or None); copies infos."""

    #: the episode length is part of the task: trajectory forms end it as a termination (module docstring)
    fixed_horizon = True

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        self._is_tuple = isinstance(space, spaces.Tuple)
        if self._is_tuple:
            self.observation_space = spaces.Dict({str(i): sub for i, sub in enumerate(cast(spaces.Tuple, space).spaces)})
        inner = env.unwrapped
        length = getattr(inner, "max_episode_length", None) or getattr(inner, "episode_length", None)
        if length is None and hasattr(inner, "deck_size"):
            length = int(inner.deck_size)
        self.max_episode_length: int | None = int(length) if length else None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset; the info is a fresh copy (some popgym envs return the same dict on every call)."""
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observation(obs), copy.deepcopy(info)

    def step(self, action):
        """Step; the info is a fresh copy (see :meth:`reset`)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, copy.deepcopy(info)

    def observation(self, observation: Any) -> Any:
        """Convert a tuple observation into the ``Dict`` form; other observations pass through."""
        if self._is_tuple:
            return {str(i): value for i, value in enumerate(observation)}
        return observation


def make_popgym(name: str, trajectory: bool = False, truncated_is_done: bool = True, **kwargs: Any) -> gym.Env:
    """Build POPGym env class ``name`` (e.g. ``"RepeatPreviousEasy"``), adapted; plain by default. In trajectory form
    the end of the game's fixed length is a termination unless ``truncated_is_done=False`` (module docstring)."""
    classes = _popgym_classes()
    if name not in classes:
        raise ValueError(f"Unknown POPGym env {name!r}; available: {sorted(classes)}.")
    adapted = PopgymAdapter(classes[name](**kwargs))
    if not trajectory:
        return adapted
    from wrappers.trajectory_wrapper import TrajectoryWrapper

    return TrajectoryWrapper(adapted, max_episode_steps=adapted.max_episode_length, truncated_is_done=truncated_is_done)


def popgym_env_ids() -> list[str]:
    """All ids registered by :func:`register_popgym`, in ``popgym.envs.ALL`` order."""
    return [f"popgym-{name}-v0" for name in _popgym_classes()]


def register_popgym() -> None:
    """Register (or re-register over popgym's own) ``popgym-<ClassName>-v0`` for every POPGym env."""
    ours = {}
    for name in _popgym_classes():
        env_id = f"popgym-{name}-v0"
        gym.registry.pop(env_id, None)
        gym.register(id=env_id, entry_point="wrappers.envs.popgym_adapter:make_popgym", kwargs={"name": name})
        ours[env_id.lower()] = name
    # popgym registers some ids with another spelling than its class (``VelocityOnlyCartpole*`` for the class
    # ``VelocityOnlyCartPole``): those ids get our adapter too, so both spellings give the same env
    for env_id in [i for i in gym.registry if i.startswith("popgym-")]:
        cls_name = ours.get(env_id.lower())
        if cls_name is not None and env_id != f"popgym-{cls_name}-v0":
            gym.registry.pop(env_id)
            gym.register(id=env_id, entry_point="wrappers.envs.popgym_adapter:make_popgym", kwargs={"name": cls_name})
