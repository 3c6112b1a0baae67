"""One training run in rl-baselines3-zoo's layout; used by ``zoo.train``, ``zoo.benchmark`` and ``zoo.tune``.

A run writes, under ``<log_folder>/<algo>/<env>_<n>/`` (``n`` = 1 + the highest existing run id):

* ``<env>/args.yml`` and ``<env>/config.yml``: the command-line arguments and the resolved hyperparameters,
  written *before* training starts, so a killed run still says what it was;
* ``<rank>.monitor.csv``: one per training env (SB3 ``Monitor``, flushed after every episode);
* ``evaluations.npz`` and ``best_model.zip`` (``EvalCallback``, when ``eval_freq > 0``);
* ``rl_model_<steps>_steps.zip`` checkpoints (when ``save_freq > 0``);
* ``<env>.zip``: the final model (also saved on Ctrl-C), and ``summary.yml`` (timesteps, wall time, last eval);
* ``replay/``: AMAGO's replay files (unless ``-params replay_dir:...`` puts them elsewhere); a run continued with
  ``-i`` keeps filling the replay of the run it continues.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList, EvalCallback

from amago_sb.atomic_files import clean_temp_files
from amago_sb.checkpoint import AtomicCheckpointCallback
from amago_sb.serialization import read_data_json
from zoo.algos import build_model, check_algo, check_hyperparams, get_algo_class
from zoo.envs import check_env_id, make_vec_env
from zoo.hyperparams import SPECIAL_KEYS, convert_value, resolve_env_kwargs, resolve_hyperparams

__all__ = ["TrainArgs", "TrainResult", "train", "next_run_dir", "checkpoint_env_id", "load_model", "run_hyperparams"]


@dataclass
class TrainArgs:
    """Arguments of one run (the fields of ``python -m zoo.train``; ``-1`` means "from the yml" or "disabled")."""

    algo: str
    env: str
    n_timesteps: int = -1
    seed: int = -1
    log_folder: str = "logs"
    eval_freq: int = 25_000
    eval_episodes: int = 5
    n_eval_envs: int = 1
    save_freq: int = -1
    tensorboard_log: str = ""
    progress: bool = False
    hyperparams: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    trained_agent: str = ""
    verbose: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vec_env: str = "dummy"  # SB3 VecEnv class of the training envs: "dummy" or "subproc" (one process per env)
    num_threads: int = -1  # torch intra-op threads; -1 keeps torch's default (1 is fastest for small nets on a busy CPU)
    keep_checkpoints: int = 5  # --save-freq checkpoints kept (newest first); 0 keeps every one
    allow_pickle: bool = False  # -i: also load checkpoints whose data is pickled (runs code from the file: trusted only)
    trust_imports: bool = False  # yml *_class entries may import from any module


@dataclass
class TrainResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    model_path: Path
    n_timesteps: int
    wall_time_s: float
    last_eval_mean: float | None
    last_eval_std: float | None


def next_run_dir(log_folder: str | Path, algo: str, env_id: str) -> Path:
    """``<log_folder>/<algo>/<env_id>_<n>`` with ``n`` one above the highest existing id (first run: 1)."""
    base = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_id)}_(\d+)$")
    ids = [int(m.group(1)) for p in base.glob(f"{env_id}_*") if (m := pattern.match(p.name))]
    return base / f"{env_id}_{max(ids, default=0) + 1}"


def checkpoint_env_id(path: str | Path) -> str | None:
    """The env id a zoo checkpoint was trained on (stored in the zip, else in ``args.yml`` next to it)."""
    path = Path(path)
    data = read_data_json(path)  # plain JSON: nothing is unpickled
    if isinstance(data.get("zoo_env_id"), str):
        return str(data["zoo_env_id"])
    for args_file in path.parent.glob("*/args.yml"):
        with open(args_file) as f:
            saved = yaml.safe_load(f) or {}
        if saved.get("env"):
            return str(saved["env"])
    return None


def _check_trained_agent(args: TrainArgs) -> None:
    """Refuse a ``-i`` checkpoint that is missing, not a zip, or was trained on another env."""
    path = Path(args.trained_agent)
    if path.suffix != ".zip" or not path.is_file():
        raise ValueError(f"--trained-agent {args.trained_agent!r} must be an existing .zip file saved by zoo.train.")
    trained_on = checkpoint_env_id(path)
    if trained_on is not None and trained_on != args.env:
        raise ValueError(
            f"--trained-agent {path} was trained on env {trained_on!r}, not {args.env!r}: continue it with "
            f"--env {trained_on}, or pick a checkpoint from {Path(args.log_folder) / args.algo / (args.env + '_<n>')}."
        )


def run_hyperparams(model_path: str | Path, algo: str, env_id: str, overrides: dict[str, Any] | None = None, *,
                    trust_imports: bool = False) -> dict[str, Any]:
    """The converted hyperparameters the run of ``model_path`` trained with (its ``<env>/config.yml``; the yml's for
    runs without one), with the ``overrides`` (``-params``) on top."""
    for config_file in Path(model_path).parent.glob("*/config.yml"):
        saved = yaml.safe_load(config_file.read_text()) or {}
        table = {"default": saved}
        return resolve_hyperparams(algo, env_id, overrides, table=table, trust_imports=trust_imports)[1]
    return resolve_hyperparams(algo, env_id, overrides, trust_imports=trust_imports)[1]


def load_model(algo: str, path: str | Path, env, hyperparams: dict[str, Any], *, device: str = "auto",
               allow_pickle: bool = False, **kwargs: Any) -> BaseAlgorithm:
    """Load a zoo checkpoint without unpickling anything (unless ``allow_pickle``).

    AMAGO reads its own pickle-free format (``AMAGO.load``). SB3's other algorithms pickle their spaces and schedules
    into every zip, so their model is rebuilt from the run's ``hyperparams`` (converted, as for training) on ``env``
    and only the tensors (``weights_only``) and the counters (plain JSON) are read from the file.

    Raises:
        amago_sb.serialization.UnsafeCheckpointError / NotAMAGOCheckpointError (ValueErrors): see ``AMAGO.load``.
    """
    cls = get_algo_class(algo)
    if algo == "amago":
        return cls.load(path, env=env, device=device, allow_pickle=allow_pickle, **kwargs)
    if allow_pickle:
        return cls.load(path, env=env, device=device, **kwargs)
    model = build_model(algo, env, hyperparams, device=device, seed=kwargs.pop("seed", None),
                        tensorboard_log=kwargs.pop("tensorboard_log", None), verbose=kwargs.pop("verbose", 0))
    model.set_parameters(str(path), exact_match=True, device=device)
    data = read_data_json(path)
    for key in ("num_timesteps", "_n_updates", "_episode_num"):
        if isinstance(data.get(key), int):
            setattr(model, key, data[key])
    return model


def _load_trained_agent(args: TrainArgs, env, tensorboard_log: str | None) -> BaseAlgorithm:
    path = Path(args.trained_agent)
    overrides = {k: convert_value(k, v, args.trust_imports) for k, v in args.hyperparams.items() if k not in SPECIAL_KEYS}
    hyperparams = run_hyperparams(path, args.algo, args.env, args.hyperparams, trust_imports=args.trust_imports)
    try:
        return load_model(args.algo, path, env, hyperparams, device=args.device, allow_pickle=args.allow_pickle,
                          tensorboard_log=tensorboard_log, verbose=args.verbose, **overrides)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"Cannot continue {path} as {args.algo} on {args.env}: {err}") from err


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def train(args: TrainArgs) -> TrainResult:
    """Run one training job as described by ``args`` and return where its outputs are."""
    check_algo(args.algo)
    check_env_id(args.env)
    if args.n_timesteps != -1 and args.n_timesteps < 1:
        raise ValueError(f"-n/--n-timesteps must be >= 1 env steps, got {args.n_timesteps} (omit it to use the yml's "
                         "n_timesteps).")
    if args.keep_checkpoints < 0:
        raise ValueError(f"--keep-checkpoints must be >= 0 (0 keeps all), got {args.keep_checkpoints}.")
    log_root = Path(args.log_folder)
    if log_root.exists() and not log_root.is_dir():
        raise ValueError(f"-f/--log-folder {args.log_folder!r} is a file, not a directory; pick a folder for the runs.")
    raw, hyperparams = resolve_hyperparams(args.algo, args.env, args.hyperparams, trust_imports=args.trust_imports)
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else int(raw.get("n_timesteps", 0))
    if n_timesteps <= 0:
        raise ValueError(f"No training budget: pass -n/--n-timesteps or set n_timesteps in zoo/hyperparams/{args.algo}.yml.")
    seed = args.seed if args.seed >= 0 else int(np.random.randint(2**31 - 1))
    n_envs = int(raw.get("n_envs", 1))
    env_kwargs = resolve_env_kwargs(args.algo, args.env, raw, args.env_kwargs)
    check_hyperparams(args.algo, hyperparams)  # all input checks before anything is written
    if args.trained_agent:
        _check_trained_agent(args)

    if args.num_threads > 0:
        import torch

        torch.set_num_threads(args.num_threads)
    resumed_dir = _run_dir_of(args.trained_agent, args.env) if args.trained_agent else None
    run_dir = resumed_dir or next_run_dir(args.log_folder, args.algo, args.env)
    run_dir.mkdir(parents=True, exist_ok=resumed_dir is not None)
    stage = {"learning": False}
    try:
        return _run(args, run_dir, raw, hyperparams, n_timesteps, seed, n_envs, env_kwargs, stage,
                    resumed=resumed_dir is not None)
    except BaseException:
        if not stage["learning"] and resumed_dir is None:  # failed while setting up: leave no empty run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_dir_of(checkpoint: str, env_id: str) -> Path | None:
    """The zoo run folder that holds ``checkpoint`` (it has ``<env>/args.yml``), which a resumed run continues."""
    parent = Path(checkpoint).resolve().parent
    return parent if (parent / env_id / "args.yml").is_file() else None


def _preload_evaluations(callback: EvalCallback, run_dir: Path) -> None:
    """Start a resumed run's EvalCallback from the evaluations already in ``run_dir`` (it rewrites the whole file)."""
    path = run_dir / "evaluations.npz"
    if not path.is_file():
        return
    with np.load(path, allow_pickle=False) as old:
        callback.evaluations_timesteps = [int(t) for t in old["timesteps"]]
        callback.evaluations_results = [list(r) for r in old["results"]]
        callback.evaluations_length = [list(n) for n in old["ep_lengths"]]
        if len(old["results"]):
            callback.best_mean_reward = float(np.max(np.mean(old["results"], axis=1)))


