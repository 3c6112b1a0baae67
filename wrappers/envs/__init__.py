"""Envs shipped with amago-sb and their gymnasium registration (see :func:`register_envs`).

Every id takes ``trajectory=`` in ``gymnasium.make``. Plain envs (``GoalGrid-v0``, ``MetaBandit-v0``,
``TwoArmedBandit-v0``, ``TMazePassive-v0``, ``Crafter-v0``,
``PointMassCue-v0``, ``ContinuousRecall-v0``) default to ``trajectory=False`` (the plain env;
``True`` wraps it in ``TrajectoryWrapper``). Instruction and trial envs (``GoalGridInstruction-v0``,
``MetaBanditTrial-v0``, ``CrafterInstruction-v0``, ``DarkKeyToDoor-v0``, ``HalfCheetahVel-v0``,
``MetaWorldML1-v0``, ``MetaWorldML10-v0``) exist only in trajectory form, because the
instruction, the
previous reward and the inner-episode reset flag are what define the task; they accept ``trajectory`` for uniformity
(e.g. the zoo passes ``trajectory=False`` for SB3 baselines) and always return the trajectory form.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

__all__ = ["register_envs", "make_shipped"]

_PLAIN = {
    "GoalGrid-v0": "wrappers.envs.goal_grid:GoalGridEnv",
    "MetaBandit-v0": "wrappers.envs.bandits:MetaBanditEnv",
    "TwoArmedBandit-v0": "wrappers.envs.bandits:TwoArmedBanditEnv",
    "TMazePassive-v0": "wrappers.envs.tmaze:TMazePassiveEnv",
    "Crafter-v0": "wrappers.envs.crafter_adapter:CrafterEnv",
    "PointMassCue-v0": "wrappers.envs.continuous_memory:PointMassCueEnv",
    "ContinuousRecall-v0": "wrappers.envs.continuous_memory:ContinuousRecallEnv",
}
_TRAJECTORY_ONLY = {
    "GoalGridInstruction-v0": "wrappers.envs.goal_grid:make_goal_grid_instruction",
    "MetaBanditTrial-v0": "wrappers.envs.bandits:make_meta_bandit_trial",
    "CrafterInstruction-v0": "wrappers.envs.crafter_instruction:make_crafter_instruction",
    "DarkKeyToDoor-v0": "wrappers.envs.dark_key_to_door:make_dark_key_to_door",
    "HalfCheetahVel-v0": "wrappers.envs.half_cheetah_vel:make_half_cheetah_vel",
    "MetaWorldML1-v0": "wrappers.envs.metaworld_ml1:make_metaworld_ml1",
    "MetaWorldML10-v0": "wrappers.envs.metaworld_ml1:make_metaworld_ml10",
}
_ENVS: dict[str, dict] = {
    **{k: {"entry_point": "wrappers.envs:make_shipped", "kwargs": {"target": v}} for k, v in _PLAIN.items()},
    **{
        k: {"entry_point": "wrappers.envs:make_shipped", "kwargs": {"target": v, "plain": False}}
        for k, v in _TRAJECTORY_ONLY.items()
    },
}


def make_shipped(target: str, trajectory: bool | None = None, plain: bool = True,
                 truncated_is_done: bool | None = None, **kwargs: Any) -> gym.Env:
    """Entry point of the shipped ids: build ``target`` (``"module:callable"``) with ``kwargs``; see module docstring.
    ``truncated_is_done`` goes to the ``TrajectoryWrapper`` of ``trajectory=True`` (how it reports time limits)."""
    if truncated_is_done is not None and not (plain and trajectory):
        raise ValueError(f"truncated_is_done={truncated_is_done!r} applies to the trajectory form that trajectory=True "
                         f"builds of a plain env; got trajectory={trajectory!r} for {target}.")
    module, name = target.split(":")
    env = getattr(importlib.import_module(module), name)(**kwargs)
    if plain and trajectory:
        from wrappers.trajectory_wrapper import TrajectoryWrapper

        env = TrajectoryWrapper(env, truncated_is_done=truncated_is_done)
    return env


def _register(env_id: str, entry_point: str, **kwargs) -> None:
    gym.registry.pop(env_id, None)
    gym.register(id=env_id, entry_point=entry_point, **kwargs)


def register_envs() -> None:
    """Register the toy envs and the Crafter adapters (entry points are imported lazily by gymnasium.make)."""
    for env_id, spec in _ENVS.items():
        _register(env_id, **spec)
