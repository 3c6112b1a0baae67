r"""``python -m zoo.train --algo amago --env ID``: rl-baselines3-zoo's ``train``, with AMAGO in its algorithm table.

Every rl_zoo3 flag works (``--gym-packages``, ``-conf``, ``-uuid``, ``--track``, ``-optimize`` with ``--sampler`` /
``--pruner``, ``--log-interval``, ``--env-kwargs``, ``-params``, ``--save-freq``, ``-i``...), and run folders are
rl_zoo3's ``<log-folder>/<algo>/<env>_<n>/``. The algorithms are rl_zoo3's (``ppo``, ``sac``, ``ppo_lstm``...) plus
``amago`` and ``recurrent_ppo`` (= ``ppo_lstm``). See :mod:`zoo.rlzoo` for what differs from rl_zoo3 underneath
(project hyperparameter files, pickle-free loading, atomic checkpoints, resuming in place, ``summary.yml``).

Added flags: ``--keep-checkpoints N`` (``--save-freq`` checkpoints kept, default 5, 0: all), ``--allow-pickle`` (``-i``
may load pickled files), ``--trust-imports`` (yml ``*_class`` entries may import from any module). ``--env`` also
takes ``module:EnvId`` (the module is imported first, as ``gymnasium.make`` does).

Examples::

    python -m zoo.train --algo amago --env popgym-RepeatPreviousEasy-v0 -n 50000 --progress
    python -m zoo.train --algo ppo --env popgym-CountRecallEasy-v0 -params learning_rate:1e-3 n_envs:4
    python -m zoo.train --algo amago --env my_pkg:MyEnv-v0 -n 20000
    python -m zoo.train --algo amago --env popgym-RepeatPreviousEasy-v0 -optimize --n-trials 20 -n 20000

Bad input (unknown algo or env id, malformed ``-params``, ``-n 0``, a checkpoint of another env, a full disk) exits
with status 2 and a one-line explanation.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from zoo.runs import TrainResult

__all__ = ["main", "run", "split_env_module"]

PROG = "python -m zoo.train"


def _extra_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, add_help=False)
    p.add_argument("--keep-checkpoints", type=int, default=5,
                   help="--save-freq checkpoints kept, newest first (0: keep all; default 5)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="-i: also load pickled checkpoints / vecnormalize.pkl (runs code from the file: trusted only)")
    p.add_argument("--trust-imports", action="store_true",
                   help="yml / -params *_class entries may import from any module (default: trusted packages only)")
    return p


def split_env_module(env: str) -> str:
    """``module:EnvId`` -> import ``module`` (it registers the env) and return ``EnvId``; other ids unchanged."""
    module, sep, env_id = env.rpartition(":")
    if not sep or not module:
        return env
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"--env {env!r}: cannot import module {module!r} ({err}); is it installed or on PYTHONPATH?") \
            from err
    return env_id


def _flag_value(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _check_argv(argv: list[str]) -> list[str]:
    """Validate what rl_zoo3 accepts silently or answers with a traceback; returns argv with ``--env`` resolved."""
    argv = list(argv)
    n = _flag_value(argv, "-n", "--n-timesteps")
    if n is not None:
        try:
            n_steps = int(n)
        except ValueError:
            n_steps = 0
        if n_steps < 1:
            raise ValueError(f"-n/--n-timesteps must be >= 1 env steps, got {n!r} (omit it to use the yml's n_timesteps).")
    folder = _flag_value(argv, "-f", "--log-folder")
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"-f/--log-folder {folder!r} is a file, not a directory; pick a folder for the runs.")
    for flag in ("-params", "--hyperparams", "--env-kwargs", "--eval-env-kwargs"):
        if flag in argv:
            start = argv.index(flag) + 1
            end = next((i for i in range(start, len(argv)) if argv[i].startswith("-") and ":" not in argv[i]), len(argv))
            argv[start:end] = [_as_python_item(item, flag) for item in argv[start:end]]
    if "--gym-packages" in argv:  # rl_zoo3 imports them too, but only after its own env-id check would run
        for gym_package in argv[argv.index("--gym-packages") + 1:]:
            if gym_package.startswith("-"):
                break
            importlib.import_module(gym_package)
    for i, arg in enumerate(argv):
        if arg == "--env" and i + 1 < len(argv):
            argv[i + 1] = split_env_module(argv[i + 1])
        elif arg.startswith("--env="):
            argv[i] = "--env=" + split_env_module(arg.split("=", 1)[1])
    from rl_zoo3.utils import ALGOS

    from zoo.envs import check_env_id

    algo = _flag_value(argv, "--algo")
    if algo is not None and algo not in ALGOS:
        close = difflib.get_close_matches(algo.lower(), list(ALGOS), n=2, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown algo {algo!r}.{hint} Available: {', '.join(sorted(ALGOS))}.")
    env_id = _flag_value(argv, "--env")
    if env_id is not None:
        check_env_id(env_id)  # names the closest ids
    agent = _flag_value(argv, "-i", "--trained-agent")
    if agent and (not agent.endswith(".zip") or not Path(agent).is_file()):
        raise ValueError(f"--trained-agent {agent!r} must be an existing .zip file saved by zoo.train.")
    return argv


def _as_python_item(item: str, flag: str = "-params") -> str:
    """A ``key:value`` override whose value rl_zoo3 can ``eval``: python expressions stay as they are; YAML values
    that are not python (``{net_arch: [64]}``, ``true``, ``lin_3e-4``) become the python literal YAML reads."""
    key, sep, value = item.partition(":")
    if not sep or not key:
        what = "hyperparameter override" if flag in ("-params", "--hyperparams") else f"{flag} item"
        raise ValueError(f"Malformed {what} {item!r}: expected key:value, e.g. learning_rate:3e-4 or "
                         "policy_kwargs:\"dict(net_arch=[64, 64])\".")
    import rl_zoo3.utils

    try:
        eval(value, dict(vars(rl_zoo3.utils)))  # what rl_zoo3's StoreDict does with it (nn, th, np... in scope)
        return item
    except Exception:  # not a python expression: read it as YAML, as the zoo's yml files are
        from zoo.hyperparams import parse_overrides

        return f"{key}:{parse_overrides([item])[key.strip()]!r}"


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = [PROG, *argv]
    try:
        yield
    finally:
        sys.argv = saved


def _train(argv: list[str]) -> None:
    """Parse our flags, then run rl_zoo3's ``train()`` on the rest (raises on bad input)."""
    import rl_zoo3.train

    from zoo.rlzoo import ZooExperimentManager, ZooOptions, register

    extra, rest = _extra_parser().parse_known_args(argv)
    if extra.keep_checkpoints < 0:
        raise ValueError(f"--keep-checkpoints must be >= 0 (0 keeps all), got {extra.keep_checkpoints}.")
    register()
    rest = _check_argv(rest)
    ZooExperimentManager.options = ZooOptions(extra.keep_checkpoints, extra.allow_pickle, extra.trust_imports)
    with _argv(rest):
        rl_zoo3.train.train()


