"""Reference policies on POPGym HigherLowerEasy: how much return memory can add (issue 17's loss analysis).

``memoryless``: guess "higher" below the middle rank, "lower" above (the best policy that sees only the current card).
``counting``: guess the side with more unseen cards (one 52-card deck assumed): what memory of the dealt cards adds.

    python bench/higher_lower_reference.py --episodes 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import wrappers  # noqa: E402


def memoryless(card: int, seen: np.ndarray) -> int:
    return 0 if card < 6 else 1  # action 0 = "higher"


def counting(card: int, seen: np.ndarray) -> int:
    unseen = np.clip(4 - seen, 0, None)
    return 0 if unseen[card + 1:].sum() >= unseen[:card].sum() else 1


def episode_returns(policy, episodes: int, seed: int = 0) -> np.ndarray:
    wrappers.register_all()
    env = gym.make("popgym-HigherLowerEasy-v0")
    out = []
    for i in range(episodes):
        card, _ = env.reset(seed=seed + i)
        seen = np.zeros(13)
        seen[card] += 1
        total, done = 0.0, False
        while not done:
            card, reward, terminated, truncated, _ = env.step(policy(card, seen))
            seen[card] += 1
            total, done = total + float(reward), terminated or truncated
        out.append(total)
    return np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=400)
    ns = p.parse_args()
    for name, policy in (("memoryless", memoryless), ("counting", counting)):
        r = episode_returns(policy, ns.episodes)
        print(f"{name}: mean {r.mean():.3f}, std per episode {r.std():.3f}, "
              f"standard error of a 10-episode evaluation {r.std() / np.sqrt(10):.3f}")


if __name__ == "__main__":
    main()
