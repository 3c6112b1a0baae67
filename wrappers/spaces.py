"""Space checks and the action encoding used by the trajectory form.

* :func:`check_observation_space` raises :class:`UnsupportedSpaceError` for observation spaces the agent cannot embed.
* :func:`check_action_space` does the same for action spaces.
* :func:`action_dim` / :func:`encode_action` turn an action into the flat ``prev_action`` vector ``(A,)`` float32:
  one-hot for ``Discrete(n)`` (A = n), concatenated one-hots for ``MultiDiscrete(nvec)`` (A = sum(nvec)),
  the raw flattened action for ``Box`` (A = prod(shape)).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = ["UnsupportedSpaceError", "check_observation_space", "check_action_space", "action_dim", "encode_action",
           "shape_of"]


class UnsupportedSpaceError(ValueError, TypeError):
    """A space the trajectory form cannot represent. Subclasses both ``ValueError`` and ``TypeError``."""


_OBS_FIXES: dict[type, str] = {
    spaces.Tuple: "flatten Tuple observations with gymnasium.wrappers.FlattenObservation, or turn them into a Dict",
    spaces.Text: "encode Text observations as token ids (MultiDiscrete) with a gymnasium.ObservationWrapper",
    spaces.Graph: "encode Graph observations as fixed-size Box arrays with a gymnasium.ObservationWrapper",
    spaces.Sequence: "pad Sequence observations to a fixed-size Box with a gymnasium.ObservationWrapper",
    spaces.OneOf: "encode OneOf observations as a Dict with a gymnasium.ObservationWrapper",
}


def shape_of(space: spaces.Space) -> tuple[int, ...]:
    """``space.shape`` of a space that has one (gymnasium types it as optional)."""
    if space.shape is None:
        raise ValueError(f"The space {space} has no fixed shape.")
    return tuple(space.shape)


def check_observation_space(space: spaces.Space, path: str = "observation") -> None:
    """Raise :class:`UnsupportedSpaceError` unless ``space`` is Box/Discrete/MultiDiscrete/MultiBinary or a Dict of them."""
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            if not isinstance(key, str) or "/" in key:
                raise UnsupportedSpaceError(
                    f"Dict observation key {key!r} at {path} is not supported: keys must be strings without '/' "
                    "(the replay flattens nested keys as 'a/b'); rename it with a gymnasium.ObservationWrapper."
                )
            check_observation_space(sub, f"{path}[{key!r}]")
        return
    if isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return
    fix = next((msg for cls, msg in _OBS_FIXES.items() if isinstance(space, cls)), None)
    fix = fix or "convert it to a Box, Discrete, MultiDiscrete, MultiBinary or Dict space with a gymnasium.ObservationWrapper"
    raise UnsupportedSpaceError(f"Unsupported {path} space {space}: {fix}.")


def check_action_space(space: spaces.Space) -> None:
    """Raise :class:`UnsupportedSpaceError` unless ``space`` is Discrete, MultiDiscrete or Box."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise UnsupportedSpaceError(
                f"Unsupported action space {space}: Box actions must have a float dtype; "
                "use Discrete/MultiDiscrete for integer actions."
            )
        return
    if isinstance(space, spaces.MultiBinary):
        fix = "replace it with MultiDiscrete([2] * n) through a gymnasium.ActionWrapper"
    elif isinstance(space, (spaces.Tuple, spaces.Dict)):
        fix = "flatten the action into one MultiDiscrete or Box space with a gymnasium.ActionWrapper"
    else:
        fix = "use a Discrete, MultiDiscrete or Box action space"
    raise UnsupportedSpaceError(f"Unsupported action space {space}: {fix}.")


def action_dim(space: spaces.Space) -> int:
    """Length ``A`` of the ``prev_action`` vector for ``space``."""
    check_action_space(space)
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.asarray(space.nvec).sum())
    return int(np.prod(shape_of(space)))


def encode_action(space: spaces.Space, action) -> np.ndarray:
    """Encode one action as a ``(A,)`` float32 vector (see module docstring). Raises ``ValueError`` for invalid ids."""
    if isinstance(space, spaces.Discrete):
        idx = int(np.asarray(action).reshape(-1)[0]) - int(space.start)
        if not 0 <= idx < space.n:
            raise ValueError(f"Action {action!r} is outside the Discrete action space {space}.")
        out = np.zeros(int(space.n), dtype=np.float32)
        out[idx] = 1.0
        return out
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec).reshape(-1)
        ids = np.asarray(action).reshape(-1).astype(np.int64) - np.asarray(space.start).reshape(-1)
        if ids.shape != nvec.shape or np.any(ids < 0) or np.any(ids >= nvec):
            raise ValueError(f"Action {action!r} is outside the MultiDiscrete action space {space}.")
        out = np.zeros(int(nvec.sum()), dtype=np.float32)
        out[np.concatenate([[0], np.cumsum(nvec)[:-1]]) + ids] = 1.0
        return out
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    if arr.shape[0] != int(np.prod(shape_of(space))):
        raise ValueError(f"Action of shape {np.shape(action)} does not fit the Box action space {space}.")
    return arr
