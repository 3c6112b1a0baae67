"""Shared builders for the replay tests (plain functions, imported by tests/test_replay*.py)."""

from __future__ import annotations

import numpy as np

from wrappers.trajectory import Trajectory


def make_traj(T: int, *, offset: int = 0, terminated: bool = True, obs_dim: int = 3, achieved: bool = False,
              writer: int = 0) -> Trajectory:
    """A trajectory whose values encode absolute time: obs rows = ``offset + t``, actions/rewards = ``offset + t``.

    That makes window/padding/time-index checks exact: every valid entry equals its ``time_idx``.
    """
    t_obs = np.arange(offset, offset + T + 1, dtype=np.float32)
    t_act = np.arange(offset, offset + T)
    term = np.zeros(T, dtype=bool)
    trunc = np.zeros(T, dtype=bool)
    if T and terminated:
        term[-1] = True
    elif T:
        trunc[-1] = True
    return Trajectory(
        observations={
            "obs": np.repeat(t_obs[:, None], obs_dim, axis=1),
            "prev_action": np.zeros((T + 1, 2), np.float32),
            "prev_reward": np.zeros((T + 1, 1), np.float32),
            "time": t_obs[:, None].copy(),
            "reset": (np.arange(T + 1) == 0).astype(np.float32)[:, None],
        },
        actions=t_act.astype(np.int64),
        rewards=t_act.astype(np.float32),
        terminated=term,
        truncated=trunc,
        achieved=np.arange(T * 2 * 3, dtype=np.int64).reshape(T, 2, 3) if achieved else None,
        time_offset=offset,
        meta={"writer": writer},
    )
