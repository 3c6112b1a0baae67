"""AMAGO inside rl-baselines3-zoo: its algorithm table, its samplers, and an ``ExperimentManager`` with our guarantees.

:func:`register` adds ``amago`` (and ``recurrent_ppo``, our name for rl_zoo3's ``ppo_lstm``) to ``rl_zoo3.utils.ALGOS``
and to the optuna sampler tables, and makes ``rl_zoo3.train`` build a :class:`ZooExperimentManager`. Everything else
is rl_zoo3's own code: its flags, its env creation (``make_vec_env``, ``env_wrapper``, ``--gym-packages``,
``--env-kwargs``), its callbacks, ``-optimize`` with its samplers and pruners, ``--track``.

What the manager changes, and why:

* **Hyperparameters**: ``zoo/hyperparams/<algo>.yml`` when it has the env (or a ``default`` entry and rl_zoo3's own
  file lacks the env); otherwise rl_zoo3's file (so ``--algo ppo --env CartPole-v1`` gets rl_zoo3's tuned entry).
  ``policy_kwargs.activation_fn`` may be a name (``tanh``), ``*_class`` entries are imported from trusted packages only
  (``--trust-imports`` lifts that), and unknown keys fail with the closest valid names.
* **Files**: ``args.yml`` / ``config.yml`` are plain YAML (rl_zoo3 writes python-tagged YAML); ``summary.yml`` records
  steps, wall time and the last evaluation; ``--save-freq`` checkpoints are atomic and rotated
  (``--keep-checkpoints``); AMAGO's replay lives in ``<run>/replay``; a run that fails while being set up leaves no
  folder; temp files of killed saves are removed.
* **Loading**: ``-i`` never unpickles: AMAGO's files are pickle-free, SB3 baselines are rebuilt from the
  hyperparameters and only their tensors are read; ``vecnormalize.pkl`` is refused (``--allow-pickle`` opts in).
  ``-i`` continues the same run folder (monitor files appended, ``evaluations.npz`` kept, ``args_resume_<k>.yml``) and
  the step counter continues.
* **Evaluation** runs on envs seeded apart from the training envs (seed + 10000), so it never replays their episodes.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv

from amago_sb.atomic_files import clean_temp_files
from amago_sb.checkpoint import AtomicCheckpointCallback
from amago_sb.serialization import UnsafeCheckpointError
from zoo.algos import check_hyperparams
from zoo.hyperparams import convert_value
from zoo.runs import checkpoint_env_id, load_model, write_yaml

__all__ = ["ZooOptions", "ZooExperimentManager", "register", "config_file", "sample_amago_params", "last_run_dir"]

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
# our algo name -> rl_zoo3's name of the same algorithm (its hyperparameter file and sampler)
RLZOO_ALIASES = {"recurrent_ppo": "ppo_lstm"}
EVAL_SEED_OFFSET = 10_000


@dataclass
class ZooOptions:
    """The flags ``zoo.train`` adds to rl_zoo3's (set by :func:`zoo.train.main` before rl_zoo3 parses the rest)."""

    keep_checkpoints: int = 5  # --save-freq checkpoints kept, newest first; 0 keeps all
    allow_pickle: bool = False  # -i: load pickled checkpoints / vecnormalize.pkl (runs code from the file)
    trust_imports: bool = False  # yml *_class entries may import from any module


_LAST_RUN: list[Path] = []  # run folder of the newest manager (zoo.train.run returns it)


def last_run_dir() -> Path | None:
    """The run folder of the last experiment set up in this process (``None`` before any)."""
    return _LAST_RUN[-1] if _LAST_RUN else None


def sample_amago_params(trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl_zoo3 sampler signature: AMAGO's learning rate, batch, update ratio and target-network speed."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 24, 32, 64]),
        "gradient_steps": trial.suggest_categorical("gradient_steps", [1, 2, 4]),
        "tau": trial.suggest_categorical("tau", [0.001, 0.003, 0.01]),
    }


def _identity_params(params: dict[str, Any]) -> dict[str, Any]:
    return dict(params)


def register() -> None:
    """Make rl_zoo3 know ``amago`` and ``recurrent_ppo`` and build :class:`ZooExperimentManager` (idempotent)."""
    import rl_zoo3.train
    from rl_zoo3 import hyperparams_opt, utils

    import wrappers  # noqa: F401  (registers the project's env ids)
    from amago_sb import AMAGO

    utils.ALGOS.setdefault("amago", AMAGO)
    hyperparams_opt.HYPERPARAMS_SAMPLER.setdefault("amago", sample_amago_params)
    hyperparams_opt.HYPERPARAMS_CONVERTER.setdefault("amago", _identity_params)
    for ours, theirs in RLZOO_ALIASES.items():
        utils.ALGOS.setdefault(ours, utils.ALGOS[theirs])
        hyperparams_opt.HYPERPARAMS_SAMPLER.setdefault(ours, hyperparams_opt.HYPERPARAMS_SAMPLER[theirs])
        hyperparams_opt.HYPERPARAMS_CONVERTER.setdefault(ours, hyperparams_opt.HYPERPARAMS_CONVERTER[theirs])
    rl_zoo3.train.ExperimentManager = ZooExperimentManager  # type: ignore[misc]


