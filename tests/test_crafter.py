"""Crafter adapter and CrafterInstruction on real (small) Crafter worlds."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wrappers  # noqa: F401  (registers the ids)
from wrappers import is_trajectory_space, relabel
from wrappers.envs.crafter_adapter import ACHIEVEMENTS, CrafterEnv
from wrappers.envs.crafter_instruction import CrafterGoals
from wrappers.instruction import replay_instruction
from wrappers.relabel import instruction_goals

SMALL = {"area": (16, 16), "size": (18, 18)}
PLACE_STONE, NOOP = 7, 0


def small_instruction(**kw) -> gym.Env:
    return gym.make("CrafterInstruction-v0", **SMALL, instruction_len=3, length=60, **kw)


def test_check_env_and_spaces():
    env = CrafterEnv(**SMALL, length=20)
    check_env(env, skip_render_check=True)
    assert env.observation_space == gym.spaces.Box(0, 255, (18, 18, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(17) and env.action_names[PLACE_STONE] == "place_stone"
    assert len(ACHIEVEMENTS) == 22


def test_seeding_truncation_and_termination():
    env = CrafterEnv(**SMALL, length=5)
    a, info = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(env.reset(seed=3)[1]["semantic"], env.reset(seed=4)[1]["semantic"])
    assert info["player_pos"].tolist() == [8, 8] and info["new_achievements"] == []
    env.reset(seed=0)
    for _ in range(5):
        obs, reward, term, trunc, info = env.step(NOOP)
        assert obs in env.observation_space
    assert trunc and not term
    env.reset(seed=0)
    env._env._player.health = 0
    _, _, term, trunc, info = env.step(NOOP)
    assert term and not trunc and info["discount"] == 0.0
    env = gym.make("Crafter-v0", **SMALL)
    assert is_trajectory_space(gym.make("CrafterInstruction-v0", **SMALL).observation_space)
    assert wrappers.make_env("Crafter-v0", **SMALL).max_episode_steps == 10000


def place_stone_in_front(env: CrafterEnv):
    """Give the player stone, make the faced cell grass, place a stone there."""
    player = env._env._player
    player.inventory["stone"] = 3
    target = tuple(int(v) for v in player.pos + np.array(player.facing))
    env._env._world[target] = "grass"
    return target, env.step(PLACE_STONE)


def test_placement_detected_at_the_faced_cell():
    env = CrafterEnv(**SMALL, length=20)
    env.reset(seed=0)
    target, (_, _, _, _, info) = place_stone_in_front(env)
    assert info["new_achievements"] == ["place_stone"]
    assert info["placed"] == [("stone", target)]
    stone_id = env._env._world._mat_ids["stone"]
    assert info["semantic"][target] == stone_id
    goals = CrafterGoals(area=(16, 16), grid_spacing=8, radius=2.0).achieved(env, {}, info)
    assert ("place", "stone") in goals and ("place", "stone", "x8", "y8") in goals and ("travel", "x8", "y8") in goals
    _, _, _, _, info = env.step(NOOP)
    assert info["new_achievements"] == [] and info["placed"] == []


def test_instruction_travel_place_and_achievement_goals():
    env = small_instruction()
    obs, info = env.reset(seed=0, options={"instruction": ["travel x8 y8", ("place", "stone", "x8", "y8"), "place stone"]})
    assert info["achieved"].shape == (8, 4) and not info["achieved"].any()
    _, r, term, _, info = env.step(NOOP)  # the player starts at (8, 8)
    assert r == 1 and not term and info["goals_completed"] == 1
    inner = env.unwrapped
    player = inner._env._player
    player.inventory["stone"] = 3
    target = tuple(int(v) for v in player.pos + np.array(player.facing))
    inner._env._world[target] = "grass"
    obs, r, term, _, info = env.step(PLACE_STONE)
    # the place-at goal is completed; ("place", "stone") was achieved in the same step but goals advance one per step
    assert r == 1 and not term and info["goals_completed"] == 2
    assert obs["instruction"][:2].tolist() == [[1] * 4, [1] * 4]
    inner._env._world[target] = "grass"
    obs, r, term, _, info = env.step(PLACE_STONE)
    assert r == 1 and term and info["instruction_success"]


def test_sampler_and_vocabulary():
    goals = CrafterGoals(area=(16, 16), grid_spacing=8)
    assert goals.vocabulary[:3] == ["collect", "coal", "diamond"] and "travel" in goals.vocabulary
    assert [t for t in goals.vocabulary if t[0] in "xy" and t[1:].isdigit()] == ["x0", "x8", "y0", "y8"]
    rng = np.random.default_rng(0)
    samples = [goals.sample(rng, 3) for _ in range(200)]
    assert {len(s) for s in samples} == {1, 2, 3}
    flat = [g for s in samples for g in s]
    assert {g[0] for g in flat} >= {"travel", "place", "collect", "make"}
    assert ("travel", "x8", "y8") not in flat  # the start point is never a travel goal
    with pytest.raises(ValueError, match="task_probs must be 3 non-negative numbers"):
        CrafterGoals(task_probs=(0.5, 0.5))


def test_random_rollout_relabels_consistently():
    env = small_instruction()
    from tests.test_wrappers_instruction import record

    traj = record(env, seed=1, steps=60)
    _, goals = instruction_goals(traj.observations["instruction"][0])
    np.testing.assert_array_equal(replay_instruction(goals, traj.achieved)[0], traj.rewards)
    out = relabel(traj, np.random.default_rng(0), scheme="all")
    _, new_goals = instruction_goals(out.observations["instruction"][0])
    np.testing.assert_array_equal(replay_instruction(new_goals, out.achieved)[0], out.rewards)
    assert out.rewards.sum() >= 1  # travel x8 y8 is achieved near the start, so some goal was relabeled in


def test_crafter_bad_input():
    with pytest.raises(ValueError, match=re.escape("use size >= 2 * view")):
        CrafterEnv(area=(16, 16), size=(16, 16))
    with pytest.raises(ValueError, match="area"):
        CrafterEnv(area=(8, 8), size=(18, 18))
    env = small_instruction()
    with pytest.raises(ValueError, match=re.escape("tokens ['x5'] outside the vocabulary")):
        env.reset(seed=0, options={"instruction": ["travel x5 y8"]})
    env = CrafterEnv(**SMALL)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Crafter action must be in 0..16"):
        env.step(17)


# ---------------------------------------------------------------------------------------------------- symbolic mode
def _rollout(env: CrafterEnv, seed: int, steps: int, render_every: int = 0) -> list:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        _, _, term, trunc, info = env.step(int(rng.integers(17)))
        if render_every and t % render_every == 0:
            assert env.render().shape == (*env._env._size[::-1], 3)
        out.append((info["player_pos"].tolist(), dict(info["achievements"]), info["semantic"].copy(),
                    list(info["new_achievements"]), info["placed"]))
        if term or trunc:
            break
    return out


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and x[1] == y[1] and np.array_equal(x[2], y[2]) and x[3] == y[3]
                                    and x[4] == y[4] for x, y in zip(a, b))


def test_symbolic_mode_contract_and_check_env():
    env = CrafterEnv(**SMALL, length=30, obs_mode="symbolic")
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert set(obs) == {"map", "inventory", "position", "facing"} and obs["map"].shape == (9, 7)
    px, py = info["player_pos"]
    assert obs["map"][4, 3] == 13  # the player in the middle of its local view (crafter's player id)
    np.testing.assert_array_equal(obs["map"][3, 3], info["semantic"][px - 1, py])  # the cell to its left
    assert obs["inventory"][0] == 9 and obs["position"].tolist() == [px / 16, py / 16]
    edge = CrafterEnv(**SMALL, obs_mode="symbolic")
    edge.reset(seed=1)
    edge._env._player.pos = np.array([0, 0])
    assert (edge._symbolic(edge._env._sem_view())["map"][:4, :3] == 0).all()  # off the world: 0
    traj = wrappers.make_env(gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic"))
    assert {"obs/map", "obs/inventory", "instruction"} <= set(traj.observation_space.spaces)
    with pytest.raises(ValueError, match="obs_mode must be one of"):
        CrafterEnv(obs_mode="ascii")


def test_seeded_episodes_are_deterministic_and_symbolic_matches_pixels():
    """Same seed and actions, same episode (crafter alone diverges: it hashes objects by address), through nights
    (when rendering draws noise from the world's generator) and with render() calls in symbolic mode."""
    steps = 400
    pixels = _rollout(CrafterEnv(**SMALL), 5, steps)
    assert _same(pixels, _rollout(CrafterEnv(**SMALL), 5, steps))
    assert _same(pixels, _rollout(CrafterEnv(**SMALL, obs_mode="symbolic"), 5, steps))
    assert _same(pixels, _rollout(CrafterEnv(**SMALL, obs_mode="symbolic", render_mode="rgb_array"), 5, steps, 9))
    assert len(pixels) > 150 and sum(len(x[3]) for x in pixels) > 0  # long enough to see a night and achievements


def test_instruction_env_renders_for_videos():
    env = gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (18, 18, 3) and frame.dtype == np.uint8


def test_fixed_instruction_kwarg_gives_every_episode_that_instruction():
    goals = ["collect sapling", "place plant", "eat cow"]
    env = gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", instruction=goals)
    for seed in (0, 1):
        _, info = env.reset(seed=seed)
        assert info["instruction_text"] == tuple(goals)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", instruction=["collect unicorn"])
    with pytest.raises(ValueError, match="list of 1..instruction_len"):
        gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", instruction="eat cow")


def test_fast_world_generation_gives_crafters_worlds():
    """The batched world generator must reproduce crafter's own, cell for cell, creature for creature, and leave the
    world's random generator in the same state (the episode that follows depends on it)."""
    import crafter
    from crafter import worldgen

    from wrappers.envs import crafter_worldgen

    def world(seed: int, fast: bool):
        worldgen.generate_world = crafter_worldgen.generate_world if fast else worldgen._amago_original_generate_world
        try:
            env = crafter.Env(area=(64, 64), seed=seed)
            env.reset()
        finally:
            worldgen.generate_world = crafter_worldgen.generate_world
        w = env._world
        return w._mat_map.copy(), [(type(o).__name__, tuple(o.pos)) for o in w.objects], w.random.uniform()

    for seed in range(12):
        ours, crafters = world(seed, fast=True), world(seed, fast=False)
        np.testing.assert_array_equal(ours[0], crafters[0])
        assert ours[1] == crafters[1] and ours[2] == crafters[2]
        assert len(set(ours[0].ravel().tolist())) >= 6  # a real world: grass, water, stone, trees, sand, ...


def test_instruction_families_and_held_out_multi_goal_split():
    from wrappers.envs.crafter_instruction import is_held_out

    goals = CrafterGoals(area=(64, 64))
    rng = np.random.default_rng(0)
    assert all(len(goals.sample(rng, 5, "travel")) == 1 and goals.sample(rng, 5, "travel")[0][0] == "travel"
               for _ in range(20))
    assert all(goals.sample(rng, 5, "place")[0][0] == "place" and len(goals.sample(rng, 5, "place")[0]) == 4
               for _ in range(20))
    assert all(tuple(goals.sample(rng, 5, "achievement")[0]) in {tuple(a.split("_")) for a in ACHIEVEMENTS}
               for _ in range(20))
    multi = [goals.sample(rng, 5, "multi") for _ in range(200)]
    assert {len(m) for m in multi} == {2, 3, 4}
    test = [goals.sample(rng, 5, "multi", "test") for _ in range(200)]
    train = [goals.sample(rng, 5, "mixed", "train") for _ in range(1000)]
    assert all(is_held_out(t) for t in test) and not any(is_held_out(t) for t in train)
    assert 0.1 < np.mean([is_held_out(m) for m in multi]) < 0.3  # about a fifth is held out
    env = gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", family="multi", split="test")
    _, info = env.reset(seed=3)
    assert len(info["instruction_text"]) >= 2
    for kwargs, match in (({"family": "chain"}, "family='chain'"), ({"split": "val"}, "split='val'"),
                          ({"family": "multi", "instruction_len": 1}, "instruction_len >= 2")):
        with pytest.raises(ValueError, match=match):
            gym.make("CrafterInstruction-v0", **SMALL, obs_mode="symbolic", **kwargs)
