"""Trajectory encoders side by side: Transformer, GRU and LRU under ``AMAGO(<encoder>, env)`` with default settings.

Per (task, encoder, seed): deterministic evaluation every ``--eval-every`` env steps on separately seeded envs
(evaluation time excluded), the first env step at which the evaluation reaches the task's "solved" return, wall and
CPU time, and the updates/s of the learner alone (200 updates timed after the run). One JSON per run in
``bench/results/encoders/`` (written after every evaluation; ``--reuse`` skips complete runs); ``--report`` prints the
markdown table.

    python bench/encoders.py --task repeat_previous --encoder LRU --seed 0
    python bench/encoders.py --all --reuse && python bench/encoders.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wrappers  # noqa: E402
from amago_sb import AMAGO  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "encoders"
ENCODERS = ("Transformer", "GRU", "LRU")
# task -> (env id, env kwargs, AMAGO kwargs, env steps, solved return)
TASKS: dict[str, tuple[str, dict, dict, int, float]] = {
    "repeat_previous": ("popgym-RepeatPreviousEasy-v0", {}, {"context_len": "episode"}, 20_000, 0.99),
    "repeat_first": ("popgym-RepeatFirstEasy-v0", {}, {"context_len": "episode"}, 20_000, 0.99),
    "count_recall": ("popgym-CountRecallEasy-v0", {}, {"context_len": "episode"}, 30_000, 0.5),
    "tmaze": ("TMazePassive-v0", {"corridor_length": 30}, {"context_len": "episode"}, 20_000, 0.99),
}


def _envs(env_id: str, env_kwargs: dict, n: int, seed: int):
    return make_vec_env(lambda: wrappers.make_env(env_id, **env_kwargs), n_envs=n, seed=seed)


def run(task: str, encoder: str, seed: int, eval_every: int = 0, out: Path | None = None) -> dict[str, Any]:
    env_id, env_kwargs, kwargs, steps, solved = TASKS[task]
    eval_every = eval_every or steps // 10
    out = out or RESULTS / f"{task}_{encoder}_s{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    record: dict[str, Any] = {"task": task, "env": env_id, "encoder": encoder, "seed": seed, "steps": steps,
                              "solved_return": solved, "evals": [], "solved_at": None, "complete": False,
                              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                              "date": time.strftime("%Y-%m-%d")}
    eval_env = _envs(env_id, env_kwargs, 8, 10_000 + seed)
    clock = {"wall": 0.0, "cpu": 0.0, "t": time.perf_counter(), "c": time.process_time()}

    class Eval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next:
                return True
            self.next += eval_every
            clock["wall"] += time.perf_counter() - clock["t"]
            clock["cpu"] += time.process_time() - clock["c"]
            mean, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=24, deterministic=True)
            record["evals"].append({"step": self.num_timesteps, "return": float(mean), "wall_s": clock["wall"],
                                    "cpu_s": clock["cpu"]})
            if record["solved_at"] is None and mean >= solved:
                record["solved_at"] = self.num_timesteps
            out.write_text(json.dumps(record, indent=1))
            clock["t"], clock["c"] = time.perf_counter(), time.process_time()
            return True

    model = AMAGO(encoder, _envs(env_id, env_kwargs, 8, seed), seed=seed, **kwargs)
    clock["t"], clock["c"] = time.perf_counter(), time.process_time()
    model.learn(steps, callback=Eval())
    t0 = time.perf_counter()
    model.train(200, model.batch_size)
    record["updates_per_s"] = 200 / (time.perf_counter() - t0)
    record["final_return"] = record["evals"][-1]["return"] if record["evals"] else None
    record["complete"] = True
    out.write_text(json.dumps(record, indent=1))
    return record


def report() -> str:
    rows = ["| task | encoder | seeds | solved at (env steps) | final return | updates/s | wall s |",
            "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        for enc in ENCODERS:
            runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{task}_{enc}_s*.json"))]
            runs = [r for r in runs if r.get("complete")]
            if not runs:
                continue
            solved = [r["solved_at"] for r in runs]
            solved_s = ", ".join("-" if s is None else f"{s // 1000}k" for s in solved)
            final = np.array([r["final_return"] for r in runs])
            ups = np.mean([r["updates_per_s"] for r in runs])
            wall = np.mean([r["evals"][-1]["wall_s"] for r in runs])
            rows.append(f"| {task} | {enc} | {len(runs)} | {solved_s} | {final.mean():.3f} +- {final.std():.3f} | "
                        f"{ups:.1f} | {wall:.0f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS))
    p.add_argument("--encoder", choices=ENCODERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--all", action="store_true")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--report", action="store_true")
    a = p.parse_args()
    if a.report:
        print(report())
        return
    jobs = [(t, e, s) for t in TASKS for e in ENCODERS for s in a.seeds] if a.all else [(a.task, a.encoder, a.seed)]
    for task, enc, seed in jobs:
        path = RESULTS / f"{task}_{enc}_s{seed}.json"
        if a.reuse and path.is_file() and json.loads(path.read_text()).get("complete"):
            continue
        r = run(task, enc, seed)
        print(f"{task} {enc} s{seed}: solved at {r['solved_at']}, final {r['final_return']:.3f}, "
              f"{r['updates_per_s']:.1f} updates/s", flush=True)


if __name__ == "__main__":
    main()
