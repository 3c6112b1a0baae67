"""Env ids, benchmark groups and vectorized env construction for the zoo.

AMAGO trains on the trajectory form (``wrappers.make_env``); the SB3 baselines train on the plain env
(``gymnasium.make(id, trajectory=False)`` for the project's ids) wrapped in
:class:`zoo.baseline_wrappers.OneHotObservation` where SB3 / sb3-contrib cannot take the space as is.
Every env is wrapped in SB3's ``Monitor`` (outermost, so it sees the env's own rewards and episode ends;
for meta-RL trial envs one monitored episode is one outer episode of k trials).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from zoo.baseline_wrappers import sb3_observation

__all__ = ["ENV_GROUPS", "expand_env_groups", "check_env_id", "make_single_env", "make_vec_env", "is_project_env"]

META_ENVS = ["MetaBanditTrial-v0", "TwoArmedBandit-v0", "DarkKeyToDoor-v0", "HalfCheetahVel-v0", "MetaWorldML1-v0",
             "MetaWorldML10-v0"]
CRAFTER_INSTRUCTION_ENVS = ["CrafterInstruction-v0"]
TOY_ENVS = ["TMazePassive-v0", "GoalGridInstruction-v0", "Crafter-v0"]


def _popgym_ids(level: str | None = None) -> list[str]:
    import popgym.envs

    names = [cls.__name__ for cls in popgym.envs.ALL]
    return [f"popgym-{n}-v0" for n in names if level is None or n.endswith(level)]


# Benchmark groups (`zoo.benchmark --envs <group>`); values are callables so popgym is imported lazily.
ENV_GROUPS: dict[str, Callable[[], list[str]]] = {
    "popgym-easy": lambda: _popgym_ids("Easy"),
    "popgym-medium": lambda: _popgym_ids("Medium"),
    "popgym-hard": lambda: _popgym_ids("Hard"),
    "popgym-all": lambda: _popgym_ids(),
    "meta": lambda: list(META_ENVS),
    "crafter-instructions": lambda: list(CRAFTER_INSTRUCTION_ENVS),
}


def zoo_env_ids() -> list[str]:
    """Every env id the zoo ships hyperparameters for (all POPGym envs, meta-RL, toy and Crafter envs)."""
    return _popgym_ids() + META_ENVS + TOY_ENVS + CRAFTER_INSTRUCTION_ENVS


def expand_env_groups(names: list[str]) -> list[str]:
    """Replace group names (``popgym-easy``...) by their env ids, keep other names, drop duplicates (keep order)."""
    out: list[str] = []
    for name in names:
        for env_id in ENV_GROUPS[name]() if name in ENV_GROUPS else [name]:
            if env_id not in out:
                out.append(env_id)
    return out


def _register() -> None:
    import wrappers  # noqa: F401  (importing registers the project's env ids)


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """Return the spec of a registered env id, or raise ``ValueError`` suggesting close matches."""
    _register()
    if env_id in gym.registry:
        return gym.spec(env_id)
    close = difflib.get_close_matches(env_id, list(gym.registry) + list(ENV_GROUPS), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown env id {env_id!r}.{hint} The zoo knows every registered gymnasium id, the project's popgym-<Name>-v0 "
        f"ids and {', '.join(META_ENVS + TOY_ENVS + CRAFTER_INSTRUCTION_ENVS)}."
    )


def is_project_env(env_id: str) -> bool:
    """True for ids registered by ``wrappers`` (which take ``trajectory=False`` for the plain env)."""
    spec = check_env_id(env_id)
    entry = spec.entry_point
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module.startswith("wrappers.")


def make_single_env(env_id: str, algo: str, env_kwargs: dict | None = None) -> gym.Env:
    """One env as ``algo`` needs it: trajectory form for ``amago``, plain (+ :class:`OneHotObservation`) otherwise."""
    env_kwargs = dict(env_kwargs or {})
    try:
        if algo == "amago":
            import wrappers

            return wrappers.make_env(env_id, **env_kwargs)
        if is_project_env(env_id):
            env_kwargs.setdefault("trajectory", False)
        env = gym.make(env_id, **env_kwargs)
    except TypeError as err:
        if "keyword argument" not in str(err):
            raise
        raise ValueError(f"{env_id} does not take the env kwargs {env_kwargs} ({err}); fix --env-kwargs or env_kwargs "
                         f"in zoo/hyperparams/{algo}.yml.") from err
    env = sb3_observation(env)  # the same wrapper rl_zoo3 applies from the baselines' yml env_wrapper
    return env


VEC_ENV_CLASSES: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}


def make_vec_env(
    env_id: str,
    algo: str,
    n_envs: int = 1,
    seed: int | None = None,
    monitor_dir: str | Path | None = None,
    append_monitor: bool = False,
    env_kwargs: dict | None = None,
    vec_env: str = "dummy",
) -> VecEnv:
    """``DummyVecEnv`` (or ``SubprocVecEnv`` with ``vec_env="subproc"``) of ``n_envs`` monitored envs; monitor files
    ``<monitor_dir>/<rank>.monitor.csv`` (appended to with ``append_monitor``, as a resumed run does).

    The monitor file of each env is flushed after every episode (SB3's ``ResultsWriter``), so a killed
    run keeps all finished episodes readable.
    """
    check_env_id(env_id)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}.")

    def factory(rank: int) -> Callable[[], gym.Env]:
        def _init() -> gym.Env:
            env = make_single_env(env_id, algo, env_kwargs)
            path = None if monitor_dir is None else str(Path(monitor_dir) / str(rank))
            env = Monitor(env, filename=path, override_existing=not append_monitor)
            if seed is not None:
                env.action_space.seed(seed + rank)
            return env

        return _init

    if vec_env not in VEC_ENV_CLASSES:
        raise ValueError(f"Unknown vec_env {vec_env!r}; use one of {sorted(VEC_ENV_CLASSES)}.")
    venv = VEC_ENV_CLASSES[vec_env]([factory(i) for i in range(n_envs)])
    if seed is not None:
        venv.seed(seed)
    return venv
