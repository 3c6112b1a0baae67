"""Training throughput of AMAGO on CPU, side by side with sb3-contrib's RecurrentPPO on the same env, in one run.

Measures, for ``AMAGO("Transformer", env)`` with default settings:

* acting: env steps/s of data collection alone (batched KV-cache policy + exploration + replay recording);
* updates/s: gradient updates alone (sampling windows from the disk replay + loss + backward + AdamW + targets);
* end-to-end: env steps/s of ``learn()`` with the default update ratio;

and RecurrentPPO's (``MlpLstmPolicy``, default settings, same number of envs) end-to-end ``learn()`` env steps/s.

    python bench/throughput.py [--env popgym-RepeatPreviousEasy-v0] [--steps 4096] [--updates 100] [--threads 1]

``--compare-threads N`` instead times ``learn(N)`` with ``num_threads=1`` and ``num_threads="auto"`` (1 thread acting,
all cores up to 4 updating), alternated for ``--rounds`` rounds in one process tree (each run in a fresh subprocess,
torch left at its default thread count), and prints wall / update / acting seconds per run.

``--learning-run N`` instead trains ``AMAGO("Transformer", env)`` with default settings for ``N`` env steps, evaluates
the deterministic policy every 2000 steps (24 episodes, separate env, not counted in the times) and prints env steps,
wall time and process CPU time (= wall time on an idle core, since training uses one thread) at each evaluation.
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import torch
from stable_baselines3.common.env_util import make_vec_env

import wrappers
from amago_sb import AMAGO


def amago_numbers(env_id: str, steps: int, updates: int, n_envs: int) -> dict[str, float]:
    model = AMAGO("Transformer", env_id, n_envs=n_envs, seed=0, gradient_steps=0, learning_starts=10**12)
    model.learn(512)  # warm up, fill some replay
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    acting = steps / (time.perf_counter() - t0)
    model.train(5, model.batch_size)
    t0 = time.perf_counter()
    model.train(updates, model.batch_size)
    ups = updates / (time.perf_counter() - t0)
    e2e_model = AMAGO("Transformer", env_id, n_envs=n_envs, seed=0, learning_starts=0)
    e2e_model.learn(512)
    t0 = time.perf_counter()
    e2e_model.learn(steps, reset_num_timesteps=False)
    e2e = steps / (time.perf_counter() - t0)
    return {"acting": acting, "updates": ups, "e2e": e2e,
            "ratio": e2e_model.updates_per_phase / (e2e_model.train_freq * e2e_model.n_envs)}


def recurrent_ppo_steps_per_s(env_id: str, steps: int, n_envs: int) -> float:
    from sb3_contrib import RecurrentPPO

    wrappers.register_all()
    env = make_vec_env(lambda: gym.make(env_id, trajectory=False), n_envs=n_envs, seed=0)
    model = RecurrentPPO("MlpLstmPolicy", env, seed=0, n_steps=128)
    model.learn(n_envs * 128)  # warm up
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def learning_run(env_id: str, total: int, every: int = 2000, kwargs: dict | None = None) -> None:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    eval_env = make_vec_env(lambda: wrappers.make_env(env_id), n_envs=8, seed=123)
    clock = {"wall": 0.0, "cpu": 0.0, "t": time.perf_counter(), "c": time.process_time()}

    class Eval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += every
                clock["wall"] += time.perf_counter() - clock["t"]
                clock["cpu"] += time.process_time() - clock["c"]
                mean, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=24, deterministic=True)
                print(f"| {self.num_timesteps} | {self.model._n_updates} | {clock['wall']:.1f} | {clock['cpu']:.1f} | "
                      f"{mean:.3f} |", flush=True)
                clock["t"], clock["c"] = time.perf_counter(), time.process_time()
            return True

    print("| env steps | updates | wall s | CPU s | eval return (deterministic, 24 episodes) |")
    print("|---|---|---|---|---|")
    kwargs = dict(kwargs or {})
    model = AMAGO(kwargs.pop("policy", "Transformer"), env_id, seed=0, **kwargs)
    clock["t"], clock["c"] = time.perf_counter(), time.process_time()
    model.learn(total, callback=Eval())


def _timed_learn(env_id: str, steps: int, num_threads: str, kwargs: str) -> None:
    """One ``learn(steps)`` run in this process; prints a JSON line of seconds (called in a subprocess)."""
    import json

    class Timed(AMAGO):
        train_s = act_s = 0.0

        def train(self, gradient_steps: int, batch_size: int) -> None:
            t0 = time.perf_counter()
            super().train(gradient_steps, batch_size)
            self.train_s += time.perf_counter() - t0

        def collect_rollouts(self, callback):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = super().collect_rollouts(callback)
            self.act_s += time.perf_counter() - t0
            return out

    wrappers.register_all()
    threads: int | str = num_threads if num_threads == "auto" else int(num_threads)
    model = Timed("Transformer", env_id, seed=0, num_threads=threads, **json.loads(kwargs))
    t0 = time.perf_counter()
    model.learn(steps)
    print(json.dumps({"wall_s": time.perf_counter() - t0, "train_s": model.train_s, "act_s": model.act_s,
                      "updates": model._n_updates}))


def compare_threads(env_id: str, steps: int, rounds: int, kwargs: str) -> None:
    import json
    import os
    import subprocess
    import sys

    print(f"# {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}, {env_id}, learn({steps}), kwargs {kwargs}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| round | num_threads | wall s | update s (ms per update) | acting s |")
    print("|---|---|---|---|---|")
    walls: dict[str, list[float]] = {"1": [], "auto": []}
    for r in range(rounds):
        for threads in ("1", "auto"):
            out = subprocess.run([sys.executable, __file__, "--env", env_id, "--_timed-learn", str(steps), threads,
                                  "--kwargs", kwargs], capture_output=True, text=True, check=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            walls[threads].append(res["wall_s"])
            print(f"| {r} | {threads} | {res['wall_s']:.1f} | {res['train_s']:.1f} "
                  f"({1000 * res['train_s'] / max(res['updates'], 1):.0f}) | {res['act_s']:.1f} |", flush=True)
    ratio = sum(walls["1"]) / sum(walls["auto"])
    print(f"learn() wall time, num_threads=1 / auto: {ratio:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="popgym-RepeatPreviousEasy-v0")
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--learning-run", type=int, default=0, metavar="N")
    p.add_argument("--kwargs", default="{}",
                   help='JSON dict of AMAGO kwargs for --learning-run / --compare-threads, e.g. {"policy": "FF"}')
    p.add_argument("--compare-threads", type=int, default=0, metavar="N")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--_timed-learn", nargs=2, default=None, metavar=("STEPS", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._timed_learn:
        _timed_learn(args.env, int(args._timed_learn[0]), args._timed_learn[1], args.kwargs)
        return
    if args.compare_threads:
        compare_threads(args.env, args.compare_threads, args.rounds, args.kwargs)
        return
    torch.set_num_threads(args.threads)
    if args.learning_run:
        import json
        import os

        print(f"# {platform.machine()}, load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{args.env}, kwargs {args.kwargs}")
        learning_run(args.env, args.learning_run, kwargs=json.loads(args.kwargs))
        return
    print(f"# {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
          f"{args.env}, {args.n_envs} envs, {time.strftime('%Y-%m-%d %H:%M')}")
    a = amago_numbers(args.env, args.steps, args.updates, args.n_envs)
    torch.set_num_threads(args.threads)
    ppo = recurrent_ppo_steps_per_s(args.env, args.steps, args.n_envs)
    print("| measure | value |")
    print("|---|---|")
    print(f"| AMAGO acting (env steps/s, collection only) | {a['acting']:.0f} |")
    print(f"| AMAGO updates/s (batch 24 x context 64) | {a['updates']:.1f} |")
    print(f"| AMAGO learn() end-to-end (env steps/s, {a['ratio']:.3f} updates per env step) | {a['e2e']:.0f} |")
    print(f"| RecurrentPPO learn() end-to-end (env steps/s) | {ppo:.0f} |")
    print(f"AMAGO / RecurrentPPO end-to-end env steps/s ratio: {a['e2e'] / ppo:.2f}")


if __name__ == "__main__":
    main()
