"""Continuous control (Box actions): AMAGO with its defaults vs sb3-contrib RecurrentPPO (and SAC on Pendulum-v1).

Tasks (each a different kind of continuous problem, so that no default is tuned to one of them):

* ``pointmass``: ``PointMassCue-v0``, reach a goal shown only at the first step, with momentum (25 steps).
* ``recall``: ``ContinuousRecall-v0``, output a 2-D cue shown only at the first step among distractors (16 steps).
* ``po_pendulum``: POPGym ``PositionOnlyPendulumEasy`` (swing up from the angle alone; 200 steps).
* ``noisy_po_pendulum``: POPGym ``NoisyPositionOnlyPendulumEasy`` (the same with observation noise).
* ``pendulum``: gymnasium ``Pendulum-v1``, fully observed, against SB3's SAC (no memory needed).

Every algorithm is run as a user would: ``AMAGO("Transformer", vec_env)`` with no other argument,
``RecurrentPPO("MlpLstmPolicy", vec_env)``, ``SAC("MlpPolicy", vec_env)``, on the same 8-env ``make_vec_env``
(AMAGO in trajectory form). Deterministic evaluation every ``--eval-every`` env steps on separately seeded envs
(evaluation time excluded from the times). One JSON per run in ``bench/results/continuous/`` (``--reuse`` skips runs
whose JSON is complete); ``--report`` prints the markdown table (mean +- std over seeds of the final evaluation).

    python bench/continuous_tasks.py --task pointmass --algo amago --seed 0
    python bench/continuous_tasks.py --all --seeds 0 1 2 --reuse
    python bench/continuous_tasks.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.memory_tasks import _EvalClock  # noqa: E402  (deterministic evaluation every N steps, JSON after each)
from zoo.envs import make_vec_env  # noqa: E402  (the zoo's envs: trajectory form for AMAGO)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "continuous"
TASKS: dict[str, str] = {
    "pointmass": "PointMassCue-v0",
    "recall": "ContinuousRecall-v0",
    "po_pendulum": "popgym-PositionOnlyPendulumEasy-v0",
    "noisy_po_pendulum": "popgym-NoisyPositionOnlyPendulumEasy-v0",
    "pendulum": "Pendulum-v1",
}
BASELINE = {"pendulum": "sac"}  # the baseline of each task (default: recurrent_ppo)
STEPS = {"pointmass": 30_000, "recall": 30_000, "po_pendulum": 30_000, "noisy_po_pendulum": 30_000,
         "pendulum": 20_000}
EVAL_EPISODES = {"pointmass": 40, "recall": 40, "po_pendulum": 16, "noisy_po_pendulum": 16, "pendulum": 16}


def make_envs(task: str, algo: str, n_envs: int, seed: int, truncated_is_done: bool | None = None):
    """The same VecEnv for every algo, as the zoo builds it (``zoo.envs.make_vec_env``); AMAGO's in trajectory form
    (``truncated_is_done``: None = the env's default, else how the trajectory form reports time limits)."""
    kwargs: dict[str, Any] = {}
    if algo == "amago" and truncated_is_done is not None:
        kwargs = {"trajectory": True, "truncated_is_done": truncated_is_done}
    return make_vec_env(TASKS[task], algo, n_envs, seed=seed, env_kwargs=kwargs)


def build_model(algo: str, env, seed: int, kwargs: dict[str, Any]):
    if algo == "amago":
        from amago_sb import AMAGO

        kwargs = dict(kwargs)
        return AMAGO(kwargs.pop("policy", "Transformer"), env, seed=seed, **kwargs)
    if algo == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO("MlpLstmPolicy", env, seed=seed, **kwargs)
    if algo == "sac":
        from stable_baselines3 import SAC

        return SAC("MlpPolicy", env, seed=seed, **kwargs)
    raise ValueError(f"Unknown algo {algo!r}; use amago, recurrent_ppo or sac.")


def run(task: str, algo: str, seed: int, steps: int, every: int, kwargs: dict[str, Any], tag: str, reuse: bool,
        truncated_is_done: bool | None = None) -> Path:
    """Train and evaluate one (task, algo, seed); returns the JSON path."""
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{task}_{algo}{'_' + tag if tag else ''}_s{seed}.json"
    if reuse and out.exists() and json.loads(out.read_text()).get("complete"):
        print(f"reuse {out}")
        return out
    env = make_envs(task, algo, 8, seed, truncated_is_done)
    eval_env = make_envs(task, algo, 8, seed + 1000, truncated_is_done)
    model = build_model(algo, env, seed, kwargs)
    meta = {"task": task, "env_id": TASKS[task], "algo": algo, "tag": tag, "seed": seed, "steps": steps,
            "kwargs": kwargs, "truncated_is_done": truncated_is_done,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg_start": round(os.getloadavg()[0], 1)}
    cb = _EvalClock(eval_env, every, EVAL_EPISODES[task], [], out, meta)
    model.learn(steps, callback=cb)
    if not cb.rows or cb.rows[-1]["steps"] < steps:
        cb.evaluate()
    meta.update(load_avg_end=round(os.getloadavg()[0], 1), complete=True)
    out.write_text(json.dumps({**meta, "rows": cb.rows}, indent=1))
    return out


def report() -> str:
    """Markdown table: final deterministic return, mean +- std over seeds, CPU and wall time per run (CPU time is what a
    run costs on an idle core; wall time grows when runs share the machine)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in sorted(RESULTS.glob("*.json")):
        r = json.loads(p.read_text())
        if r.get("complete"):
            groups[r["task"], r["algo"] + (f" ({r['tag']})" if r["tag"] else "")].append(r)
    lines = ["| task | algo | seeds | env steps | final eval return (mean +- std) | per seed | CPU s per run | "
             "wall s per run |",
             "|---|---|---|---|---|---|---|---|"]
    for (task, algo), runs in sorted(groups.items()):
        finals = np.array([r["rows"][-1]["eval_return"] for r in runs])
        walls = [r["rows"][-1]["wall_s"] for r in runs]
        cpus = [r["rows"][-1]["cpu_s"] for r in runs]
        lines.append(f"| {TASKS[task]} | {algo} | {len(runs)} | {runs[0]['rows'][-1]['steps']} | "
                     f"{finals.mean():.2f} +- {finals.std():.2f} | {', '.join(f'{x:.2f}' for x in finals)} | "
                     f"{np.mean(cpus):.0f} | {np.mean(walls):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS))
    p.add_argument("--algo", choices=("amago", "recurrent_ppo", "sac"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="with --all: the seeds")
    p.add_argument("--steps", type=int, default=0, help="default per task: STEPS")
    p.add_argument("--eval-every", type=int, default=0, help="default: steps / 6")
    p.add_argument("--kwargs", default="{}", help="JSON dict of constructor kwargs (default: none, as a user); "
                   "AMAGO's \"policy\" key picks the encoder (default Transformer)")
    p.add_argument("--tag", default="", help="variant name (needed with --kwargs so results are not overwritten)")
    p.add_argument("--reuse", action="store_true", help="skip runs whose JSON is complete")
    p.add_argument("--truncated-is-done", choices=("true", "false"), default=None,
                   help="AMAGO: report time limits as terminations (true) or truncations (false); default: the env's")
    p.add_argument("--all", action="store_true", help="every task with AMAGO and its baseline")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    kwargs = json.loads(args.kwargs)
    if args.all:
        for seed in args.seeds or [args.seed]:
            for task in TASKS:
                for algo in ("amago", BASELINE.get(task, "recurrent_ppo")):
                    steps = args.steps or STEPS[task]
                    run(task, algo, seed, steps, args.eval_every or steps // 6, kwargs if algo == "amago" else {},
                        args.tag if algo == "amago" else "", args.reuse)
    elif args.task and args.algo:
        steps = args.steps or STEPS[args.task]
        tid = None if args.truncated_is_done is None else args.truncated_is_done == "true"
        run(args.task, args.algo, args.seed, steps, args.eval_every or steps // 6, kwargs, args.tag, args.reuse, tid)
    elif not args.report:
        p.error("give --task and --algo, --all, or --report")
    if args.all or args.report:
        print(report())


if __name__ == "__main__":
    main()
