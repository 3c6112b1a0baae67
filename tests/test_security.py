"""Loading a file never runs code: crafted checkpoints, foreign checkpoints, untrusted class names (issue 12, part 1)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from amago_sb import AMAGO
from amago_sb.serialization import (
    NotAMAGOCheckpointError,
    TabulatedSchedule,
    UnsafeCheckpointError,
    decode,
    decode_space,
    encode,
    encode_space,
    import_trusted,
    read_checkpoint,
)
from zoo.envs import make_vec_env

TINY = dict(batch_size=4, context_len=8, train_freq=4, gradient_steps=2, learning_starts=16, n_envs=2,
            policy_kwargs=dict(d_model=16, n_layers=1, n_heads=2, head_hidden=16))
ENV = "TMazePassive-v0"


class _WritesMarker:
    """Unpickling this object creates ``path``: proof that a loader executed code from the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


def _env():
    return make_vec_env(ENV, "amago", n_envs=2)  # the zoo's factory: trajectory form, monitored


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[AMAGO, Path]:
    root = tmp_path_factory.mktemp("safe")
    model = AMAGO("Transformer", _env(), seed=0, replay_dir=str(root / "replay"), **TINY)
    model.learn(48)
    model.save(root / "m.zip")
    return model, root / "m.zip"


