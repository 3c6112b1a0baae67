"""Disk-backed trajectory replay: atomic ``.npz`` store, window sampler, VecEnv recorder (docs/ARCHITECTURE.md, "Replay")."""

from amago_sb.replay.recorder import VecTrajectoryRecorder
from amago_sb.replay.sampler import Batch, Relabel, ReplayDataset, WindowSampler
from amago_sb.replay.store import ReplayDiskFullError, ReplayFileWarning, TrajectoryStore, traj_steps_from_name

__all__ = [
    "TrajectoryStore",
    "WindowSampler",
    "Batch",
    "VecTrajectoryRecorder",
    "ReplayDataset",
    "Relabel",
    "ReplayDiskFullError",
    "ReplayFileWarning",
    "traj_steps_from_name",
]
