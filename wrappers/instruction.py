"""``InstructionWrapper``: multi-goal instructions over a closed token vocabulary (AMAGO's goal-conditioned mode).

An *instruction* is a sequence of 1..k goals; a *goal* is a tuple of up to ``goal_len`` tokens (strings from the
vocabulary), e.g. ``("collect", "wood")``. Token ids: 0 = ``"<pad>"``, 1 = ``"<done>"``, the vocabulary starts at 2.

Timestep key ``instruction``: ``(k, goal_len)`` int64 ids. Row i holds goal i (right-padded with 0); a completed goal's
row is all 1 (``<done>``); rows past the instruction's length are all 0.

Reward: +1 each time the *next* uncompleted goal is among the goals achieved at this step (at most one goal per step;
the env's own reward is discarded). The episode terminates (success) after the last goal. ``prev_reward`` in the
timestep is this instruction reward.

``info`` keys added at every ``reset`` and ``step``:

* ``"achieved"``: ``(max_events, goal_len)`` int64, the goals achieved by this step (padded rows of 0; zeros at reset),
  which is all that :func:`wrappers.relabel` needs.
* ``"goals_completed"``: int, goals of the instruction completed so far; ``"instruction_success"``: bool.
* at ``reset`` only, ``"instruction_text"``: the goals as text (``zoo.enjoy`` draws them on recorded frames).
* at the last step of an episode, ``"is_success"`` (SB3's key): whether the whole instruction was completed, so
  ``rollout/success_rate`` is logged and ``EvalCallback`` reports the success rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from wrappers.trajectory_wrapper import ensure_trajectory_env, env_name

__all__ = ["InstructionWrapper", "PAD", "DONE", "Goal", "GoalIds", "replay_instruction"]

PAD: int = 0
DONE: int = 1
Goal = Sequence[str]
GoalIds = tuple[int, ...]
AchievedFn = Callable[[gym.Env, dict, dict], Iterable[Goal]]
Sampler = Callable[[np.random.Generator], Sequence[Goal]]


def _default_achieved(env: gym.Env, obs: dict, info: dict) -> Iterable[Goal]:
    if "achieved_goals" not in info:
        raise KeyError(
            f"{env_name(env)} has no info['achieved_goals']; pass achieved_fn=(env, obs, info) -> goals to InstructionWrapper."
        )
    return info["achieved_goals"]


def replay_instruction(goals: Sequence[GoalIds], achieved: np.ndarray, start: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Replay an instruction over per-step achieved goals (the rule shared by the wrapper and relabeling).

    Args:
        goals: the instruction's goals as padded id tuples.
        achieved: ``(T, max_events, goal_len)`` achieved goal ids per step (rows of 0 are padding).
        start: goals already completed before step 0.

    Returns:
        ``rewards (T,)`` float32, ``completed (T+1,)`` int64 (goals completed before step t / after the last step),
        and the step at which the last goal was completed (``-1`` if never).
    """
    T = achieved.shape[0]
    rewards = np.zeros(T, np.float32)
    completed = np.full(T + 1, start, np.int64)
    active, done_at = start, -1
    for t in range(T):
        if active < len(goals) and done_at < 0:
            target = np.asarray(goals[active])
            if np.any(np.all(achieved[t] == target, axis=-1)):
                rewards[t] = 1.0
                active += 1
                if active == len(goals):
                    done_at = t
        completed[t + 1] = active
    return rewards, completed, done_at


class InstructionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds the ``instruction`` key and replaces the reward by instruction progress (module docstring).

    Args:
        env: an env (wrapped with ``TrajectoryWrapper`` here if it is not in trajectory form yet).
        vocabulary: the goal tokens; ids start at 2 in this order.
        instruction_len: ``k``, the maximum number of goals in an instruction.
        goal_len: tokens per goal; shorter goals are padded with 0.
        achieved_fn: ``(env, obs, info) -> iterable of goals`` achieved by the last step; default reads
            ``info["achieved_goals"]``.
        sampler: ``rng -> 1..k goals``, the instruction of a new episode; default ``env.unwrapped.sample_instruction``.
            ``reset(options={"instruction": [...]})`` sets a fixed one instead (e.g. for evaluation).
        max_events: rows of ``info["achieved"]``; extra goals achieved in the same step are dropped (the one the
            instruction waits for is always kept).
    """

    def __init__(
        self,
        env: gym.Env,
        vocabulary: Sequence[str],
        *,
        instruction_len: int = 3,
        goal_len: int = 1,
        achieved_fn: AchievedFn | None = None,
        sampler: Sampler | None = None,
        max_events: int = 8,
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self, vocabulary=list(vocabulary), instruction_len=instruction_len, goal_len=goal_len, max_events=max_events
        )
        env = ensure_trajectory_env(env)
        gym.Wrapper.__init__(self, env)
        vocab = list(vocabulary)
        if not vocab or not all(isinstance(tok, str) and tok for tok in vocab):
            raise ValueError(f"vocabulary must be a non-empty sequence of non-empty strings, got {vocabulary!r}.")
        if len(set(vocab)) != len(vocab) or {"<pad>", "<done>"} & set(vocab):
            raise ValueError("vocabulary must not repeat tokens nor contain the reserved tokens '<pad>' and '<done>'.")
        for name, value in (("instruction_len", instruction_len), ("goal_len", goal_len), ("max_events", max_events)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if sampler is None and not callable(getattr(env.unwrapped, "sample_instruction", None)):
            raise ValueError(
                f"{env_name(env)} has no sample_instruction(rng); pass sampler=(rng) -> list of goals to InstructionWrapper."
            )
        self.tokens: list[str] = ["<pad>", "<done>", *vocab]
        self.token_ids: dict[str, int] = {tok: i for i, tok in enumerate(self.tokens)}
        self.instruction_len, self.goal_len, self.max_events = int(instruction_len), int(goal_len), int(max_events)
        self.achieved_fn: AchievedFn = achieved_fn or _default_achieved
        found = sampler or getattr(env.unwrapped, "sample_instruction", None)
        if found is None:
            raise TypeError(f"InstructionWrapper needs sampler= (rng -> instruction) or an env with a "
                            f"sample_instruction(rng) method; {type(env.unwrapped).__name__} has none.")
        self.sampler: Sampler = found
        self.observation_space = spaces.Dict(
            {
                **cast(spaces.Dict, env.observation_space).spaces,
                "instruction": spaces.MultiDiscrete(
                    np.full((self.instruction_len, self.goal_len), len(self.tokens)), np.int64
                ),
            }
        )
        self.goals: list[GoalIds] = []
        self.completed = 0

    # -- token helpers -----------------------------------------------------------------------------------------
    def encode_goal(self, goal: Goal | str) -> GoalIds:
        """Goal (tokens, or one whitespace-separated string) -> padded id tuple. Unknown tokens -> ValueError."""
        toks = goal.split() if isinstance(goal, str) else list(goal)
        if not 1 <= len(toks) <= self.goal_len:
            raise ValueError(f"Goal {goal!r} has {len(toks)} tokens; goals need 1..goal_len={self.goal_len} tokens.")
        unknown = [tok for tok in toks if tok not in self.token_ids or self.token_ids[tok] <= DONE]
        if unknown:
            raise ValueError(f"Goal {goal!r} has tokens {unknown} outside the vocabulary {self.tokens[2:]}.")
        ids = [self.token_ids[tok] for tok in toks]
        return tuple(ids + [PAD] * (self.goal_len - len(ids)))

    def decode_goal(self, ids: Sequence[int]) -> tuple[str, ...]:
        """Padded id tuple -> tokens (padding dropped)."""
        return tuple(self.tokens[int(i)] for i in ids if int(i) != PAD)

    def instruction_text(self) -> tuple[str, ...]:
        """The current instruction's goals as text, e.g. ``("collect sapling", "place plant", "eat cow")``."""
        return tuple(" ".join(self.decode_goal(g)) for g in self.goals)

    def instruction_array(self) -> np.ndarray:
        """The current ``(k, goal_len)`` instruction ids with completed goals marked ``<done>``."""
        out = np.zeros((self.instruction_len, self.goal_len), np.int64)
        for i, goal in enumerate(self.goals):
            out[i] = DONE if i < self.completed else goal
        return out

    # -- gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the env and draw an instruction (or take ``options["instruction"]``)."""
        options = dict(options or {})
        fixed = options.pop("instruction", None)
        obs, info = self.env.reset(seed=seed, options=options or None)
        goals = fixed if fixed is not None else self.sampler(self.np_random)
        if isinstance(goals, str) or not 1 <= len(goals) <= self.instruction_len:
            raise ValueError(f"An instruction is a list of 1..instruction_len={self.instruction_len} goals, got {goals!r}.")
        self.goals = [self.encode_goal(g) for g in goals]
        self.completed = 0
        info = dict(info)
        info.update(
            achieved=np.zeros((self.max_events, self.goal_len), np.int64), goals_completed=0, instruction_success=False,
            instruction_text=self.instruction_text(),
        )
        return self._observe(obs), info

    def step(self, action):
        """Step the env; reward = 1 if the next goal was achieved; terminate after the last goal."""
        obs, _, terminated, truncated, info = self.env.step(action)
        achieved = self._achieved_rows(obs, info)
        reward = 0.0
        if self.completed < len(self.goals) and np.any(np.all(achieved == np.asarray(self.goals[self.completed]), -1)):
            reward = 1.0
            self.completed += 1
        success = self.completed == len(self.goals)
        obs = dict(obs)
        obs["prev_reward"] = np.array([reward], np.float32)
        info = dict(info)
        info.update(achieved=achieved, goals_completed=self.completed, instruction_success=success)
        terminated, truncated = bool(terminated or success), bool(truncated and not success)
        if terminated or truncated:
            info["is_success"] = success  # SB3's key: rollout/success_rate, EvalCallback's success rate
        return self._observe(obs), reward, terminated, truncated, info

    def _achieved_rows(self, obs: dict, info: dict) -> np.ndarray:
        goals: list[GoalIds] = []
        for goal in self.achieved_fn(self.env, obs, info):
            ids = self.encode_goal(goal)
            if ids not in goals:
                goals.append(ids)
        if self.completed < len(self.goals) and self.goals[self.completed] in goals:
            goals.remove(self.goals[self.completed])
            goals.insert(0, self.goals[self.completed])
        out = np.zeros((self.max_events, self.goal_len), np.int64)
        for i, ids in enumerate(goals[: self.max_events]):
            out[i] = ids
        return out

    def _observe(self, obs: dict) -> dict:
        return {**obs, "instruction": self.instruction_array()}