def run(argv: list[str]) -> TrainResult:
    """Train as ``python -m zoo.train *argv`` would, in this process, and return where the outputs are.

    Raises:
        ValueError, TypeError, OSError, ImportError: bad input (what ``main`` turns into exit status 2).
    """
    from zoo.rlzoo import last_run_dir

    before = last_run_dir()
    _train(argv)
    run_dir = last_run_dir()
    if run_dir is None or run_dir == before:
        raise RuntimeError("zoo.train did not set up a run (was -optimize given?).")
    summary = yaml.safe_load((run_dir / "summary.yml").read_text()) or {}
    env_id = yaml.safe_load(next(run_dir.glob("*/args.yml")).read_text())["env"]
    return TrainResult(run_dir, run_dir / f"{env_id}.zip", int(summary["n_timesteps"]), float(summary["wall_time_s"]),
                       summary.get("last_eval_mean"), summary.get("last_eval_std"))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        import rl_zoo3.train

        from zoo.rlzoo import register

        register()
        with _argv(argv), contextlib.suppress(SystemExit):
            rl_zoo3.train.train()
        print("\nflags added by amago-sb:\n" + _extra_parser().format_help().split("\n", 2)[-1])
        return 0
    try:
        _train(argv)
    except (ValueError, TypeError, OSError, ImportError, AssertionError, KeyError, NameError, SyntaxError) as err:
        # bad input, full disk, unreadable file: one line (rl_zoo3 itself raises some of these as assertions)
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)  # as argparse does for its own errors
    return 0


if __name__ == "__main__":
    sys.exit(main())
