"""Gymnasium wrappers that put any env into AMAGO's trajectory form, plus env adapters and registration.

Importing this package registers every env id the project ships (``popgym-*-v0``, ``Crafter-v0``,
``CrafterInstruction-v0``, ``GoalGrid-v0``, ``GoalGridInstruction-v0``, ``MetaBandit-v0``, ``MetaBanditTrial-v0``,
``TwoArmedBandit-v0``, ``TMazePassive-v0``).
"""

from wrappers.instruction import InstructionWrapper
from wrappers.registration import make_env, register_all
from wrappers.relabel import relabel
from wrappers.spaces import UnsupportedSpaceError
from wrappers.trajectory import Trajectory, flatten_keys
from wrappers.trajectory_wrapper import (
    TRAJECTORY_KEYS,
    TrajectoryWrapper,
    ensure_trajectory_env,
    has_trajectory_keys,
    is_trajectory_space,
)
from wrappers.trial import KeepTaskError, TrialWrapper

__all__ = [
    "TrajectoryWrapper",
    "InstructionWrapper",
    "relabel",
    "TrialWrapper",
    "KeepTaskError",
    "Trajectory",
    "flatten_keys",
    "is_trajectory_space",
    "has_trajectory_keys",
    "ensure_trajectory_env",
    "make_env",
    "register_all",
    "UnsupportedSpaceError",
    "TRAJECTORY_KEYS",
]

register_all()
