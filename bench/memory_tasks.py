"""Long memory and in-context adaptation: AMAGO vs RecurrentPPO (and PPO-MLP) on the passive T-maze and a bandit.

Two tasks, chosen because the original AMAGO and SB3 baselines have published-style reference points on them:

* ``tmaze``: ``TMazePassive-v0`` with a corridor of ``--corridor`` (100) cells: the cue is shown only at the first
  step and the choice comes ``corridor`` steps later; an episode is ``corridor + 1`` steps, so only a policy that walks
  right at every step reaches the junction. As in Ni et al. 2023's passive T-maze (the version the original AMAGO
  solves), every corridor step on which the agent is behind the optimal schedule costs ``1 / corridor``
  (``behind_schedule_penalty=True``; without it random exploration never reaches the junction: 100 right moves in a
  row). Reward at the junction: +1 right side, -1 wrong side. Optimal return 1.0;
  a memoryless policy that walks right and guesses gets 0.0 on average.
* ``bandit``: ``TwoArmedBandit-v0``: 30 pulls per episode, good arm (p=0.8 vs 0.2) drawn anew every episode, constant
  observation. AMAGO sees the previous action and reward (trajectory form) and can adapt in context; the SB3
  baselines get the plain env (they see only the constant observation). Oracle return 24 (always the good arm),
  chance 15 (62.5 % of the oracle).

Every run uses a fixed seed, evaluates the deterministic policy every ``--eval-every`` env steps on a separate env
(``--eval-episodes`` episodes; evaluation time is excluded from the times) and records env steps, wall time and
process CPU time (single torch thread; on a shared machine wall time is inflated, CPU time is what the run costs on an
idle core). Results go to ``bench/results/memory_tasks/<task>_<algo>_s<seed>.json``; ``--report`` merges them into a
markdown table (stdout and ``docs/figures/memory_tasks.md``) and a PNG of the curves (``docs/figures/memory_tasks.png``).

    python bench/memory_tasks.py --all                                  # every task x algo, then the report
    python bench/memory_tasks.py --task tmaze --algo amago --steps 40000 --eval-every 4000
    python bench/memory_tasks.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from amago_sb.exploration import QuietCorridorExploration
from zoo.envs import make_vec_env as zoo_vec_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory_tasks"
FIGURES = ROOT / "docs" / "figures"
TASKS = ("tmaze", "bandit")
WRONG_CHOICE_REWARD = 0.0  # Ni et al.'s T-maze: the wrong side earns 0 (runs recorded before 2026-11-26 19:00 used -1)
ALGOS = ("amago", "recurrent_ppo", "ppo")

# AMAGO settings per task (found on this machine; see docs/benchmarks.md "Long memory and in-context adaptation").
AMAGO_KWARGS: dict[str, dict[str, Any]] = {
    # the original's T-maze exploration: regular noise (1.0 -> 0.01) on the first step and the last 3, 0.5/H between
    "tmaze": dict(context_len=104, reward_multiplier=100.0, gammas=(0.1, 0.9, 0.99, 0.999, 0.9999),
                  exploration_class=QuietCorridorExploration, exploration_start=1.0, exploration_end=0.01,
                  exploration_steps=10_000, learning_starts=2000),
    "bandit": dict(context_len=32, reward_multiplier=10.0, exploration_start=1.0, exploration_end=0.05,
                   exploration_steps=3000, learning_starts=1000),
}
# Baselines: sb3-contrib / SB3 defaults as in zoo/hyperparams (n_steps 128, 8 envs); long discount on the T-maze.
RPPO_KWARGS: dict[str, dict[str, Any]] = {
    "tmaze": dict(n_steps=128, batch_size=256, ent_coef=0.01, gamma=0.999,
                  policy_kwargs=dict(lstm_hidden_size=128, net_arch=[64])),
    "bandit": dict(n_steps=128, batch_size=256, ent_coef=0.01, policy_kwargs=dict(lstm_hidden_size=128, net_arch=[64])),
}
PPO_KWARGS: dict[str, dict[str, Any]] = {
    "tmaze": dict(n_steps=128, batch_size=256, ent_coef=0.01, gamma=0.999),
    "bandit": dict(n_steps=128, batch_size=256, ent_coef=0.01),
}
DEFAULT_STEPS = {("tmaze", "amago"): 40_000, ("tmaze", "recurrent_ppo"): 50_000, ("tmaze", "ppo"): 50_000,
                 ("bandit", "amago"): 12_000, ("bandit", "recurrent_ppo"): 20_000, ("bandit", "ppo"): 20_000}
DEFAULT_EVERY = {"tmaze": 4000, "bandit": 1000}
DEFAULT_EPISODES = {"tmaze": 24, "bandit": 96}  # bandit returns are noisy (one episode: 30 Bernoulli pulls)


ENV_IDS = {"tmaze": "TMazePassive-v0", "bandit": "TwoArmedBandit-v0"}


def env_kwargs(task: str, corridor: int, terminal_time_limit: bool = False) -> dict[str, Any]:
    """``gym.make`` kwargs of ``task``'s env (the T-maze's corridor and Ni et al.'s options; the bandit has none)."""
    if task == "tmaze":
        return dict(corridor_length=corridor, behind_schedule_penalty=True, time_limit_terminates=terminal_time_limit,
                    wrong_choice_reward=WRONG_CHOICE_REWARD)
    if task == "bandit":
        return {}
    raise ValueError(f"Unknown task {task!r}; use one of {TASKS}.")


