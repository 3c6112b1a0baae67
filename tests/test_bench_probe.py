"""The Box-action diagnostics of bench/: the encoder choice of bench/continuous_tasks.py and the critic probe."""

from __future__ import annotations

import math

from bench.continuous_tasks import build_model, make_envs
from bench.critic_probe import probe


def test_build_model_policy_key_picks_encoder_and_keeps_kwargs():
    kwargs = {"policy": "FF", "learning_starts": 64}
    model = build_model("amago", make_envs("pendulum", "amago", 2, 0), 0, kwargs)
    assert model.policy.traj_encoder_name == "FF"
    assert kwargs == {"policy": "FF", "learning_starts": 64}  # the caller's dict is not consumed
    default = build_model("amago", make_envs("pendulum", "amago", 2, 0), 0, {})
    assert default.policy.traj_encoder_name == "Transformer"


def test_critic_probe_reports_every_gamma():
    model = build_model("amago", make_envs("pendulum", "amago", 2, 0), 0,
                        {"policy": "FF", "learning_starts": 64, "context_len": 16})
    model.learn(256)
    out = probe(model, n_windows=8)
    assert [g["gamma"] for g in out["per_gamma"]] == [round(float(g), 4) for g in model.policy.gammas]
    for g in out["per_gamma"]:
        assert g["action_gap"] >= 0.0 and 0.0 <= g["argmax_at_border"] <= 1.0
        assert math.isfinite(g["q_mean"]) and -1.0 <= g["corr_argmax_thetadot"] <= 1.0
    assert out["actor_std"] > 0.0 and out["thetadot_linear_r2"] <= 1.0
