"""Run folders of the zoo (rl-baselines3-zoo's layout) and loading their checkpoints without unpickling.

A run lives in ``<log_folder>/<algo>/<env>_<n>/`` (``n`` = 1 + the highest existing id): ``<env>/args.yml`` and
``<env>/config.yml`` (plain YAML, written before training), ``<rank>.monitor.csv``, ``evaluations.npz``,
``best_model.zip``, ``rl_model_<steps>_steps.zip``, the final ``<env>.zip``, ``summary.yml`` and, for AMAGO,
``replay/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

from amago_sb.serialization import read_data_json
from zoo.algos import build_model, get_algo_class
from zoo.hyperparams import resolve_hyperparams

__all__ = ["TrainResult", "next_run_dir", "checkpoint_env_id", "run_hyperparams", "load_model", "write_yaml"]


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


def write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
