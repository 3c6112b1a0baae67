"""Trajectory encoders as one extension point: the LRU encoder (parallel scan = step by step, O(1) acting state,
learns a memory task), a user encoder given as a class, and the protocol checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from torch import nn

from amago_sb import AMAGO
from amago_sb.networks import TRAJ_ENCODERS, ContextState, LRUTrajEncoder, NoState, TrajEncoder

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=1, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100])
def test_lru_parallel_scan_matches_step_by_step(length):
    torch.manual_seed(0)
    enc = LRUTrajEncoder(8, d_model=16, n_layers=2, state_dim=12)
    x = torch.randn(3, length, 8)
    with torch.no_grad():
        full, ents = enc(x, None)
        state = enc.init_state(3)
        steps = []
        for t in range(length):
            y, state = enc.step(x[:, t], state)
            steps.append(y)
    assert ents == [] and state.h.shape == (2, 3, 12)  # the acting state does not grow with the episode
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=2e-5, rtol=1e-4)


def test_lru_padding_never_reaches_valid_rows_and_reset_is_per_env():
    torch.manual_seed(0)
    enc = LRUTrajEncoder(8, d_model=16, n_layers=2)
    x = torch.randn(2, 10, 8)
    y = x.clone()
    y[:, 6:] = 1e3  # padded rows at the end
    with torch.no_grad():
        torch.testing.assert_close(enc(x, None)[0][:, :6], enc(y, None)[0][:, :6])
        state = enc.init_state(2)
        for t in range(4):
            _, state = enc.step(x[:, t], state)
        state.reset(torch.tensor([True, False]))
    assert torch.all(state.h[:, 0] == 0) and torch.any(state.h[:, 1] != 0)


def test_lru_eigenvalues_stay_inside_the_unit_circle_and_validate_init():
    enc = LRUTrajEncoder(8, d_model=16, n_layers=1)
    lam, _ = enc.blocks[0].lru.coefficients()
    assert torch.all(lam.abs() < 1) and torch.all(lam.abs() >= 0.9 - 1e-6)
    with pytest.raises(ValueError, match="r_min < r_max < 1"):
        LRUTrajEncoder(8, r_min=0.5, r_max=1.0)


@pytest.mark.slow
def test_lru_policy_learns_repeat_previous():
    """AMAGO("LRU", env) with defaults on RepeatPreviousEasy (chance: -0.5) within 20k env steps."""
    model = AMAGO("LRU", "popgym-RepeatPreviousEasy-v0", seed=0, context_len="episode")
    model.learn(20_000)
    env = model.wrap_env("popgym-RepeatPreviousEasy-v0")
    mean, _ = evaluate_policy(model, env, n_eval_episodes=8, deterministic=True)
    assert mean > 0.7, mean  # bench/encoders.py, seed 0: 0.89 at 20k (Transformer and GRU solve it by 10k)


class _MeanPool(nn.Module):
    """A user encoder in one class: the running mean of the inputs so far (state: sum and count)."""

    def __init__(self, d_in: int, *, d_model: int = 64, scale: float = 1.0, **_: object) -> None:
        super().__init__()
        self.proj, self.out_dim, self.scale = nn.Linear(d_in, d_model), d_model, scale

    def forward(self, x, time_idx, lengths=None, want_entropy=False):
        csum = torch.cumsum(self.proj(x), 1)
        n = torch.arange(1, x.shape[1] + 1, device=x.device)[None, :, None]
        return self.scale * csum / n, []

    def init_state(self, batch, device="cpu", dtype=torch.float32):
        return _SumState(torch.zeros(batch, self.out_dim, device=device), torch.zeros(batch, 1, device=device))

    def step(self, x, state):
        state.total = state.total + self.proj(x)
        state.n = state.n + 1
        return self.scale * state.total / state.n, state


from dataclasses import dataclass  # noqa: E402


@dataclass
class _SumState:
    total: torch.Tensor
    n: torch.Tensor

    def reset(self, done):
        keep = (~done).float()[:, None]
        self.total, self.n = self.total * keep, self.n * keep

    def clone(self):
        return _SumState(self.total.clone(), self.n.clone())


def test_a_user_encoder_class_plugs_in_with_its_kwargs(tmp_path):
    kw = {**TINY, "policy_kwargs": {**TINY["policy_kwargs"], "traj_encoder_class": _MeanPool,
                                    "traj_encoder_kwargs": {"scale": 2.0}}}
    model = AMAGO("Transformer", "TMazePassive-v0", seed=0, **kw)
    assert isinstance(model.policy.traj_encoder, _MeanPool) and model.policy.traj_encoder.scale == 2.0
    assert isinstance(model.policy.traj_encoder, TrajEncoder)
    model.learn(48)
    actions, state = model.predict(model.get_env().reset())
    assert isinstance(state, _SumState) and isinstance(state, ContextState)
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="not trusted"):  # a class from outside the trusted packages
        AMAGO.load(tmp_path / "m.zip")
    loaded = AMAGO.load(tmp_path / "m.zip", custom_objects={"policy_kwargs": kw["policy_kwargs"]})
    for k, v in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[k], v)


def test_encoder_names_and_protocol_errors():
    assert set(TRAJ_ENCODERS) == {"Transformer", "GRU", "LRU", "FF"}
    with pytest.raises(ValueError, match="traj_encoder_class='Mamba' is unknown"):
        AMAGO("Transformer", "TMazePassive-v0", n_envs=1, policy_kwargs=dict(traj_encoder_class="Mamba"))

    class NotAnEncoder(nn.Module):
        def __init__(self, d_in, **_):
            super().__init__()

    with pytest.raises(TypeError, match="does not implement"):
        AMAGO("Transformer", "TMazePassive-v0", n_envs=1, policy_kwargs=dict(traj_encoder_class=NotAnEncoder))
    assert isinstance(NoState(2), ContextState)
    assert np.isfinite(1.0)
