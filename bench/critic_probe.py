"""What AMAGO's critics learn about the action on gymnasium ``Pendulum-v1`` (fully observed, Box action).

Trains ``AMAGO(policy, env, **kwargs)`` on the 8-env Pendulum of ``bench/continuous_tasks.py``, then, on replay windows:

* per gamma: ``Q(s, a)`` over a grid of 21 torques in [-1, 1] (reward-multiplied units): its spread over states, the
  *action gap* (max - min over the grid), how often the arg-max torque lies at the border (``|a| > 0.9``) and its
  correlation with the angular velocity (pumping energy means pushing along the motion);
* the acting head: correlation of its mode with the angular velocity, and its pre-tanh std;
* how well a linear map decodes the angular velocity from the encoder's features (R^2; low = the encoder lost it);
* the deterministic return over 16 episodes on separately seeded envs.

    python bench/critic_probe.py --kwargs '{"policy": "FF"}' --tag ff

Writes ``bench/results/continuous_diag/probe_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.continuous_tasks import build_model, make_envs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "continuous_diag"


@torch.no_grad()
def probe(model, n_windows: int = 64) -> dict:
    pol = model.policy
    batch = model.sampler.sample(n_windows).to(model.device)
    s, _ = pol.encode(batch.observations, batch.time_idx, batch.mask)
    s_t, m = s[:, :-1], batch.mask[:, 1:]
    thetadot = batch.observations["obs"][:, :-1][m][:, 2].numpy()  # (N,)
    grid = torch.linspace(-1.0, 1.0, 21)
    G = len(pol.gammas)
    q = torch.stack([pol.popart.denormalized(pol.critics(s_t, pol.spec.critic_input(
        torch.full((*s_t.shape[:2], G, 1), float(a))))).mean(2) for a in grid], -1)[m]  # (N, G, 21)
    per_gamma = []
    for g in range(G):
        qg = q[:, g]
        best = grid[qg.argmax(-1)].numpy()
        per_gamma.append({
            "gamma": round(float(pol.gammas[g]), 4), "q_mean": float(qg.mean()), "q_state_std": float(qg.mean(-1).std()),
            "action_gap": float((qg.max(-1).values - qg.min(-1).values).mean()),
            "argmax_at_border": float((np.abs(best) > 0.9).mean()),
            "corr_argmax_thetadot": float(np.corrcoef(best, thetadot)[0, 1]) if best.std() > 0 else 0.0})
    dist = pol.spec.dist(pol.actor(s_t)[..., pol.main_index, :])
    mode = torch.tanh(dist.mu[m][:, 0]).numpy()
    feats = torch.cat([s_t[m], torch.ones(int(m.sum()), 1)], 1).numpy()
    coef, *_ = np.linalg.lstsq(feats, thetadot, rcond=None)
    r2 = 1.0 - ((feats @ coef - thetadot) ** 2).mean() / thetadot.var()
    return {"per_gamma": per_gamma, "actor_corr_mode_thetadot": float(np.corrcoef(mode, thetadot)[0, 1]),
            "actor_std": float(dist.std[m].mean()), "thetadot_linear_r2": float(r2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kwargs", default="{}", help="JSON dict of AMAGO kwargs; \"policy\" picks the encoder")
    p.add_argument("--tag", default="default")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    kwargs = json.loads(args.kwargs)
    model = build_model("amago", make_envs("pendulum", "amago", 8, args.seed), args.seed, kwargs)
    t0 = time.time()
    model.learn(args.steps)
    out = {"kwargs": kwargs, "seed": args.seed, "steps": args.steps, "updates": model._n_updates,
           "train_wall_s": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d %H:%M"), **probe(model)}
    ret, std = evaluate_policy(model, make_envs("pendulum", "amago", 8, args.seed + 1000), n_eval_episodes=16)
    out.update(det_return=float(ret), det_return_std=float(std))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"probe_{args.tag}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