def make_envs(task: str, algo: str, corridor: int, n_envs: int, seed: int, terminal_time_limit: bool = False):
    """VecEnv for ``algo`` as the zoo builds it (``zoo.envs.make_vec_env``): trajectory form for AMAGO, the plain env
    for the SB3 baselines."""
    return zoo_vec_env(ENV_IDS[task] if task in ENV_IDS else task, algo, n_envs, seed=seed,
                       env_kwargs=env_kwargs(task, corridor, terminal_time_limit))


def build_model(task: str, algo: str, env, seed: int, kwargs: dict[str, Any]):
    """The model of ``algo`` on ``env`` with constructor ``kwargs``."""
    if algo == "amago":
        from amago_sb import AMAGO

        return AMAGO("Transformer", env, seed=seed, num_threads=1, **kwargs)
    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO("MlpLstmPolicy", env, seed=seed, **kwargs)
    if algo == "ppo":
        from stable_baselines3 import PPO

        return PPO("MlpPolicy", env, seed=seed, **kwargs)
    raise ValueError(f"Unknown algo {algo!r}; use one of {ALGOS}.")


class _EvalClock(BaseCallback):
    """Deterministic evaluation every ``every`` env steps; times exclude evaluation."""

    def __init__(self, eval_env, every: int, episodes: int, rows: list[dict], out: Path, meta: dict) -> None:
        super().__init__()
        self.eval_env, self.every, self.episodes, self.rows, self.out, self.meta = eval_env, every, episodes, rows, out, meta
        self.next = every
        self.wall = self.cpu = 0.0
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def evaluate(self) -> None:
        self.wall += time.perf_counter() - self.t0
        self.cpu += time.process_time() - self.c0
        returns, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.episodes, deterministic=True,
                                     return_episode_rewards=True)
        returns = np.asarray(returns, dtype=float)
        row = {"steps": int(self.num_timesteps), "wall_s": round(self.wall, 1), "cpu_s": round(self.cpu, 1),
               "eval_return": float(returns.mean()), "success": float((returns > 0).mean()),
               "updates": int(getattr(self.model, "_n_updates", 0))}
        self.rows.append(row)
        print(f"[{self.meta['task']}/{self.meta['algo']}] {row}", flush=True)
        self.out.write_text(json.dumps({**self.meta, "rows": self.rows}, indent=1))
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            self.evaluate()
        return True


PLOTTED_TAG = {"tmaze": "ni", "bandit": ""}  # the figure shows the current runs; the table lists every variant


def _tag(run: dict) -> str:
    return run["algo"].partition(" (")[2].rstrip(")")


