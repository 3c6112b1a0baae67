"""Hindsight instruction relabeling at sample time (AMAGO, arXiv 2310.09971, Fig. 2; HER generalized to goal sequences).

:func:`relabel` rewrites a stored :class:`~wrappers.trajectory.Trajectory` of an ``InstructionWrapper`` env so that its
instruction is (partly) made of goals the agent actually achieved, then recomputes everything that depends on it.

Algorithm (scheme ``"some"``, AMAGO's default; ``"all"`` fills every free slot):

1. Read the instruction from ``observations["instruction"][0]``: ``c0`` leading ``<done>`` rows (goals completed before
   this chunk), then the original goals ``g``. Replay it over ``achieved`` to find the real successes ``(t, g_i)``.
   A trajectory that already completes its instruction, in which nothing was achieved, or that spans several
   episodes (``reset`` = 1 after row 0, where the instruction may change) comes back unchanged (as a copy).
2. ``n ~ U{0, .., len(g) - s}`` synthetic goals (``s`` real successes), at most one per step, drawn from steps that
   achieved some goal other than the real successes; at each such step one of its achieved goals is picked. The
   count is bounded by the instruction's own length, not by its ``k`` slots (as in the original): a relabeled
   instruction is never longer than the one the task gave, so a 1-goal task stays a 1-goal task.
3. Real and synthetic goals in chronological order fill the instruction from slot ``c0`` on; the original goals
   after them stay (the new instruction has the original's length, and is completed only when every one of its
   goals was reached).
4. Replay from ``t = 0``: rewards (+1 per goal, at most one per step), ``prev_reward``, the ``instruction`` rows
   (completed goals -> ``<done>``), ``terminated``; if the new instruction is completed at step ``i`` the trajectory
   is cut right after ``i`` with ``terminated[i] = True``.
"""

from __future__ import annotations

import copy

import numpy as np

from wrappers.instruction import DONE, PAD, replay_instruction
from wrappers.trajectory import Trajectory

__all__ = ["relabel", "instruction_goals"]


def instruction_goals(row: np.ndarray) -> tuple[int, list[tuple[int, ...]]]:
    """Split one ``(k, goal_len)`` instruction row into (number of leading ``<done>`` goals, the remaining goals)."""
    c0, goals = 0, []  # type: int, list[tuple[int, ...]]
    for goal in np.asarray(row):
        if np.all(goal == DONE):
            if goals:
                raise ValueError("Instruction row has a <done> goal after an uncompleted one; the rows are corrupt.")
            c0 += 1
        elif np.all(goal == PAD):
            break
        else:
            goals.append(tuple(int(x) for x in goal))
    return c0, goals


def _copy(traj: Trajectory) -> Trajectory:
    return Trajectory(
        observations={k: v.copy() for k, v in traj.observations.items()},
        actions=traj.actions.copy(),
        rewards=traj.rewards.copy(),
        terminated=traj.terminated.copy(),
        truncated=traj.truncated.copy(),
        achieved=None if traj.achieved is None else traj.achieved.copy(),
        time_offset=traj.time_offset,
        meta=copy.deepcopy(traj.meta),
    )


def relabel(traj: Trajectory, rng: np.random.Generator, *, scheme: str = "some") -> Trajectory:
    """Return a relabeled copy of ``traj`` (never mutates it). See the module docstring for the algorithm.

    Args:
        traj: needs ``observations["instruction"]`` ``(T+1, k, goal_len)`` and ``achieved`` ``(T, max_events, goal_len)``.
        rng: source of randomness (number of synthetic goals, their steps and goals).
        scheme: ``"some"`` (random number of synthetic goals) or ``"all"`` (every goal the real successes left open).
    """
    if scheme not in ("some", "all"):
        raise ValueError(f"Unknown relabel scheme {scheme!r}; use 'some' or 'all'.")
    if "instruction" not in traj.observations:
        raise ValueError(
            "relabel needs observations['instruction']; the trajectory was not recorded from an InstructionWrapper."
        )
    if traj.achieved is None:
        raise ValueError("relabel needs Trajectory.achieved (info['achieved'] of InstructionWrapper); it is None.")
    traj.validate()
    instr = traj.observations["instruction"]
    achieved = traj.achieved
    T = len(traj)
    if achieved.shape[-1] != instr.shape[-1]:
        raise ValueError(
            f"achieved goals have {achieved.shape[-1]} tokens but the instruction has goal_len={instr.shape[-1]}."
        )
    out = _copy(traj)
    c0, goals = instruction_goals(instr[0])
    _, completed, done_at = replay_instruction(goals, achieved)
    resets = traj.observations.get("reset")
    several_episodes = resets is not None and bool(np.any(resets[1:] > 0))  # e.g. TrialWrapper around instructions
    if done_at >= 0 or several_episodes or not np.any(achieved != PAD):
        return out
    real = [(t, goals[int(completed[t])]) for t in range(T) if completed[t + 1] > completed[t]]
    real_steps = {t for t, _ in real}
    candidates = [t for t in range(T) if t not in real_steps and np.any(np.any(achieved[t] != PAD, axis=-1))]
    free = len(goals) - len(real)  # the instruction's own length bounds the relabeled one (not its k slots)
    n = free if scheme == "all" else int(rng.integers(0, free + 1))
    n = min(n, len(candidates))
    if n == 0:
        return out
    synthetic = []
    for t in sorted(rng.choice(candidates, size=n, replace=False).tolist()):
        rows = [row for row in achieved[t] if np.any(row != PAD)]
        synthetic.append((t, tuple(int(x) for x in rows[int(rng.integers(len(rows)))])))
    new_head = [g for _, g in sorted(real + synthetic, key=lambda pair: pair[0])]
    new_goals = new_head + goals[len(new_head) :]

    rewards, completed, done_at = replay_instruction(new_goals, achieved)
    end = done_at + 1 if done_at >= 0 else T
    new_instr = np.zeros((end + 1, *instr.shape[1:]), instr.dtype)
    new_instr[:, :c0] = DONE
    for i, goal in enumerate(new_goals):
        new_instr[:, c0 + i] = np.where((completed[: end + 1] > i)[:, None], DONE, np.asarray(goal, instr.dtype))
    out.observations = {key: value[: end + 1].copy() for key, value in out.observations.items()}
    out.observations["instruction"] = new_instr
    out.observations["prev_reward"][1:, 0] = rewards[:end]
    assert out.achieved is not None  # relabeling needs the achieved goals
    out.actions, out.achieved = out.actions[:end], out.achieved[:end]
    out.rewards = rewards[:end].astype(traj.rewards.dtype)
    out.terminated, out.truncated = out.terminated[:end], out.truncated[:end]
    if done_at >= 0:
        out.terminated[-1], out.truncated[-1] = True, False
    out.meta["relabeled"] = True
    return out
