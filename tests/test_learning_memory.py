"""Long-memory and in-context-adaptation learning checks (``bench/memory_tasks.py`` settings, short versions).

The wrapper test is fast (default suite); the learning tests are ``@pytest.mark.slow`` (``pytest -m slow``), fixed
seeds, thresholds below what the seed reached on the 2-core development machine.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy

from amago_sb import AMAGO


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "memory_tasks.py"
    spec = importlib.util.spec_from_file_location("memory_tasks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("memory_tasks", module)
    spec.loader.exec_module(module)
    return module


mt = _load_bench()


def test_make_envs_forms():
    """AMAGO gets the trajectory form (prev action/reward visible), the baselines the plain env."""
    amago_env = mt.make_envs("bandit", "amago", 100, n_envs=2, seed=0)
    plain_env = mt.make_envs("bandit", "ppo", 100, n_envs=2, seed=0)
    assert set(amago_env.observation_space.spaces) >= {"obs", "prev_action", "prev_reward", "time", "reset"}
    assert plain_env.observation_space.shape == (1,)
    with pytest.raises(ValueError, match="Unknown task"):
        mt.make_envs("maze", "ppo", 10, n_envs=1, seed=0)


@pytest.mark.slow
def test_amago_bandit_adapts_in_context():
    """About 2-4 min on 2 shared cores: >= 90 % of the oracle's 24 within 4k env steps (chance: 15)."""
    env = mt.make_envs("bandit", "amago", 0, n_envs=8, seed=0)
    model = AMAGO("Transformer", env, seed=0, num_threads=1, **mt.AMAGO_KWARGS["bandit"])
    model.learn(4000)
    eval_env = mt.make_envs("bandit", "amago", 0, n_envs=8, seed=1000)
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=96, deterministic=True)
    assert mean >= 0.9 * 24, mean


@pytest.mark.slow
def test_amago_tmaze_corridor_30():
    """About 2-4 min on 2 shared cores: the cue must be carried 30 steps (time limit as termination)."""
    corridor = 30
    kwargs = mt.model_kwargs("tmaze", "amago", corridor, {"context_len": corridor + 4})
    env = mt.make_envs("tmaze", "amago", corridor, n_envs=8, seed=0, terminal_time_limit=True)
    model = AMAGO("Transformer", env, seed=0, num_threads=1, **kwargs)
    model.learn(12_000)
    eval_env = mt.make_envs("tmaze", "amago", corridor, n_envs=8, seed=1000, terminal_time_limit=True)
    outcomes: list[str] = []

    def record(locals_: dict, _globals: dict) -> None:
        if locals_["done"]:
            info = locals_["info"]
            outcomes.append("correct" if info["success"] else "wrong" if info["chose"] else "wait")

    evaluate_policy(model, eval_env, n_eval_episodes=24, deterministic=True, callback=record)
    print("T-maze corridor 30 outcomes:", {k: outcomes.count(k) for k in ("correct", "wrong", "wait")})
    # memory: a memoryless agent is wrong as often as right
    assert outcomes.count("correct") >= 18 and outcomes.count("wrong") <= 1, outcomes


@pytest.mark.slow
def test_amago_tmaze_corridor_100():
    """About 4 min on 2 cores: Ni et al.'s passive T-maze with 100 steps between cue and choice (bench settings; the
    original AMAGO solves it by 35k env steps). Seed 0 reached 100 % success at 32k steps (docs/benchmarks.md)."""
    corridor = 100
    env = mt.make_envs("tmaze", "amago", corridor, n_envs=8, seed=0, terminal_time_limit=True)
    model = AMAGO("Transformer", env, seed=0, num_threads=1, **mt.model_kwargs("tmaze", "amago", corridor))
    model.learn(36_000)
    eval_env = mt.make_envs("tmaze", "amago", corridor, n_envs=8, seed=1000, terminal_time_limit=True)
    successes: list[bool] = []
    evaluate_policy(model, eval_env, n_eval_episodes=24, deterministic=True,
                    callback=lambda loc, _g: successes.append(bool(loc["info"]["success"])) if loc["done"] else None)
    print("T-maze corridor 100 success rate:", np.mean(successes))
    assert np.mean(successes) >= 0.9, successes
