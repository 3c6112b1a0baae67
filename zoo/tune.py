"""``python -m zoo.tune --algo ALGO --env ID --trials N --steps S``: hyperparameter search with optuna.

optuna is an optional dependency (``pip install optuna`` or ``pip install -e .[zoo]``); without it the command
exits with that instruction. Each trial trains one run with :func:`zoo.exp.train` (hyperparameters from the yml,
then the trial's sample on top) and scores it by the mean return of its last deterministic evaluation. The best
hyperparameters are printed and written to ``<log-folder>/<algo>/<env>_best.yml`` as a yml entry that can be
pasted into ``zoo/hyperparams/<algo>.yml``. Only keys that the algorithm's constructor accepts are sampled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from zoo.algos import check_algo, constructor_keys, get_algo_class
from zoo.envs import check_env_id
from zoo.exp import TrainArgs, train
from zoo.hyperparams import parse_overrides

__all__ = ["SAMPLERS", "import_optuna", "sample_hyperparams", "tune", "main"]

OPTUNA_HELP = "zoo.tune needs optuna, an optional dependency: pip install optuna (or pip install -e '.[zoo]')."


def import_optuna():
    """Return the optuna module, or raise ``ImportError`` telling how to install it."""
    try:
        import optuna
    except ImportError as err:
        raise ImportError(OPTUNA_HELP) from err
    return optuna


def _sample_ppo(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [64, 128, 256, 512]),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "n_epochs": trial.suggest_categorical("n_epochs", [5, 10, 20]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
    }


def _sample_recurrent_ppo(trial) -> dict[str, Any]:
    params = _sample_ppo(trial)
    params["policy_kwargs"] = {"lstm_hidden_size": trial.suggest_categorical("lstm_hidden_size", [64, 128, 256])}
    return params


def _sample_amago(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 24, 32, 64]),
        "gradient_steps": trial.suggest_categorical("gradient_steps", [1, 2, 4]),
        "tau": trial.suggest_categorical("tau", [0.001, 0.003, 0.01]),
    }


SAMPLERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "ppo": _sample_ppo,
    "recurrent_ppo": _sample_recurrent_ppo,
    "amago": _sample_amago,
}


def sample_hyperparams(algo: str, trial) -> dict[str, Any]:
    """The trial's sample for ``algo``, restricted to keys that the algorithm's constructor accepts."""
    valid = set(constructor_keys(get_algo_class(algo)))
    return {k: v for k, v in SAMPLERS[algo](trial).items() if k in valid}


def tune(
    algo: str,
    env_id: str,
    trials: int,
    steps: int,
    log_folder: str | Path = "logs/tune",
    eval_episodes: int = 5,
    seed: int = 0,
    fixed: dict[str, Any] | None = None,
    device: str = "auto",
    num_threads: int = -1,
    storage: str | None = None,
    study_name: str | None = None,
):
    """Run an optuna study (TPE sampler, maximize final eval return) and return it."""
    optuna = import_optuna()
    check_algo(algo)
    check_env_id(env_id)

    def objective(trial) -> float:
        params = {**(fixed or {}), **sample_hyperparams(algo, trial)}
        args = TrainArgs(
            algo=algo,
            env=env_id,
            n_timesteps=steps,
            seed=seed,
            log_folder=str(log_folder),
            eval_freq=max(steps // 4, 1),
            eval_episodes=eval_episodes,
            hyperparams=params,
            device=device,
            verbose=0,
            num_threads=num_threads,
        )
        result = train(args)
        trial.set_user_attr("run_dir", str(result.run_dir))
        if result.last_eval_mean is None:
            raise optuna.TrialPruned("no evaluation ran")
        return result.last_eval_mean

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        storage=storage,
        study_name=study_name,
        load_if_exists=storage is not None,
    )
    study.optimize(objective, n_trials=trials)
    return study


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m zoo.tune", description=__doc__.split("\n")[0])
    p.add_argument("--algo", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--steps", type=int, default=50_000, help="env steps per trial")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-f", "--log-folder", default="logs/tune")
    p.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help="fixed overrides")
    p.add_argument("--storage", default=None, help="optuna storage URL, e.g. sqlite:///tune.db (resumable)")
    p.add_argument("--study-name", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--num-threads", type=int, default=-1)
    ns = p.parse_args(argv)
    try:
        import_optuna()
        check_algo(ns.algo)
        check_env_id(ns.env)
        fixed = parse_overrides(ns.hyperparams)
        if ns.trials <= 0 or ns.steps <= 0:
            raise ValueError(f"--trials and --steps must be positive, got {ns.trials} and {ns.steps}.")
    except (ImportError, ValueError) as err:
        p.exit(2, f"zoo.tune: error: {err}\n")
    study = tune(
        ns.algo,
        ns.env,
        ns.trials,
        ns.steps,
        ns.log_folder,
        ns.eval_episodes,
        ns.seed,
        fixed,
        ns.device,
        ns.num_threads,
        ns.storage,
        ns.study_name,
    )
    best = {**fixed, **study.best_trial.params}
    if "lstm_hidden_size" in best:
        best["policy_kwargs"] = {"lstm_hidden_size": best.pop("lstm_hidden_size")}
    out = Path(ns.log_folder) / ns.algo / f"{ns.env}_best.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        f.write(f"# best of {len(study.trials)} trials, final eval return {study.best_value:.4f}, {ns.steps} steps each\n")
        yaml.safe_dump({ns.env: best}, f, sort_keys=False)
    print(f"Best return {study.best_value:.4f} with {best}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