def _entries(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def config_file(algo: str, env_id: str) -> Path:
    """The hyperparameter file for ``algo`` on ``env_id`` (see the module docstring for the rule)."""
    import rl_zoo3

    ours = HYPERPARAMS_DIR / f"{algo}.yml"
    theirs = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{RLZOO_ALIASES.get(algo, algo)}.yml"
    if ours.is_file():
        entries = _entries(ours)
        if env_id in entries or not theirs.is_file() or ("default" in entries and env_id not in _entries(theirs)):
            return ours
    return theirs


def _plain(value: Any) -> Any:
    """``value`` as plain YAML data: classes and functions as ``module:Name``, other objects as their repr."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if inspect.isclass(value) or inspect.isfunction(value):
        return f"{value.__module__}:{value.__qualname__}"
    return repr(value)


class ZooExperimentManager(ExperimentManager):
    """rl_zoo3's ExperimentManager with the project's hyperparameter files, safe loading and durable run folders."""

    options = ZooOptions()

    def __init__(self, args, algo: str, env_id: str, *rest, **kwargs) -> None:
        if kwargs.get("config") is None:
            kwargs["config"] = str(config_file(algo, env_id))
        super().__init__(args, algo, env_id, *rest, **kwargs)
        self.resumed = False
        if self.continue_training:
            parent = Path(self.trained_agent).resolve().parent
            if (parent / str(self.env_name) / "args.yml").is_file():  # continue that run's folder
                self.save_path, self.params_path = str(parent), str(parent / str(self.env_name))
                self.resumed = True
        _LAST_RUN.append(Path(self.save_path))
        self._wall_time = 0.0

    # ---- hyperparameters ----
    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """rl_zoo3's rule, except that a continued run (``-i``) keeps the hyperparameters it was trained with (its
        ``config.yml``), with ``-params`` on top."""
        saved = Path(self.params_path) / "config.yml"
        if not (self.resumed and saved.is_file()):
            cli, self.env_kwargs = self.env_kwargs, {}  # rl_zoo3 would replace the entry's env_kwargs: merge instead
            hyperparams, saved_hyperparams = super().read_hyperparameters()
            if cli:
                merged = {**(hyperparams.get("env_kwargs") or {}), **cli}
                hyperparams["env_kwargs"] = saved_hyperparams["env_kwargs"] = merged
            return hyperparams, saved_hyperparams
        print(f"Loading hyperparameters from: {saved}")
        hyperparams = {**(yaml.safe_load(saved.read_text()) or {}), **(self.custom_hyperparams or {})}
        if self.env_kwargs:
            hyperparams["env_kwargs"] = self.env_kwargs
        if self._eval_env_kwargs_args is None and "env_kwargs" in hyperparams:
            self.eval_env_kwargs = hyperparams["env_kwargs"]
        return hyperparams, dict(sorted(hyperparams.items()))

    def _preprocess_hyperparams(self, hyperparams: dict[str, Any]):
        out, env_wrapper, callbacks, vec_env_wrapper = super()._preprocess_hyperparams(hyperparams)
        for key in list(out):
            if key == "policy_kwargs" or (key.endswith("_class") and isinstance(out[key], str)):
                out[key] = convert_value(key, out[key], self.options.trust_imports)
        if self.algo in ("amago", "ppo", "recurrent_ppo"):
            check_hyperparams(self.algo, out)
        if self.algo == "amago" and not self.optimize_hyperparameters and not self.continue_training:
            out.setdefault("replay_dir", str(Path(self.save_path).resolve() / "replay"))
        if self.resumed:
            self.monitor_kwargs = {**self.monitor_kwargs, "override_existing": False}
        # rl_zoo3 leaves the eval env without the yml's env_kwargs, and --eval-env-kwargs replaces them: merge instead
        # (so that `--eval-env-kwargs split:test` evaluates MetaWorldML1-v0 on its held-out goals, all else equal)
        self.eval_env_kwargs = {**self.env_kwargs, **(self._eval_env_kwargs_args or {})}
        return out, env_wrapper, callbacks, vec_env_wrapper

    # ---- set-up: checks first, no folder left behind on failure ----
    def setup_experiment(self):
        if self.continue_training:
            trained_on = checkpoint_env_id(self.trained_agent)
            if trained_on is not None and trained_on != self.env_name.gym_id:
                raise ValueError(
                    f"--trained-agent {self.trained_agent} was trained on env {trained_on!r}, not "
                    f"{self.env_name.gym_id!r}: continue it with --env {trained_on}.")
        existed = Path(self.save_path).exists()
        if existed:
            clean_temp_files(self.save_path)  # orphans of saves that a kill interrupted
        try:
            return super().setup_experiment()
        except BaseException:
            if not existed:
                shutil.rmtree(self.save_path, ignore_errors=True)
            raise

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        if not eval_env:
            return super().create_envs(n_envs, eval_env, no_log)
        seed, self.seed = self.seed, self.seed + EVAL_SEED_OFFSET  # evaluation never replays training episodes
        try:
            return super().create_envs(n_envs, eval_env, no_log)
        finally:
            self.seed = seed

    def create_callbacks(self) -> None:
        super().create_callbacks()
        for i, cb in enumerate(self.callbacks):
            if isinstance(cb, CheckpointCallback):  # atomic and rotated instead of SB3's plain save
                self.callbacks[i] = AtomicCheckpointCallback(
                    cb.save_freq, self.save_path, name_prefix="rl_model",
                    keep_last=self.options.keep_checkpoints or None, save_on_end=False)
            elif isinstance(cb, EvalCallback) and self.resumed:
                _preload_evaluations(cb, Path(self.save_path))

    def _maybe_normalize(self, env: VecEnv, eval_env: bool) -> VecEnv:
        stats = Path(self.trained_agent).parent / str(self.env_name) / "vecnormalize.pkl"
        if self.trained_agent and stats.is_file() and not self.options.allow_pickle:
            raise UnsafeCheckpointError(
                f"{stats} is a pickle (VecNormalize statistics); loading it runs code from the file. Pass "
                "--allow-pickle if you trust it.")
        return super()._maybe_normalize(env, eval_env)

    def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: VecEnv) -> BaseAlgorithm:
        overrides = {k: convert_value(k, v, self.options.trust_imports)
                     for k, v in (self.custom_hyperparams or {}).items()}
        kwargs = dict(seed=self.seed, tensorboard_log=self.tensorboard_log, verbose=self.verbose)
        if self.algo == "amago":
            kwargs.update(overrides)
        try:
            return load_model(self.algo, self.trained_agent, env, hyperparams, device=self.device,
                              allow_pickle=self.options.allow_pickle, **kwargs)
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"Cannot continue {self.trained_agent} as {self.algo} on {self.env_name}: {err}") from err

    # ---- files ----
    def _save_config(self, saved_hyperparams: dict[str, Any]) -> None:
        suffix = ""
        if self.resumed:
            suffix = f"_resume_{len(list(Path(self.params_path).glob('args_resume_*.yml'))) + 1}"
        args = {**vars(self.args), **vars(self.options), "env": self.env_name.gym_id, "seed": self.seed,
                "n_timesteps": self.n_timesteps, "env_kwargs": self.env_kwargs}  # resolved: zoo.enjoy reuses them
        write_yaml(Path(self.params_path) / f"args{suffix}.yml", _plain(dict(sorted(args.items()))))
        if "replay_dir" in self._hyperparams:
            saved_hyperparams = {**saved_hyperparams, "replay_dir": self._hyperparams["replay_dir"]}
        write_yaml(Path(self.params_path) / f"config{suffix}.yml",
                   _plain({**saved_hyperparams, "n_timesteps": self.n_timesteps}))
        (Path(self.params_path) / "command.txt").write_text(" ".join(getattr(sys, "orig_argv", sys.argv)))
        print(f"Log path: {self.save_path}")

    def learn(self, model: BaseAlgorithm) -> None:
        model.zoo_env_id = self.env_name.gym_id  # saved in the zip: lets -i refuse a checkpoint of another env
        kwargs: dict[str, Any] = {"reset_num_timesteps": not self.continue_training}
        if self.log_interval > -1:
            kwargs["log_interval"] = self.log_interval
        elif self.log_interval < -1:
            kwargs["log_interval"] = None
        if self.callbacks:
            kwargs["callback"] = self.callbacks
        start = time.time()
        try:
            model.learn(self.n_timesteps, **kwargs)
        except KeyboardInterrupt:  # rl_zoo3's behaviour: keep what was learned
            print("Interrupted: saving the model before exiting.")
        finally:
            self._wall_time = time.time() - start
            if self.callbacks:
                self.callbacks[0].on_training_end()
            if model.env is not None:
                model.env.close()

    def save_trained_model(self, model: BaseAlgorithm) -> None:
        super().save_trained_model(model)
        last_mean = last_std = None
        evaluations = Path(self.save_path) / "evaluations.npz"
        if evaluations.is_file():
            with np.load(evaluations, allow_pickle=False) as data:
                if len(data["results"]):
                    last_mean, last_std = float(np.mean(data["results"][-1])), float(np.std(data["results"][-1]))
        write_yaml(Path(self.save_path) / "summary.yml", {
            "n_timesteps": int(model.num_timesteps), "wall_time_s": round(self._wall_time, 2),
            "seed": int(self.seed), "last_eval_mean": last_mean, "last_eval_std": last_std})



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

