"""Envs shipped with amago-sb and their gymnasium registration (see :func:`register_envs`)."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["register_envs"]

_ENVS: dict[str, dict] = {
    "GoalGrid-v0": {"entry_point": "wrappers.envs.goal_grid:GoalGridEnv", "max_episode_steps": 50},
    "GoalGridInstruction-v0": {"entry_point": "wrappers.envs.goal_grid:make_goal_grid_instruction"},
    "MetaBandit-v0": {"entry_point": "wrappers.envs.bandits:MetaBanditEnv"},
    "MetaBanditTrial-v0": {"entry_point": "wrappers.envs.bandits:make_meta_bandit_trial"},
    "TwoArmedBandit-v0": {"entry_point": "wrappers.envs.bandits:TwoArmedBanditEnv"},
    "TMazePassive-v0": {"entry_point": "wrappers.envs.tmaze:TMazePassiveEnv"},
    "Crafter-v0": {"entry_point": "wrappers.envs.crafter_adapter:CrafterEnv"},
    "CrafterInstruction-v0": {"entry_point": "wrappers.envs.crafter_instruction:make_crafter_instruction"},
}


def _register(env_id: str, entry_point: str, **kwargs) -> None:
    gym.registry.pop(env_id, None)
    gym.register(id=env_id, entry_point=entry_point, **kwargs)


def register_envs() -> None:
    """Register the toy envs and the Crafter adapters (entry points are imported lazily by gymnasium.make)."""
    for env_id, spec in _ENVS.items():
        _register(env_id, **spec)
