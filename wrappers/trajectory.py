"""The in-memory trajectory record shared by the replay (``amago_sb.replay``) and relabeling (``wrappers``).

A :class:`Trajectory` holds one (part of an) outer episode as seen through the trajectory-form wrappers:

* ``observations``: ``{key: array (T+1, *shape)}``, one entry per *flattened* key of the timestep ``Dict`` space
  (``flatten_keys``): ``"obs"`` (or ``"obs/<sub>"`` for ``Dict`` observations), ``"prev_action"``,
  ``"prev_reward"``, ``"time"``, ``"reset"`` and, for instruction envs, ``"instruction"``. Row ``t`` is the
  timestep the agent saw *before* taking ``actions[t]``; row ``T`` is the one after the last action.
* ``actions``: ``(T, *action_shape)`` as given to ``env.step``.
* ``rewards``: ``(T,)`` float32, reward of transition ``t``.
* ``terminated`` / ``truncated``: ``(T,)`` bool; only the last row can be true.
* ``achieved``: ``(T, max_events, goal_len)`` int64 token ids of the goals achieved by transition ``t``
  (``info["achieved"]`` of :class:`wrappers.InstructionWrapper`), padded with token 0; ``None`` for envs
  without instructions.
* ``time_offset``: absolute step index (within the outer episode) of row 0, so that chunks of long episodes
  keep their position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["Trajectory", "flatten_keys", "flatten_obs"]


def flatten_keys(space: spaces.Dict, prefix: str = "") -> dict[str, spaces.Space]:
    """Flatten a (possibly nested) ``Dict`` space into ``{"a/b": leaf_space}``, in the space's key order."""
    out: dict[str, spaces.Space] = {}
    for key, sub in space.spaces.items():
        name = f"{prefix}{key}"
        if isinstance(sub, spaces.Dict):
            out.update(flatten_keys(sub, prefix=f"{name}/"))
        else:
            out[name] = sub
    return out


def flatten_obs(obs: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a (possibly nested) observation dict into ``{"a/b": value}``: the key convention of
    :func:`flatten_keys`, the replay files and the policy's inputs."""
    out: dict[str, Any] = {}
    for key, value in obs.items():
        if isinstance(value, Mapping):
            out.update(flatten_obs(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class Trajectory:
    """One stored (chunk of an) outer episode. Shapes in the module docstring."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    achieved: np.ndarray | None = None
    time_offset: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of transitions ``T``."""
        return int(self.rewards.shape[0])

    def validate(self) -> None:
        """Raise ``ValueError`` if the arrays disagree on the number of transitions."""
        T = len(self)
        for key, arr in self.observations.items():
            if arr.shape[0] != T + 1:
                raise ValueError(f"Trajectory observations[{key!r}] has {arr.shape[0]} rows, expected T+1={T + 1}.")
        for name in ("actions", "terminated", "truncated"):
            arr = getattr(self, name)
            if arr.shape[0] != T:
                raise ValueError(f"Trajectory.{name} has {arr.shape[0]} rows, expected T={T}.")
        if self.achieved is not None and self.achieved.shape[0] != T:
            raise ValueError(f"Trajectory.achieved has {self.achieved.shape[0]} rows, expected T={T}.")
