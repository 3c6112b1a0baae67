"""Non-finite losses / gradients: the update is skipped without a trace (parameters, optimizer, PopArt statistics),
counted in ``train/nonfinite_skips``, and training stops with an error naming the update after N skips in a row."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure

from amago_sb import AMAGO
from amago_sb.nonfinite import NonFiniteGuard
from zoo.envs import make_vec_env

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))


def _env():
    return make_vec_env("TMazePassive-v0", "amago", n_envs=2)  # the zoo's factory: trajectory form, monitored


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint after 80 env steps, its replay dir, and one replay trajectory whose rewards overflow float32
    once multiplied by ``reward_multiplier`` (1e38 * 10 = inf): every window drawn from it has a non-finite loss."""
    root = tmp_path_factory.mktemp("nonfinite")
    model = AMAGO("Transformer", _env(), seed=0, replay_dir=str(root / "replay"), **TINY)
    model.learn(80)
    model.save(root / "m.zip")
    good = model.replay.load(model.replay.paths()[-1])
    bad = dataclasses.replace(good, rewards=np.full_like(good.rewards, 1e38))
    return root, bad


def _load(root, replay, **kw) -> AMAGO:
    model = AMAGO.load(root / "m.zip", env=_env(), replay_dir=str(replay), **kw)
    model.set_logger(configure(str(replay.parent / "log"), ["csv"]))
    return model


def _snapshot(model: AMAGO) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_persistent_nonfinite_updates_are_skipped_then_stop(saved, tmp_path):
    root, bad = saved
    model = _load(root, tmp_path / "replay", max_nonfinite_updates=3)
    model.replay.add(bad)  # the only trajectory: every update is non-finite
    before, opt_before = _snapshot(model), model.policy.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    n = model._n_updates
    with pytest.raises(FloatingPointError, match=rf"loss (nan|inf) at update {n + 1} .*3 updates in a row .*"
                                                 r"max_nonfinite_updates=3"):
        model.train(10, 4)
    after = _snapshot(model)
    for k in before:  # no step, no Polyak update, PopArt / input-norm statistics restored
        if k.endswith((".u", ".v")):  # sigma-reparam power-iteration vectors: a function of the (unchanged) weights
            assert bool(torch.isfinite(after[k]).all()), k
        else:
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(model.policy.optimizer.state_dict()["state"][0]["exp_avg"], opt_before, rtol=0, atol=0)
    assert model._n_updates == n and model._nonfinite.skips == 3


def test_transient_nonfinite_updates_are_skipped_and_logged(saved, tmp_path):
    root, bad = saved
    shutil.copytree(root / "replay", tmp_path / "replay")
    model = _load(root, tmp_path / "replay")
    model.replay.add(bad)  # one bad trajectory among the good ones
    n = model._n_updates
    model.train(30, 4)
    model.logger.dump(model.num_timesteps)
    skips = model._nonfinite_skips
    assert 0 < skips < 30 and model._n_updates == n + 30 - skips
    assert all(bool(torch.isfinite(p).all()) for p in model.policy.parameters())
    assert all(bool(torch.isfinite(b).all()) for b in model.policy.popart.buffers())
    with open(tmp_path / "log" / "progress.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["train/nonfinite_skips"]) == skips
    # the count is part of the run's state: saved and resumed
    model.save(tmp_path / "m2.zip")
    assert AMAGO.load(tmp_path / "m2.zip", env=_env(), replay_dir=str(tmp_path / "replay"))._nonfinite_skips == skips


def test_nonfinite_parameters_stop_at_once_naming_them(saved, tmp_path):
    root, _ = saved
    shutil.copytree(root / "replay", tmp_path / "replay")
    model = _load(root, tmp_path / "replay")
    with torch.no_grad():
        model.policy.actor.parameters().__next__().fill_(float("inf"))
    msg = rf"at update {model._n_updates + 1} .*parameters \['actor\..*no longer finite"
    with pytest.raises(FloatingPointError, match=msg):
        model.train(5, 4)


def test_guard_rejects_bad_max():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="max_nonfinite_updates must be an int >= 1"):
        NonFiniteGuard(net, torch.optim.SGD(net.parameters(), lr=0.1), 0)
