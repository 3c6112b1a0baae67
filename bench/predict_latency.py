"""Per-step ``predict`` latency of the AMAGO Transformer policy vs context length (KV cache: one new token per step).

For each context length the policy's cache is first filled to capacity (so every timed step attends to ``context``
keys and the sliding window is active), then ``--steps`` single-env ``predict`` calls are timed. With the KV cache a
step costs O(context) attention work on top of a constant network cost, so ``latency(1024) / latency(16)`` should
stay below 2 on CPU.

    python bench/predict_latency.py [--contexts 16 64 256 1024] [--steps 200] [--n-envs 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import wrappers
from amago_sb import AMAGO


def measure(context: int, steps: int, n_envs: int, device: str, env_id: str) -> float:
    """Median seconds per ``predict`` call with a full cache of ``context`` tokens."""
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(lambda: wrappers.make_env(env_id), n_envs=n_envs, seed=0)
    model = AMAGO("Transformer", env, context_len=context, device=device, seed=0)
    obs = env.reset()
    state, start = None, np.ones(n_envs, bool)
    for _ in range(context):  # fill the cache (same observation: the content does not matter for timing)
        _, state = model.predict(obs, state, start, deterministic=True)
        start = np.zeros(n_envs, bool)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _, state = model.predict(obs, state, start, deterministic=True)
        times.append(time.perf_counter() - t0)
    env.close()
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n-envs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--env", default="popgym-RepeatPreviousEasy-v0")
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, "
          f"n_envs {args.n_envs}, {time.strftime('%Y-%m-%d')}")
    print("| context | predict latency (ms, median) |")
    print("|---|---|")
    lat = {}
    for c in args.contexts:
        lat[c] = measure(c, args.steps, args.n_envs, args.device, args.env)
        print(f"| {c} | {lat[c] * 1e3:.3f} |", flush=True)
    lo, hi = min(args.contexts), max(args.contexts)
    print(f"latency({hi}) / latency({lo}) = {lat[hi] / lat[lo]:.2f}")


if __name__ == "__main__":
    main()
