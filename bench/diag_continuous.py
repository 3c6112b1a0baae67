"""Diagnostics of AMAGO on the Box-action tasks of ``bench/continuous_tasks.py``: one training run that, besides the
benchmark's deterministic evaluation (same JSON as ``continuous_tasks.py --tag``), records every ``--every`` env steps

* the acting head on replay windows: pre-tanh ``|mu|``, ``std``, fraction of saturated means (``|tanh(mu)| > 0.95``);
* the critics on replay windows that hold their episode's end: ``Q(s_t, a_t)`` per gamma (mean over critics, in reward
  units) against the discounted return-to-go of the replay data (Monte Carlo to the episode's end);
* deterministic evaluation rollouts: mean ``|a|``, saturation ``|a| > 0.95``, sign-change rate of consecutive actions
  per dimension (oscillation), the policy std on visited states, and the deterministic return of every gamma head.

    python bench/diag_continuous.py --task pointmass --seed 0 [--kwargs '{...}' --tag NAME]

Writes ``bench/results/continuous/<task>_amago[_TAG]_s<seed>.json`` (benchmark rows) and
``bench/results/continuous_diag/<task>_amago[_TAG]_s<seed>.json`` (diagnostics).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.continuous_tasks import EVAL_EPISODES, RESULTS, STEPS, TASKS, build_model, make_envs  # noqa: E402
from bench.memory_tasks import _EvalClock  # noqa: E402

DIAG = RESULTS.parent / "continuous_diag"


@torch.no_grad()
def replay_stats(model, n: int = 64) -> dict:
    pol = model.policy
    batch = model.sampler.sample(n).to(model.device)
    s, _ = pol.encode(batch.observations, batch.time_idx, batch.mask)
    s_t = s[:, :-1]
    tmask = batch.mask[:, 1:]
    dist = pol.spec.dist(pol.actor(s_t)[..., pol.main_index, :])
    m = tmask
    mu, std = dist.mu[m], dist.std[m]
    out = {"mu_abs": float(mu.abs().mean()), "std": float(std.mean()), "std_median": float(std.median()),
           "sat_mean": float((torch.tanh(mu).abs() > 0.95).float().mean())}
    a_buf = pol.spec.normalize(batch.actions)
    out["replay_a_sat"] = float((a_buf[m].abs() > 0.95).float().mean())
    G = len(pol.gammas)
    a_in = pol.spec.critic_input(a_buf).unsqueeze(-2).expand(*a_buf.shape[:2], G, -1)
    q = pol.popart.denormalized(pol.critics(s_t, a_in)).mean(2) / model.reward_multiplier  # (B, W-1, G)
    a_pi = pol.spec.critic_input(dist.mode())[..., None, :].expand(*a_buf.shape[:2], G, -1)
    q_pi = pol.popart.denormalized(pol.critics(s_t, a_pi)).mean(2) / model.reward_multiplier
    # Monte-Carlo return-to-go on windows that contain the end of their episode
    L = model._episode_horizon()
    nvalid = batch.mask.sum(1)  # rows
    last_t = batch.time_idx.gather(1, (nvalid - 1).clamp_min(0)[:, None])[:, 0]
    ends = (last_t >= L) | (batch.terminated.sum(1) > 0)
    r = batch.rewards
    gam = pol.gammas
    mc = torch.zeros(*r.shape, G)
    run = torch.zeros(r.shape[0], G)
    for t in reversed(range(r.shape[1])):
        run = r[:, t, None] + gam * run * tmask[:, t, None]
        mc[:, t] = run
    sel = tmask & ends[:, None]
    out["n_mc"] = int(sel.sum())
    out["q_buf"] = q[tmask].mean(0).tolist()
    out["q_pi_mode"] = q_pi[tmask].mean(0).tolist()
    out["q_buf_endwin"] = q[sel].mean(0).tolist() if sel.any() else None
    out["mc_endwin"] = mc[sel].mean(0).tolist() if sel.any() else None
    out["gammas"] = gam.tolist()
    return out


@torch.no_grad()
def rollout_stats(model, env, episodes: int, head: int | None = None) -> dict:
    pol = model.policy
    obs = env.reset()
    state = pol.initial_state(env.num_envs)
    acts = [[] for _ in range(env.num_envs)]
    stds = []
    done_eps, rets, cur = [], [], np.zeros(env.num_envs)
    while len(done_eps) < episodes:
        o, _ = pol.obs_to_torch(obs)
        s, state = pol.traj_encoder.step(pol.tstep_encoder(o), state)
        dist = pol.spec.dist(pol.actor(s)[:, pol.main_index if head is None else head])
        a = dist.mode()
        stds.append(dist.std.mean().item())
        a_np = a.cpu().numpy()
        obs, rew, dones, _ = env.step(pol.spec.to_env(a_np))
        cur += rew
        for i in range(env.num_envs):
            acts[i].append(a_np[i])
            if dones[i]:
                done_eps.append(np.array(acts[i]))
                rets.append(cur[i])
                acts[i], cur[i] = [], 0.0
        if dones.any():
            state.reset(torch.as_tensor(dones, device=model.device))
    A = np.concatenate(done_eps)
    flips = np.mean([np.mean(np.sign(e[1:]) != np.sign(e[:-1])) for e in done_eps if len(e) > 1])
    dif = np.mean([np.mean(np.abs(e[1:] - e[:-1])) for e in done_eps if len(e) > 1])
    return {"a_abs": float(np.abs(A).mean()), "a_sat": float((np.abs(A) > 0.95).mean()), "sign_flip": float(flips),
            "a_step_change": float(dif), "policy_std": float(np.mean(stds)), "det_return": float(np.mean(rets))}


class Diag(BaseCallback):
    def __init__(self, env, every: int, episodes: int, out: Path, meta: dict, clock: _EvalClock) -> None:
        super().__init__()
        self.env, self.every, self.episodes, self.out, self.meta, self.clock = env, every, episodes, out, meta, clock
        self.next, self.rows, self.per_head = every, [], False

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            t0, c0 = time.perf_counter(), time.process_time()
            row = {"steps": int(self.num_timesteps), "updates": int(self.model._n_updates)}
            if self.model.replay.num_trajectories > 0:
                row.update(replay_stats(self.model))
            row.update(rollout_stats(self.model, self.env, self.episodes))
            if self.per_head:  # deterministic return of every gamma head (only the main one acts in training)
                row["det_return_per_head"] = [rollout_stats(self.model, self.env, self.episodes, h)["det_return"]
                                              for h in range(len(self.model.policy.gammas))]
            self.rows.append(row)
            short = {k: (round(v, 3) if isinstance(v, float) else
                         [float(f'{x:.3g}') for x in v] if isinstance(v, list) else v) for k, v in row.items()}
            print("[diag]", short, flush=True)
            self.out.write_text(json.dumps({**self.meta, "rows": self.rows}, indent=1))
            self.clock.t0 += time.perf_counter() - t0  # diagnostics are excluded from the benchmark's times
            self.clock.c0 += time.process_time() - c0
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--every", type=int, default=0, help="default: steps / 6 (also the benchmark's eval interval)")
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--tag", default="")
    p.add_argument("--per-head", action="store_true", help="also evaluate every gamma head (slow on long episodes)")
    args = p.parse_args()
    torch.set_num_threads(1)
    kwargs = json.loads(args.kwargs)
    steps = args.steps or STEPS[args.task]
    every = args.every or steps // 6
    name = f"{args.task}_amago{'_' + args.tag if args.tag else ''}_s{args.seed}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    DIAG.mkdir(parents=True, exist_ok=True)
    env = make_envs(args.task, "amago", 8, args.seed)
    eval_env = make_envs(args.task, "amago", 8, args.seed + 1000)
    diag_env = make_envs(args.task, "amago", 8, args.seed + 2000)
    model = build_model("amago", env, args.seed, kwargs)
    meta = {"task": args.task, "env_id": TASKS[args.task], "algo": "amago", "tag": args.tag, "seed": args.seed,
            "steps": steps, "kwargs": kwargs, "truncated_is_done": None,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg_start": round(os.getloadavg()[0], 1),
            "script": "bench/diag_continuous.py"}
    clock = _EvalClock(eval_env, every, EVAL_EPISODES[args.task], [], RESULTS / name, meta)
    diag = Diag(diag_env, every, 8 if "pendulum" in args.task else 16, DIAG / name, meta, clock)
    diag.per_head = args.per_head
    model.learn(steps, callback=CallbackList([clock, diag]))
    if not clock.rows or clock.rows[-1]["steps"] < steps:
        clock.evaluate()
    meta.update(load_avg_end=round(os.getloadavg()[0], 1), complete=True)
    (RESULTS / name).write_text(json.dumps({**meta, "rows": clock.rows}, indent=1))


if __name__ == "__main__":
    main()
