"""What a trained zoo AMAGO run does on a discrete POPGym env: episode lengths and returns of the deterministic
policy, the acting head's action probabilities, and the critics against Monte-Carlo returns on its replay windows.

    python bench/diag_popgym.py logs/bench50k/amago/popgym-VelocityOnlyCartPoleEasy-v0_1 --episodes 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from zoo.enjoy import run_env_kwargs, run_episodes  # noqa: E402
from zoo.envs import make_vec_env  # noqa: E402
from zoo.runs import load_model, run_hyperparams  # noqa: E402


@torch.no_grad()
def critic_report(model, n: int = 48) -> dict:
    """Mean Q of replay actions per gamma (reward units) vs the discounted return-to-go on windows that hold their
    episode's end; the acting head's max probability and entropy on replay states."""
    pol = model.policy
    batch = model.sampler.sample(n).to(model.device)
    s, _ = pol.encode(batch.observations, batch.time_idx, batch.mask)
    s_t, tmask = s[:, :-1], batch.mask[:, 1:]
    probs = pol.spec.dist(pol.actor(s_t)).probs[..., pol.main_index, :]  # (B, W-1, A)
    q_all = pol.popart.denormalized(pol.critics(s_t).mean(2).movedim(-2, -1)).movedim(-1, -2)  # (B, W-1, G, A)
    idx = batch.actions.long()[..., None, None].expand(*q_all.shape[:-1], 1)
    q = q_all.gather(-1, idx)[..., 0] / model.reward_multiplier  # (B, W-1, G)
    gam = pol.gammas
    r = batch.rewards
    mc, run = torch.zeros(*r.shape, len(gam)), torch.zeros(r.shape[0], len(gam))
    for t in reversed(range(r.shape[1])):
        run = r[:, t, None] + gam * run * tmask[:, t, None] * (1 - batch.terminated[:, t, None])
        mc[:, t] = run
    nvalid = batch.mask.sum(1)
    last_t = batch.time_idx.gather(1, (nvalid - 1).clamp_min(0)[:, None])[:, 0]
    ends = (batch.terminated.sum(1) > 0) | (last_t >= model._episode_horizon())
    sel = tmask & ends[:, None]
    gap = (q_all.max(-1).values - q_all.min(-1).values)[..., pol.main_index] / model.reward_multiplier
    return {"gammas": [round(float(g), 4) for g in gam], "q_buf": q[tmask].mean(0).tolist(),
            "mc_endwin": mc[sel].mean(0).tolist() if sel.any() else None,
            "q_endwin": q[sel].mean(0).tolist() if sel.any() else None,
            "p_max": float(probs.max(-1).values[tmask].mean()), "action_gap_main": float(gap[tmask].mean()),
            "terminated_frac": float(batch.terminated[tmask].mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    ns = p.parse_args()
    torch.set_num_threads(1)
    run = Path(ns.run_dir)
    env_id = next(d.name for d in run.iterdir() if d.is_dir() and (d / "args.yml").is_file())
    path = run / f"{env_id}.zip"
    env = make_vec_env(env_id, "amago", 1, seed=12345, env_kwargs=run_env_kwargs(path, "amago", env_id))
    model = load_model("amago", path, env, run_hyperparams(path, "amago", env_id))
    returns, lengths, _ = run_episodes(model, env, ns.episodes, deterministic=True)
    print(f"{env_id}: deterministic returns {np.round(returns, 3).tolist()}, lengths {lengths}")
    for k, v in critic_report(model).items():
        print(f"  {k}: {np.round(v, 3).tolist() if isinstance(v, list) else v}")


if __name__ == "__main__":
    main()
