"""The default (temporary) replay directory lives as long as its model; an explicit one is never deleted."""

import gc
import os

from amago_sb import AMAGO

TINY = dict(n_envs=2, learning_starts=10, train_freq=4, policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2))
ENV = "popgym-RepeatPreviousEasy-v0"


def test_temporary_replay_is_removed_with_its_model_and_loaded_models_get_a_fresh_one(tmp_path):
    model = AMAGO("Transformer", ENV, seed=0, **TINY)
    model.learn(120)
    temp_dir = model.replay_dir
    assert os.path.isdir(temp_dir) and model.replay.num_trajectories > 0
    model.save(tmp_path / "m.zip")
    env = model.get_env()
    model = AMAGO.load(tmp_path / "m.zip", env=env)  # the usual rebinding drops the first model
    gc.collect()
    assert not os.path.isdir(temp_dir)
    assert model.replay_dir != temp_dir and os.path.isdir(model.replay_dir)
    model.learn(60, reset_num_timesteps=False)  # the loaded model trains on its own fresh replay


def test_explicit_replay_dir_is_kept_and_resumed(tmp_path):
    replay = tmp_path / "replay"
    model = AMAGO("Transformer", ENV, seed=0, replay_dir=str(replay), **TINY)
    model.learn(120)
    n = model.replay.num_trajectories
    model.save(tmp_path / "m.zip")
    del model
    gc.collect()
    assert replay.is_dir()
    model = AMAGO.load(tmp_path / "m.zip", replay_dir=str(replay))
    assert model.replay.num_trajectories == n
