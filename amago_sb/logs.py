"""What ``AMAGO`` writes to SB3's logger (keys and meanings are listed in docs/agent.md)."""

from __future__ import annotations

import time
from typing import Any

import torch
from stable_baselines3.common.utils import safe_mean

__all__ = ["record_train_stats", "dump_rollout_logs"]


def record_train_stats(model: Any, sums: dict[str, torch.Tensor], n: int, grad_norm: float, lr: float) -> None:
    """Record the means over the ``n`` updates of one training phase (``sums``: summed loss statistics)."""
    log = model.logger.record
    for k, v in sums.items():
        if k.startswith("attn_entropy"):
            log(f"train/{k}", float(v))  # measured on the last update of the phase only
        elif v.dim() == 0:
            log(f"train/{k}", float(v) / n)
        elif k in ("q_mean", "td_target_mean", "popart_sigma", "ent_coef"):  # one value per discount factor
            for g, x in zip(model.policy.gammas.tolist(), (v / n).tolist()):
                log(f"train/{k}_g{g:g}", x)
            if k == "q_mean":
                log("train/q_main", float(v[model.policy.main_index] / n))  # the acting discount's values
    log("train/grad_norm", grad_norm)
    log("train/nonfinite_skips", model._nonfinite_skips)
    log("train/learning_rate", lr)
    log("train/n_updates", model._n_updates, exclude="tensorboard")
    log("replay/trajectories", model.replay.num_trajectories)
    log("replay/steps", model.replay.num_steps)


def dump_rollout_logs(model: Any) -> None:
    """Record the rollout / time keys and write everything recorded so far at ``num_timesteps``."""
    record = model.logger.record
    time_elapsed = max((time.time_ns() - model.start_time) / 1e9, 1e-8)
    record("time/episodes", model._episode_num, exclude="tensorboard")
    if model.ep_info_buffer:
        record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in model.ep_info_buffer]))
        record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in model.ep_info_buffer]))
    if model.ep_success_buffer:
        record("rollout/success_rate", safe_mean(model.ep_success_buffer))
    record("rollout/exploration_eps", model.exploration.level(model.num_timesteps))
    record("time/fps", int((model.num_timesteps - model._num_timesteps_at_start) / time_elapsed))
    record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
    record("time/total_timesteps", model.num_timesteps, exclude="tensorboard")
    model.logger.dump(step=model.num_timesteps)