def _rewrite_data(src: Path, dst: Path, edit) -> Path:
    """Copy the zip ``src`` to ``dst`` with its ``data`` JSON changed by ``edit(data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(payload)
                edit(data)
                payload = json.dumps(data).encode()
            zout.writestr(item, payload)
    return dst


def _pickled_entry(marker: Path) -> dict:
    blob = base64.b64encode(pickle.dumps(_WritesMarker(marker))).decode()
    return {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}


# ---------------------------------------------------------------------------------------------------- the format
def test_checkpoint_data_is_plain_json_without_pickle(saved):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        text = zf.read("data").decode()
    assert ":serialized:" not in text
    data = json.loads(text)
    assert data["amago_format"] == 1
    assert data["observation_space"][":space:"]["type"] == "Dict"
    assert data["policy_class"] == {":class:": "amago_sb.policy:TransformerPolicy"}
    assert Path(data["replay_dir"]).is_absolute()


def test_load_round_trips_weights_counters_and_spaces(saved):
    model, path = saved
    loaded = AMAGO.load(path, env=_env())
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert (loaded.num_timesteps, loaded._n_updates) == (model.num_timesteps, model._n_updates)
    for k, v in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[k], v)
    assert loaded.gammas == model.gammas and isinstance(loaded.gammas, tuple)


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-1.0, 2.0, (3, 2), np.float32),
    gym.spaces.Box(np.array([0, -np.inf]), np.array([1, np.inf]), dtype=np.float64),
    gym.spaces.Discrete(3, start=5),
    gym.spaces.MultiDiscrete([3, 4], start=[1, -2]),
    gym.spaces.MultiBinary([2, 3]),
    gym.spaces.Dict({"b": gym.spaces.Discrete(2), "a": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)}),
    gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.MultiBinary(4)]),
])
def test_space_descriptions_round_trip(space):
    back = decode_space(json.loads(json.dumps(encode_space(space))))
    assert back == space and back.dtype == space.dtype
    if isinstance(space, gym.spaces.Dict):
        assert list(back.spaces) == list(space.spaces)  # key order is part of the observation layout


def test_schedules_are_tabulated_and_values_round_trip():
    sched = decode(json.loads(json.dumps(encode(lambda p: 1e-3 * p ** 2, "learning_rate"))))
    assert isinstance(sched, TabulatedSchedule)
    for p in (1.0, 0.5, 0.123, 0.0):
        assert sched(p) == pytest.approx(1e-3 * p ** 2, abs=1e-9)
    state = np.random.RandomState(3).get_state()
    back = decode(json.loads(json.dumps(encode(state))))
    assert back[0] == state[0] and np.array_equal(back[1], state[1]) and back[1].dtype == state[1].dtype


def test_objects_that_need_pickle_are_refused_at_save(saved, tmp_path):
    model, _ = saved
    model.my_socket = object()
    try:
        with pytest.raises(TypeError, match="my_socket"):
            model.save(tmp_path / "x.zip")
        assert not list(tmp_path.iterdir())  # nothing partial written
        model.save(tmp_path / "y.zip", exclude=["my_socket"])
    finally:
        del model.my_socket


# ---------------------------------------------------------------------------------------------------- refusing files
def test_crafted_pickle_checkpoint_does_not_execute(saved, tmp_path):
    _, path = saved
    marker = tmp_path / "marker"

    def old_style(data):  # an amago-sb < safe-format file, as SB3 writes it, with a payload
        data.pop("amago_format")
        data["policy_class"] = _pickled_entry(marker)

    def disguised(data):  # the safe marker kept, a payload added
        data["exploration_class"] = _pickled_entry(marker)

    for edit, match in ((old_style, "allow_pickle=True"), (disguised, "crafted")):
        crafted = _rewrite_data(path, tmp_path / f"{edit.__name__}.zip", edit)
        with pytest.raises(UnsafeCheckpointError, match=match):
            AMAGO.load(crafted, env=_env())
        with pytest.raises(UnsafeCheckpointError):
            AMAGO.load(crafted, env=_env(), allow_pickle=False)
        assert not marker.exists()


def test_pickled_tensor_member_is_refused(saved, tmp_path):
    _, path = saved
    marker = tmp_path / "marker"
    crafted = tmp_path / "pth.zip"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(crafted, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item.filename)
            if item.filename == "policy.optimizer.pth":
                payload = pickle.dumps(_WritesMarker(marker))
            zout.writestr(item, payload)
    with pytest.raises(UnsafeCheckpointError, match="policy.optimizer.pth"):
        AMAGO.load(crafted, env=_env())
    assert not marker.exists()


def test_untrusted_class_in_checkpoint_is_not_imported(saved, tmp_path, monkeypatch):
    _, path = saved
    marker = tmp_path / "marker"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    crafted = _rewrite_data(path, tmp_path / "cls.zip",
                            lambda d: d.__setitem__("exploration_class", {":class:": "evil_module:X"}))
    with pytest.raises(ValueError, match="not trusted"):
        AMAGO.load(crafted, env=_env())
    assert not marker.exists() and "evil_module" not in sys.modules
    from amago_sb.exploration import EpisodicExploration

    loaded = AMAGO.load(crafted, env=_env(), custom_objects={"exploration_class": EpisodicExploration})
    assert loaded.exploration_class is EpisodicExploration


def test_legacy_sb3_format_loads_only_with_allow_pickle(saved, tmp_path):
    model, _ = saved
    legacy = tmp_path / "legacy.zip"
    BaseAlgorithm.save(model, legacy)  # SB3's own writer: pickled spaces and classes
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        AMAGO.load(legacy, env=_env())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = AMAGO.load(legacy, env=_env(), allow_pickle=True)
    assert loaded.num_timesteps == model.num_timesteps


def test_other_algorithms_checkpoint_is_named_as_such(tmp_path):
    ppo = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    ppo.save(tmp_path / "ppo.zip")
    with pytest.raises(NotAMAGOCheckpointError, match="not an AMAGO checkpoint"):
        AMAGO.load(tmp_path / "ppo.zip")
    with pytest.raises(NotAMAGOCheckpointError):
        read_checkpoint(tmp_path / "ppo.zip")


def test_collector_reload_refuses_crafted_checkpoint(saved, tmp_path):
    """A zip dropped into a running collector's checkpoint folder is read without unpickling."""
    from zoo.collect import CollectArgs, Collector, build_parser

    _, path = saved
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "amago_1_steps.zip").write_bytes(path.read_bytes())
    ns = build_parser().parse_args(["--env", ENV, "--replay-dir", str(tmp_path / "replay"), "--checkpoint", str(ckpt),
                                    "--n-envs", "1"])
    collector = Collector(CollectArgs(**{**vars(ns), "env_kwargs": {}}))
    collector.model = collector._load(collector._make_env())
    marker = tmp_path / "marker"
    crafted = _rewrite_data(path, ckpt / "amago_2_steps.zip",
                            lambda d: d.__setitem__("policy_kwargs", _pickled_entry(marker)))
    later = crafted.stat().st_mtime + 5
    os.utime(crafted, (later, later))
    with pytest.warns(UserWarning, match="pickled"):
        assert collector.maybe_reload() is False
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- yml imports
def test_yml_class_imports_only_from_trusted_packages():
    from zoo.hyperparams import convert_value

    assert convert_value("exploration_class", "amago_sb.exploration:QuietCorridorExploration").__name__ == \
        "QuietCorridorExploration"
    with pytest.raises(ValueError, match="not trusted.*--trust-imports"):
        convert_value("exploration_class", "json:JSONDecoder")
    assert convert_value("exploration_class", "json:JSONDecoder", trust_imports=True).__name__ == "JSONDecoder"
    with pytest.raises(ValueError, match="not trusted"):
        import_trusted("os:system", "x")


def test_train_cli_refuses_untrusted_class_before_writing(tmp_path):
    from zoo.train import main

    with pytest.raises(SystemExit) as e:
        main(["--algo", "amago", "--env", ENV, "-n", "64", "-f", str(tmp_path / "logs"),
              "-params", "exploration_class:json:JSONDecoder"])
    assert e.value.code == 2 and not (tmp_path / "logs").exists()
