"""Crafter env speed, pixel vs symbolic observations, side by side in one run (interleaved blocks of random steps).

Counts everything a training run pays per env step: crafter's simulation, the observation (rendered image or
symbolic view) and the world generation of every reset (random play dies every ~200 steps, so resets weigh in).

    python bench/crafter_speed.py [--steps 4000] [--area 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wrappers.envs.crafter_adapter import CrafterEnv  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000, help="random env steps per mode")
    p.add_argument("--area", type=int, default=64)
    a = p.parse_args()
    envs = {m: CrafterEnv(area=(a.area, a.area), obs_mode=m) for m in ("pixels", "symbolic")}
    for env in envs.values():
        env.reset(seed=0)  # the first reset compiles opensimplex with numba: not timed
    seconds = dict.fromkeys(envs, 0.0)
    rng = np.random.default_rng(0)
    block = 200
    for _ in range(a.steps // block):
        for mode, env in envs.items():
            t0 = time.perf_counter()
            for _ in range(block):
                _, _, term, trunc, _ = env.step(int(rng.integers(17)))
                if term or trunc:
                    env.reset()
            seconds[mode] += time.perf_counter() - t0
    rates = {m: a.steps / s for m, s in seconds.items()}
    result = {"area": a.area, "steps_per_mode": a.steps, "env_steps_per_s": rates,
              "speedup": rates["symbolic"] / rates["pixels"], "machine": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d")}
    out = Path(__file__).resolve().parent / "results" / "crafter_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"| mode | env steps/s |\n|---|---|\n| pixels | {rates['pixels']:.0f} |\n| symbolic | {rates['symbolic']:.0f} |")
    print(f"symbolic / pixels: {result['speedup']:.2f}x")


if __name__ == "__main__":
    main()
