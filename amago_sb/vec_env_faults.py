"""``FaultTolerantVecEnv``: a ``SubprocVecEnv`` that names the env and step that failed, and can restart it.

An env can fail in four ways: ``step``/``reset`` raises (``"exception"``), it returns a NaN/inf reward or observation
(``"nonfinite"``), it does not answer within ``step_timeout`` seconds (``"timeout"``), or its worker process dies
(``"crashed"``, e.g. a segfault in a simulator). SB3's ``SubprocVecEnv`` then dies with a pipe error (or hangs
forever); this one catches the failure in the worker, and in the parent:

* ``restart_on_fault=False`` (default): raises :class:`EnvFaultError` naming the env index, its step within the
  episode, the VecEnv step, the kind of failure and the env's own message (with its traceback);
* ``restart_on_fault=True``: kills that env's worker, starts a fresh one from the same ``env_fn``, resets it, and
  returns for that env ``done=True`` with ``info["env_fault"]`` (a dict, see :class:`EnvFault`),
  ``info["TimeLimit.truncated"] = True`` and ``info["terminal_observation"]`` = the last observation it returned.
  The interrupted episode is therefore a *truncation*, never a fake terminal: :class:`~amago_sb.replay.
  VecTrajectoryRecorder` stores its transitions up to the last real one as truncated and drops the failed step,
  and SB3 algorithms bootstrap from the terminal observation. An :class:`EnvFaultWarning` names the env and step.
  More than ``max_restarts`` restarts in total raise :class:`EnvFaultError`.

Every fault is also kept in :attr:`FaultTolerantVecEnv.faults`. A restarted env is reset without a seed.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

__all__ = ["EnvFault", "EnvFaultError", "EnvFaultWarning", "FaultTolerantVecEnv"]

_FAULT = "__amago_env_fault__"


@dataclass
class EnvFault:
    """One env failure.

    Attributes:
        env_idx: index of the env in the VecEnv.
        episode_step: the env's step within its episode that failed (1 = first step after reset; 0 = during reset).
        vec_step: the VecEnv's step count (calls to ``step``) when it failed, 1-based.
        kind: ``"exception"``, ``"nonfinite"``, ``"timeout"`` or ``"crashed"``.
        message: what happened (the env's exception type and text, the bad values, or the timeout).
        traceback: the worker's traceback for ``"exception"`` (empty otherwise).
    """

    env_idx: int
    episode_step: int
    vec_step: int
    kind: str
    message: str
    traceback: str = ""

    def describe(self) -> str:
        where = "reset" if self.episode_step == 0 else f"step {self.episode_step} of its episode"
        return f"env {self.env_idx} failed at {where} (VecEnv step {self.vec_step}): {self.kind}: {self.message}"


class EnvFaultError(RuntimeError):
    """An env of a :class:`FaultTolerantVecEnv` failed and was not (or could not be) restarted."""

    def __init__(self, message: str, fault: EnvFault | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class EnvFaultWarning(UserWarning):
    """An env failed and was restarted; its interrupted episode ends as truncated."""


# ---------------------------------------------------------------------------------------------------- worker side
def _nonfinite(x: Any) -> bool:
    if isinstance(x, dict):
        return any(_nonfinite(v) for v in x.values())
    if isinstance(x, tuple):
        return any(_nonfinite(v) for v in x)
    a = np.asarray(x)
    return a.dtype.kind in "fc" and not bool(np.isfinite(a).all())


def _checked_step(env: gym.Env, action: Any) -> tuple:
    obs, reward, terminated, truncated, info = env.step(action)
    if _nonfinite(reward) or _nonfinite(obs):
        what = f"reward {reward!r}" if _nonfinite(reward) else "observation"
        return (_FAULT, "nonfinite", f"returned a non-finite {what}", "")
    done = terminated or truncated
    info["TimeLimit.truncated"] = truncated and not terminated
    reset_info: dict = {}
    if done:
        info["terminal_observation"] = obs
        obs, reset_info = env.reset()
    return obs, reward, done, info, reset_info


def _checked_reset(env: gym.Env, seed: int | None, options: dict | None) -> tuple:
    obs, info = env.reset(seed=seed, **({"options": options} if options else {}))
    if _nonfinite(obs):
        return (_FAULT, "nonfinite", "returned a non-finite observation from reset", "")
    return obs, info


def _guarded_worker(remote: Any, parent_remote: Any, env_fn: CloudpickleWrapper) -> None:
    """Serve SB3's SubprocVecEnv commands; ``step`` / ``reset`` failures are sent back instead of killing the worker."""
    from stable_baselines3.common.env_util import is_wrapped

    parent_remote.close()
    env = _patch_env(env_fn.var())

    def has_attr(name: str) -> bool:
        try:
            env.get_wrapper_attr(name)
            return True
        except AttributeError:
            return False

    handlers: dict[str, Callable[[Any], Any]] = {
        "step": lambda a: _checked_step(env, a),
        "reset": lambda d: _checked_reset(env, d[0], d[1]),
        "render": lambda _: env.render(),
        "get_spaces": lambda _: (env.observation_space, env.action_space),
        "env_method": lambda d: env.get_wrapper_attr(d[0])(*d[1], **d[2]),
        "get_attr": lambda name: env.get_wrapper_attr(name),
        "has_attr": has_attr,
        "set_attr": lambda d: setattr(env, d[0], d[1]),
        "is_wrapped": lambda cls: is_wrapped(env, cls),
    }
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if cmd == "close":
            env.close()
            remote.close()
            break
        if cmd not in handlers:
            raise NotImplementedError(f"`{cmd}` is not implemented in the worker")
        try:
            out = handlers[cmd](data)
        except Exception as e:  # report it: the parent decides (raise or restart)
            if cmd not in ("step", "reset"):
                raise
            out = (_FAULT, "exception", "".join(traceback.format_exception_only(type(e), e)).strip(), traceback.format_exc())
        remote.send(out)


def _is_fault(msg: Any) -> bool:
    return isinstance(msg, tuple) and len(msg) == 4 and msg[0] == _FAULT


# ---------------------------------------------------------------------------------------------------- parent side
class FaultTolerantVecEnv(SubprocVecEnv):
    """``SubprocVecEnv`` with per-env fault reports, a step timeout and optional restarts (see the module docstring).

    Args:
        env_fns: env constructors, one per worker process (kept to rebuild an env on restart).
        start_method: multiprocessing start method (default as SB3: ``forkserver`` where available).
        step_timeout: seconds to wait for all envs to answer one ``step`` / ``reset`` (``None``: wait forever).
        restart_on_fault: restart a failed env and go on (True) or raise :class:`EnvFaultError` (False).
        max_restarts: restarts allowed over the VecEnv's life before giving up with :class:`EnvFaultError`.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], start_method: str | None = None, *,
                 step_timeout: float | None = 60.0, restart_on_fault: bool = False, max_restarts: int = 100) -> None:
        if step_timeout is not None and not step_timeout > 0:
            raise ValueError(f"step_timeout must be > 0 seconds or None, got {step_timeout!r}.")
        if not env_fns:
            raise ValueError("FaultTolerantVecEnv needs at least one env_fn.")
        self.waiting, self.closed = False, False
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx: Any = mp.get_context(start_method)
        self._env_fns = list(env_fns)
        self.step_timeout, self.restart_on_fault, self.max_restarts = step_timeout, bool(restart_on_fault), int(max_restarts)
        self.remotes: list[Any] = []
        self.processes: list[Any] = []
        for fn in self._env_fns:
            remote, proc = self._spawn(fn)
            self.remotes.append(remote)
            self.processes.append(proc)
        self.remotes[0].send(("get_spaces", None))
        observation_space, action_space = self.remotes[0].recv()
        VecEnv.__init__(self, len(env_fns), observation_space, action_space)
        self.faults: list[EnvFault] = []
        self.restarts = np.zeros(self.num_envs, dtype=np.int64)
        self._episode_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._vec_steps = 0
        self._last_obs: list[Any] = [None] * self.num_envs
        self._started = 0.0
        self._broken = False

    def _spawn(self, fn: Callable[[], gym.Env]) -> tuple[Any, Any]:
        remote, work_remote = self._ctx.Pipe()
        proc = self._ctx.Process(target=_guarded_worker, args=(work_remote, remote, CloudpickleWrapper(fn)), daemon=True)
        proc.start()
        work_remote.close()
        return remote, proc

    def _kill(self, i: int) -> None:
        proc = self.processes[i]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        self.remotes[i].close()

    # ------------------------------------------------------------------ receiving
    def _gather(self, indices: list[int], episode_step: Callable[[int], int]) -> tuple[dict[int, Any], dict[int, EnvFault]]:
        """Answers of ``indices`` (all sent at ``self._started``) and the faults among them."""
        deadline = None if self.step_timeout is None else self._started + self.step_timeout
        answers: dict[int, Any] = {}
        faults: dict[int, EnvFault] = {}
        for i in indices:
            remote = self.remotes[i]

            def fault(kind: str, msg: str, tb: str = "", i: int = i) -> EnvFault:
                return EnvFault(i, episode_step(i), self._vec_steps, kind, msg, tb)

            try:
                if deadline is not None and not remote.poll(max(0.0, deadline - time.monotonic())):
                    faults[i] = fault("timeout", f"no answer within step_timeout={self.step_timeout} s")
                    continue
                msg = remote.recv()
            except (EOFError, OSError):
                self.processes[i].join(timeout=1)
                faults[i] = fault("crashed", f"its worker process died (exit code {self.processes[i].exitcode})")
                continue
            if _is_fault(msg):
                faults[i] = fault(msg[1], msg[2], msg[3])
            else:
                answers[i] = msg
        return answers, faults

    def _handle(self, fault: EnvFault) -> tuple[Any, dict]:
        """Raise for ``fault`` or restart its env; returns the restarted env's ``(obs, reset_info)``."""
        self.faults.append(fault)
        hint = ("pass restart_on_fault=True to FaultTolerantVecEnv to restart failed envs and go on"
                if not self.restart_on_fault else f"it exceeded max_restarts={self.max_restarts}")
        if not self.restart_on_fault or self.restarts.sum() >= self.max_restarts:
            self._kill(fault.env_idx)
            self._broken = True
            detail = f"\nWorker traceback:\n{fault.traceback}" if fault.traceback else ""
            raise EnvFaultError(f"{fault.describe()}; {hint}.{detail}", fault)
        warnings.warn(f"{fault.describe()}; restarting it (its episode ends as truncated).", EnvFaultWarning, stacklevel=3)
        i = fault.env_idx
        self._kill(i)
        self.remotes[i], self.processes[i] = self._spawn(self._env_fns[i])
        self.restarts[i] += 1
        self.remotes[i].send(("reset", (None, None)))
        self._started = time.monotonic()
        answers, faults = self._gather([i], lambda _: 0)
        if faults:
            self.faults.append(faults[i])
            self._kill(i)
            raise EnvFaultError(f"env {i} could not be restarted: {faults[i].describe()}", faults[i])
        return answers[i]

    # ------------------------------------------------------------------ VecEnv API
    def step_async(self, actions: np.ndarray) -> None:
        if self._broken:
            raise EnvFaultError("This FaultTolerantVecEnv had an env fault that was not restarted; build a new one.")
        for remote, action in zip(self.remotes, actions):
            remote.send(("step", action))
        self._started = time.monotonic()
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        self._vec_steps += 1
        answers, faults = self._gather(list(range(self.num_envs)), lambda i: int(self._episode_steps[i]) + 1)
        self.waiting = False
        results: list[Any] = [None] * self.num_envs
        for i, msg in answers.items():
            results[i] = msg
        for i in sorted(faults):
            obs, reset_info = self._handle(faults[i])
            info = {"env_fault": asdict(faults[i]), "TimeLimit.truncated": True, "terminal_observation": self._last_obs[i]}
            results[i] = (obs, 0.0, True, info, reset_info)
        obs, rews, dones, infos, reset_infos = zip(*results)
        self.reset_infos = list(reset_infos)
        for i in range(self.num_envs):
            self._last_obs[i] = obs[i]
            self._episode_steps[i] = 0 if dones[i] else self._episode_steps[i] + 1
        return _stack_obs(obs, self.observation_space), np.stack(rews), np.stack(dones), list(infos)

    def reset(self) -> VecEnvObs:
        for i, remote in enumerate(self.remotes):
            remote.send(("reset", (self._seeds[i], self._options[i])))
        self._started = time.monotonic()
        answers, faults = self._gather(list(range(self.num_envs)), lambda _: 0)
        for i in sorted(faults):
            answers[i] = self._handle(faults[i])
        obs, reset_infos = zip(*(answers[i] for i in range(self.num_envs)))
        self.reset_infos = list(reset_infos)
        self._reset_seeds()
        self._reset_options()
        self._last_obs = list(obs)
        self._episode_steps[:] = 0
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        """Close every worker; hung or dead ones are killed instead of waited for."""
        if self.closed:
            return
        for i, remote in enumerate(self.remotes):
            if self.waiting and self.processes[i].is_alive():
                if remote.poll(self.step_timeout or 0):
                    remote.recv()
            try:
                remote.send(("close", None))
            except OSError:
                pass
        for i, proc in enumerate(self.processes):
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            self.remotes[i].close()
        self.closed = True