def model_kwargs(task: str, algo: str, corridor: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Constructor kwargs of ``algo`` on ``task`` (T-maze: the exploration horizon follows the corridor)."""
    kwargs = {**{"amago": AMAGO_KWARGS, "recurrent_ppo": RPPO_KWARGS, "ppo": PPO_KWARGS}[algo][task], **(overrides or {})}
    if task == "tmaze" and algo == "amago" and kwargs.get("exploration_class") is QuietCorridorExploration:
        kwargs["exploration_kwargs"] = {"horizon": corridor + 1, **kwargs.get("exploration_kwargs", {})}
    return kwargs


def _jsonable(value: Any) -> Any:
    return value.__name__ if isinstance(value, type) else list(value) if isinstance(value, tuple) else value


def run(task: str, algo: str, steps: int, every: int, episodes: int, seed: int, corridor: int,
        overrides: dict[str, Any] | None = None, tag: str = "", terminal_time_limit: bool = False) -> Path:
    """Train ``algo`` on ``task`` for ``steps`` env steps, evaluating periodically; returns the JSON path.

    ``overrides`` replace entries of the task's constructor kwargs; ``tag`` names the variant (file name and table).
    """
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{task}_{algo}{'_' + tag if tag else ''}_s{seed}.json"
    env = make_envs(task, algo, corridor, 8, seed, terminal_time_limit)
    eval_env = make_envs(task, algo, corridor, 8, seed + 1000, terminal_time_limit)
    kwargs = model_kwargs(task, algo, corridor, overrides)
    model = build_model(task, algo, env, seed, kwargs)
    meta = {"task": task, "algo": algo + (f" ({tag})" if tag else ""), "seed": seed,
            "corridor": corridor if task == "tmaze" else None, "terminal_time_limit": terminal_time_limit,
            "steps": steps, "kwargs": {k: _jsonable(v) for k, v in kwargs.items()},
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg_start": round(os.getloadavg()[0], 1),
            "oracle": 24.0 if task == "bandit" else 1.0}
    cb = _EvalClock(eval_env, every, episodes, [], out, meta)
    model.learn(steps, callback=cb)
    meta["load_avg_end"] = round(os.getloadavg()[0], 1)
    out.write_text(json.dumps({**meta, "rows": cb.rows}, indent=1))
    return out


def _first_reaching(rows: list[dict], key: str, threshold: float) -> dict | None:
    return next((r for r in rows if r[key] >= threshold), None)


def report() -> str:
    """Markdown table of every JSON in the results dir; writes the .md and the PNG under docs/figures."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not runs:
        raise FileNotFoundError(f"No results in {RESULTS}; run e.g. `python bench/memory_tasks.py --all` first.")
    lines = ["| task | algo | seed | env steps | wall s | CPU s | final eval return | final success / % of oracle | "
             "best eval (at steps) | first eval at target (steps, wall s, CPU s) |", "|---" * 10 + "|"]
    for r in runs:
        rows = r["rows"]
        if not rows:
            continue
        last = rows[-1]
        if r["task"] == "tmaze":
            quality = f"{100 * last['success']:.0f} % success"
            hit = _first_reaching(rows, "success", 1.0)
            target = "100 % success"
            top = max(rows, key=lambda x: x["success"])
            best = f"{100 * top['success']:.0f} % ({top['steps']})"
        else:
            quality = f"{100 * last['eval_return'] / r['oracle']:.1f} % of oracle"
            hit = next((x for x in rows if x["eval_return"] >= 0.9 * r["oracle"]), None)
            target = ">= 90 % of oracle"
            top = max(rows, key=lambda x: x["eval_return"])
            best = f"{100 * top['eval_return'] / r['oracle']:.1f} % ({top['steps']})"
        at = f"{hit['steps']}, {hit['wall_s']}, {hit['cpu_s']}" if hit else f"not reached ({target})"
        name = f"T-maze corridor {r['corridor']}" if r["task"] == "tmaze" else "two-armed bandit"
        lines.append(f"| {name} | {r['algo']} | {r['seed']} | {last['steps']} | {last['wall_s']} | {last['cpu_s']} | "
                     f"{last['eval_return']:.3f} | {quality} | {best} | {at} |")
    table = "\n".join(lines)
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "memory_tasks.md").write_text(table + "\n")
    _plot(runs, FIGURES / "memory_tasks.png")
    return table


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task in zip(axes, TASKS):
        for r in (x for x in runs if x["task"] == task and x["rows"] and _tag(x) == PLOTTED_TAG[task]):
            steps = [row["steps"] for row in r["rows"]]
            ys = [row["success"] if task == "tmaze" else row["eval_return"] / r["oracle"] for row in r["rows"]]
            base = r["algo"].split(" ")[0]
            colors = {"amago": "tab:blue", "recurrent_ppo": "tab:orange", "ppo": "tab:green"}
            ax.plot(steps, ys, marker="o", ms=3, label=f"{r['algo']} (seed {r['seed']})", color=colors.get(base))
        if task == "tmaze":
            ax.axhline(0.5, ls="--", c="gray", lw=1)
            ax.set(title="Passive T-maze, corridor 100 (Ni et al.'s reward)", ylabel="eval success rate (deterministic)")
        else:
            ax.axhline(15 / 24, ls="--", c="gray", lw=1)
            ax.set(title="Two-armed bandit, 30 pulls", ylabel="eval return / oracle (deterministic)")
        ax.set(xlabel="env steps", ylim=(-0.02, 1.05))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--algo", choices=ALGOS)
    p.add_argument("--steps", type=int, default=0, help="env steps (default per task/algo: DEFAULT_STEPS)")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=0, help="default per task: DEFAULT_EPISODES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corridor", type=int, default=100)
    p.add_argument("--kwargs", default="{}", help="JSON dict overriding the task's constructor kwargs")
    p.add_argument("--tag", default="", help="variant name (needed with --kwargs, so results are not overwritten)")
    p.add_argument("--terminal-time-limit", action="store_true", help="T-maze: the time limit terminates (no bootstrap)")
    p.add_argument("--all", action="store_true", help="run every task x algo, then --report")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.all:
        for task in TASKS:
            for algo in ALGOS:
                run(task, algo, DEFAULT_STEPS[task, algo], DEFAULT_EVERY[task], args.eval_episodes or DEFAULT_EPISODES[task],
                    args.seed, args.corridor)
    elif args.task and args.algo:
        task, algo = args.task, args.algo
        run(task, algo, args.steps or DEFAULT_STEPS[task, algo], args.eval_every or DEFAULT_EVERY[task],
            args.eval_episodes or DEFAULT_EPISODES[task], args.seed, args.corridor, json.loads(args.kwargs), args.tag,
            args.terminal_time_limit)
    elif not args.report:
        p.error("give --task and --algo, --all, or --report")
    if args.all or args.report:
        print(report())


if __name__ == "__main__":
    main()
