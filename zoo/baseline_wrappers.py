"""Observation wrapper that lets the SB3 baselines (PPO, RecurrentPPO) run on every env the zoo lists.

Two problems it solves, both in the versions this project pins:

* SB3 rejects ``Tuple`` observation spaces (e.g. POPGym's ``AutoencodeEasy``: ``Tuple(Discrete(2), Discrete(4))``);
* sb3-contrib 2.9.2's ``RecurrentPPO`` crashes on ``MultiDiscrete`` observations (``CountRecallEasy``,
  ``Concentration*``): the features dim comes out as a numpy int64 and ``nn.LSTM`` raises
  ``TypeError: input_size should be of type int``.

:class:`OneHotObservation` turns every non-image leaf into a flat float32 ``Box``: ``Discrete`` and
``MultiDiscrete`` become (concatenated) one-hot vectors (what SB3's preprocessing does internally anyway),
``MultiBinary`` and vector ``Box`` leaves are flattened, a ``Tuple`` -- or a ``Dict`` without images, such as
the ``Dict({"0": ..., "1": ...})`` form the POPGym adapter gives ``Tuple`` envs -- is concatenated (in key order)
into one vector for ``MlpPolicy``. Images (uint8 ``Box`` of rank 3) are kept for ``CnnPolicy``; a (nested)
``Dict`` holding an image becomes a flat ``Dict`` with ``"a/b"`` keys for ``MultiInputPolicy``.
AMAGO does not need this wrapper: it reads the original spaces.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wrappers.trajectory import flatten_keys

__all__ = ["OneHotObservation", "needs_baseline_wrapper", "is_image_space", "sb3_observation"]


def is_image_space(space: spaces.Space) -> bool:
    """True for uint8 ``Box`` spaces of rank 3 (HWC or CHW images), which CNN policies take as they are."""
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def needs_baseline_wrapper(space: spaces.Space) -> bool:
    """True unless ``space`` is a ``Box`` (vector or image), which SB3's ``MlpPolicy`` / ``CnnPolicy`` take as is.

    Every ``Dict`` is wrapped: without images it becomes one vector (so ``MlpPolicy`` works on all vector envs,
    e.g. the trajectory-form ``MetaBanditTrial-v0``), with images a flat ``Dict`` for ``MultiInputPolicy``.
    """
    return not isinstance(space, spaces.Box)


def _leaf_to_box(space: spaces.Space) -> spaces.Box:
    """The float32 vector ``Box`` a non-image leaf is mapped to."""
    if isinstance(space, spaces.Discrete):
        return spaces.Box(0.0, 1.0, (int(space.n),), np.float32)
    if isinstance(space, spaces.MultiDiscrete):
        return spaces.Box(0.0, 1.0, (int(np.sum(space.nvec)),), np.float32)
    if isinstance(space, spaces.MultiBinary):
        return spaces.Box(0.0, 1.0, (int(np.prod(space.shape)),), np.float32)
    if isinstance(space, spaces.Box):
        return spaces.Box(
            space.low.reshape(-1).astype(np.float32), space.high.reshape(-1).astype(np.float32), dtype=np.float32
        )
    if isinstance(space, spaces.Tuple):
        parts = [_leaf_to_box(s) for s in space.spaces]
        return spaces.Box(np.concatenate([p.low for p in parts]), np.concatenate([p.high for p in parts]), dtype=np.float32)
    raise TypeError(
        f"OneHotObservation cannot convert a {type(space).__name__} observation space for the SB3 baselines; "
        "supported: Box, Discrete, MultiDiscrete, MultiBinary, Tuple and Dict of those."
    )


def _leaf_to_vector(space: spaces.Space, x: Any) -> np.ndarray:
    """Convert one observation of ``space`` into its flat float32 vector (one-hot for discrete parts)."""
    if isinstance(space, spaces.Discrete):
        out = np.zeros(int(space.n), np.float32)
        out[int(x) - int(space.start)] = 1.0
        return out
    if isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1)
        vals = np.asarray(x).reshape(-1) - space.start.reshape(-1)
        out = np.zeros(int(np.sum(nvec)), np.float32)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        out[offsets + vals] = 1.0
        return out
    if isinstance(space, (spaces.MultiBinary, spaces.Box)):
        return np.asarray(x, dtype=np.float32).reshape(-1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate([_leaf_to_vector(s, v) for s, v in zip(space.spaces, x)])
    raise TypeError(f"OneHotObservation cannot convert observations of a {type(space).__name__} space.")


def _get(obs: dict, path: str):
    for part in path.split("/"):
        obs = obs[part]
    return obs


class OneHotObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """One-hot / flatten observations into spaces that SB3's PPO and sb3-contrib's RecurrentPPO accept.

    Example: ``Tuple(Discrete(2), Discrete(4))`` and ``Dict({"0": Discrete(2), "1": Discrete(4)})`` ->
    ``Box(0, 1, (6,), float32)``; ``MultiDiscrete([2, 2])`` -> ``Box(0, 1, (4,), float32)``;
    ``Dict(image=Box(uint8, (64, 64, 3)), instruction=MultiDiscrete([5, 5]))`` ->
    ``Dict(image=<unchanged>, instruction=Box(0, 1, (10,), float32))``.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        self._leaves = flatten_keys(space) if isinstance(space, spaces.Dict) else None
        self._keep_dict = self._leaves is not None and any(is_image_space(s) for s in self._leaves.values())
        if self._keep_dict:
            self.observation_space = spaces.Dict(
                {k: s if is_image_space(s) else _leaf_to_box(s) for k, s in self._leaves.items()}
            )
        elif self._leaves is not None:
            self.observation_space = _leaf_to_box(spaces.Tuple(list(self._leaves.values())))
        elif is_image_space(space):
            self.observation_space = space
        else:
            self.observation_space = _leaf_to_box(space)

    def observation(self, observation: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Map one observation of the wrapped env to this wrapper's ``observation_space``."""
        space = self.env.observation_space
        if self._keep_dict:
            return {
                k: np.asarray(_get(observation, k)) if is_image_space(s) else _leaf_to_vector(s, _get(observation, k))
                for k, s in self._leaves.items()
            }
        if self._leaves is not None:
            return np.concatenate([_leaf_to_vector(s, _get(observation, k)) for k, s in self._leaves.items()])
        if is_image_space(space):
            return observation
        return _leaf_to_vector(space, observation)


def sb3_observation(env: gym.Env) -> gym.Env:
    """``env`` as SB3's policies take it: :class:`OneHotObservation` around non-``Box`` observations, else unchanged.

    This is the ``env_wrapper`` of the baselines' entries in ``zoo/hyperparams/*.yml`` (rl_zoo3 applies it to every
    env it makes, training and evaluation).
    """
    return OneHotObservation(env) if needs_baseline_wrapper(env.observation_space) else env