def _run(args: TrainArgs, run_dir: Path, raw: dict[str, Any], hyperparams: dict[str, Any], n_timesteps: int, seed: int,
         n_envs: int, env_kwargs: dict[str, Any], stage: dict[str, bool], resumed: bool = False) -> TrainResult:
    if args.algo == "amago" and not args.trained_agent and raw.get("replay_dir") is None:
        # keep AMAGO's replay with its run (not in a temp dir that nobody removes); `-i` then resumes with it
        raw["replay_dir"] = hyperparams["replay_dir"] = str(run_dir / "replay")
    clean_temp_files(run_dir)  # orphans of saves that a kill interrupted (a resumed run's folder may hold some)
    # a resumed run keeps the files of its start and records each continuation next to them
    suffix = f"_resume_{len(list((run_dir / args.env).glob('args_resume_*.yml'))) + 1}" if resumed else ""
    _write_yaml(run_dir / args.env / f"args{suffix}.yml",
                {**asdict(args), "seed": seed, "n_timesteps": n_timesteps, "env_kwargs": env_kwargs})
    _write_yaml(run_dir / args.env / f"config{suffix}.yml", {**raw, "n_timesteps": n_timesteps})
    if args.verbose:
        print(f"Saving to {run_dir}")

    tensorboard_log = os.path.join(args.tensorboard_log, args.env) if args.tensorboard_log else None
    env = make_vec_env(args.env, args.algo, n_envs, seed=seed, monitor_dir=run_dir, env_kwargs=env_kwargs,
                       vec_env=args.vec_env, append_monitor=resumed)
    eval_env = None
    try:
        if args.trained_agent:
            model = _load_trained_agent(args, env, tensorboard_log)
        else:
            model = build_model(
                args.algo,
                env,
                hyperparams,
                seed=seed,
                tensorboard_log=tensorboard_log,
                verbose=args.verbose,
                device=args.device,
            )
        model.zoo_env_id = args.env  # saved in the zip: lets -i refuse a checkpoint from another env
        model.zoo_algo = args.algo
        callbacks = []
        if args.eval_freq > 0:
            eval_env = make_vec_env(args.env, args.algo, args.n_eval_envs, seed=seed + 10_000, env_kwargs=env_kwargs)
            eval_cb = EvalCallback(
                eval_env,
                n_eval_episodes=args.eval_episodes,
                eval_freq=max(args.eval_freq // n_envs, 1),
                log_path=str(run_dir),
                best_model_save_path=str(run_dir),
                deterministic=True,
                verbose=args.verbose,
            )
            if resumed:
                _preload_evaluations(eval_cb, run_dir)
            callbacks.append(eval_cb)
        if args.save_freq > 0:  # atomic, rotated (the newest keep_checkpoints kept; 0: all)
            callbacks.append(AtomicCheckpointCallback(max(args.save_freq // n_envs, 1), run_dir, name_prefix="rl_model",
                                                      keep_last=args.keep_checkpoints or None, save_on_end=False))
        start = time.time()
        stage["learning"] = True  # from here on the run folder holds data (logs, replay): never deleted
        try:
            model.learn(
                n_timesteps,
                callback=CallbackList(callbacks),
                progress_bar=args.progress,
                reset_num_timesteps=not args.trained_agent,
            )
        except KeyboardInterrupt:  # rl-zoo behaviour: keep what was learned
            print("Interrupted: saving the model before exiting.")
        wall = time.time() - start
        model_path = run_dir / f"{args.env}.zip"
        model.save(model_path)
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()

    last_mean = last_std = None
    if (run_dir / "evaluations.npz").is_file():
        results = np.load(run_dir / "evaluations.npz")["results"]
        if len(results):
            last_mean, last_std = float(np.mean(results[-1])), float(np.std(results[-1]))
    summary = {
        "n_timesteps": int(model.num_timesteps),
        "wall_time_s": round(wall, 2),
        "seed": seed,
        "last_eval_mean": last_mean,
        "last_eval_std": last_std,
    }
    _write_yaml(run_dir / "summary.yml", summary)
    if args.verbose:
        print(f"Saved final model to {model_path} ({wall:.1f} s)")
    return TrainResult(run_dir, model_path, int(model.num_timesteps), wall, last_mean, last_std)
