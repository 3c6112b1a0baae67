"""``python -m zoo.enjoy --algo ALGO --env ID -f logs/``: run a trained agent and print its episode returns.

The agent keeps its recurrent state across steps (``predict(obs, state, episode_start)``: AMAGO's context /
KV cache, RecurrentPPO's LSTM state), reset at episode starts. ``--video out.gif`` / ``--video out.mp4`` (or
``--gif out.gif``) records the episodes: the image observations of image envs (Crafter), else the env's
``render()`` frames (the env is made with ``render_mode="rgb_array"``: symbolic Crafter). Instruction envs get the
instruction drawn under each frame, with the goals completed so far checked (``zoo.video``).

Examples::

    python -m zoo.enjoy --algo amago --env popgym-RepeatPreviousEasy-v0 -f logs/ --n-episodes 10
    python -m zoo.enjoy --algo ppo --env Crafter-v0 -f logs/ --exp-id 2 --load-best --gif crafter.gif
    python -m zoo.enjoy --algo amago --env CrafterInstruction-v0 -f logs/ --n-episodes 3 --video crafter.mp4 \
        --env-kwargs instruction:"['collect sapling', 'place plant', 'eat cow']"
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from zoo.video import VIDEO_SUFFIXES, annotate, instruction_lines, write_video

__all__ = ["find_model", "run_episodes", "trial_returns", "save_gif", "main"]

#: recorded frames that show how an instruction episode ended (its last frame, with the final goals checked)
END_HOLD_FRAMES = 8


def run_env_kwargs(model_path: str | Path, algo: str, env_id: str, cli: list[str] | None = None) -> dict[str, Any]:
    """The env kwargs a run trained with (its ``args.yml``; the yml's for runs that did not record them), then the
    ``--env-kwargs`` items ``cli``."""
    from zoo.hyperparams import parse_overrides, resolve_env_kwargs

    for args_file in Path(model_path).parent.glob("*/args.yml"):
        saved = yaml.safe_load(args_file.read_text()) or {}
        if "env_kwargs" in saved:
            return {**(saved["env_kwargs"] or {}), **parse_overrides(cli)}
    return resolve_env_kwargs(algo, env_id, cli=parse_overrides(cli))


def find_model(
    log_folder: str | Path,
    algo: str,
    env_id: str,
    exp_id: int = 0,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    load_last_checkpoint: bool = False,
) -> Path:
    """Path of a saved model: run ``exp_id`` (0 = latest) of ``<log_folder>/<algo>/<env_id>_<n>/``.

    Raises:
        FileNotFoundError: no such run or model file (the message lists what exists).
    """
    base = Path(log_folder) / algo
    pattern = re.compile(rf"^{re.escape(env_id)}_(\d+)$")
    runs = {int(m.group(1)): p for p in base.glob(f"{env_id}_*") if (m := pattern.match(p.name))}
    if not runs:
        raise FileNotFoundError(f"No runs of {algo} on {env_id} under {base}; train one with python -m zoo.train.")
    run_id = max(runs) if exp_id == 0 else exp_id
    if run_id not in runs:
        raise FileNotFoundError(f"No run {env_id}_{run_id} under {base}; existing ids: {sorted(runs)}.")
    run = runs[run_id]
    checkpoints = {int(m.group(1)): p for p in run.glob("rl_model_*_steps.zip")
                   if (m := re.match(r"^rl_model_(\d+)_steps\.zip$", p.name))}
    if load_last_checkpoint:
        if not checkpoints:
            raise FileNotFoundError(f"No rl_model_<N>_steps.zip in {run}: train with --save-freq to write checkpoints.")
        path = checkpoints[max(checkpoints)]
    elif load_checkpoint is not None:
        path = run / f"rl_model_{load_checkpoint}_steps.zip"
    elif load_best:
        path = run / "best_model.zip"
    else:
        path = run / f"{env_id}.zip"
    if not path.is_file():
        existing = sorted(p.name for p in run.glob("*.zip"))
        raise FileNotFoundError(f"{path} does not exist; models in {run}: {existing or 'none (run killed early?)'}.")
    return path


def _image(obs) -> np.ndarray | None:
    """The first image (H, W, 3) uint8 of env 0 in a batched observation (array or dict of arrays), if any."""
    candidates = list(obs.values()) if isinstance(obs, dict) else [obs]
    for arr in candidates:
        arr = np.asarray(arr)
        if arr.dtype == np.uint8 and arr.ndim == 4:
            img = arr[0]
            return np.transpose(img, (1, 2, 0)) if img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3) else img
    return None


def _has_image(space) -> bool:
    """Whether an observation space (or a key of a ``Dict`` one) is an image, SB3's ``is_image_space``."""
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space

    subspaces = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    return any(is_image_space(s, check_channels=False) for s in subspaces)


def _frame(env: VecEnv, obs) -> np.ndarray | None:
    """Env 0's picture: its image observation, else its ``render()`` (``None`` when it has neither)."""
    img = _image(obs)
    if img is None and getattr(env, "render_mode", None) == "rgb_array":
        rendered = env.get_images()
        img = rendered[0] if rendered and rendered[0] is not None else None
    return img


def _instruction(env: VecEnv) -> tuple[str, ...]:
    """The instruction of env 0's current episode as text (instruction envs; empty otherwise)."""
    infos = getattr(env, "reset_infos", None) or [{}]
    return tuple(infos[0].get("instruction_text", ()))


def run_episodes(
    model: BaseAlgorithm,
    env: VecEnv,
    n_episodes: int,
    deterministic: bool = True,
    record: bool = False,
    max_steps: int = 100_000,
    inner: list[list[float]] | None = None,
    inner_success: list[list[bool]] | None = None,
) -> tuple[list[float], list[int], list[np.ndarray]]:
    """Run ``n_episodes`` on env 0 of a VecEnv with the model's recurrent state.

    Returns:
        ``(returns, lengths, frames)``: lists of per-episode return and length, and the frames of env 0 when
        ``record`` (image observations, else ``render()`` of an env made with ``render_mode="rgb_array"``; empty
        when it has neither). Instruction envs' frames carry the instruction with the goals completed so far
        (``zoo.video.annotate``), and each episode ends with ``END_HOLD_FRAMES`` copies of its last frame showing
        the final count. For trial envs (``TrialWrapper``: meta-RL),
        ``inner`` (if given) receives one list per finished trial: the return of each of its inner episodes, and
        ``inner_success`` their ``info["is_success"]`` (envs that report it: Meta-World).
    """
    obs = env.reset()
    state = None
    episode_start = np.ones((env.num_envs,), dtype=bool)
    returns, lengths, frames = [], [], []
    ep_ret, ep_len = 0.0, 0
    trial: list[float] = []
    trial_success: list[bool] = []
    inner_ret = 0.0
    goals, completed, last_img = _instruction(env), 0, None
    for _ in range(max_steps):
        if record and (last_img := _frame(env, obs)) is not None:
            lines = [*instruction_lines(goals, completed), f"step {ep_len}"]
            frames.append(annotate(last_img, lines) if goals else last_img)
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, reward, done, infos = env.step(action)
        episode_start = done
        completed = int(infos[0].get("goals_completed", 0))
        if done[0] and goals:
            if record and last_img is not None:
                end = [*instruction_lines(goals, completed), "success" if completed == len(goals) else "not completed"]
                frames.extend([annotate(last_img, end)] * END_HOLD_FRAMES)
            goals, completed = _instruction(env), 0
        ep_ret += float(reward[0])
        ep_len += 1
        inner_ret += float(reward[0])
        if "inner_episode_done" in infos[0] and (infos[0]["inner_episode_done"] or done[0]):
            trial.append(inner_ret)
            inner_ret = 0.0
            if "is_success" in infos[0]:
                trial_success.append(bool(infos[0]["is_success"]))
        if done[0]:
            returns.append(ep_ret)
            lengths.append(ep_len)
            ep_ret, ep_len = 0.0, 0
            if inner is not None and trial:
                inner.append(trial)
            if inner_success is not None and trial_success:
                inner_success.append(trial_success)
            trial, trial_success, inner_ret = [], [], 0.0
            if len(returns) >= n_episodes:
                break
    return returns, lengths, frames


def trial_returns(model_path: str | Path, algo: str, env_id: str, n_trials: int, seed: int,
                  env_kwargs: dict[str, Any] | None = None, device: str = "auto") -> dict[str, list] | None:
    """Return (and success, where the env reports ``is_success``) of each inner episode of ``n_trials`` trials of a
    trial env (meta-RL), deterministic policy: ``{"returns": [[r_1, ..., r_k], ...], "successes": [[bool]] or []}``.

    The env gets the run's env kwargs with ``env_kwargs`` on top (e.g. ``{"split": "test"}``: held-out goals) and
    ``seed``. ``None`` when the env is not a trial env (its reset info has no ``inner_episode_done``).
    """
    from zoo.envs import make_vec_env
    from zoo.runs import load_model, run_hyperparams

    kwargs = {**run_env_kwargs(model_path, algo, env_id), **(env_kwargs or {})}
    env = make_vec_env(env_id, algo, 1, seed=seed, env_kwargs=kwargs)
    try:
        env.reset()
        if "inner_episode_done" not in (getattr(env, "reset_infos", None) or [{}])[0]:
            return None
        model = load_model(algo, model_path, env, run_hyperparams(model_path, algo, env_id), device=device)
        inner: list[list[float]] = []
        success: list[list[bool]] = []
        run_episodes(model, env, n_trials, deterministic=True, inner=inner, inner_success=success)
        return {"returns": inner, "successes": success}
    finally:
        env.close()


def save_gif(frames: list[np.ndarray], path: str | Path, fps: int = 15) -> Path:
    """Write ``frames`` (H, W, 3) uint8 as a GIF (``zoo.video.write_video``)."""
    if Path(path).suffix.lower() != ".gif":
        raise ValueError(f"save_gif writes .gif files, got {str(path)!r}; use zoo.video.write_video for .mp4.")
    return write_video(frames, path, fps)


def build_parser() -> argparse.ArgumentParser:
    """Flags follow rl-baselines3-zoo's ``enjoy.py``."""
    p = argparse.ArgumentParser(prog="python -m zoo.enjoy", description=__doc__.split("\n")[0])
    p.add_argument("--algo", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("-f", "--folder", default="logs", help="log folder given to zoo.train")
    p.add_argument("--exp-id", type=int, default=0, help="run id (0: latest)")
    p.add_argument("--load-best", action="store_true", help="load best_model.zip (saved by the evaluations)")
    p.add_argument("--load-checkpoint", type=int, default=None, help="load rl_model_<N>_steps.zip")
    p.add_argument("--load-last-checkpoint", action="store_true", help="load the newest rl_model_<N>_steps.zip")
    p.add_argument("--n-episodes", type=int, default=5)
    p.add_argument("-n", "--n-timesteps", type=int, default=100_000, help="step limit")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic choice")
    act.add_argument("--deterministic", action="store_true", help="the deterministic choice (the default)")
    p.add_argument("--no-render", action="store_true",
                   help="accepted for rl_zoo3 command lines: zoo.enjoy never opens a window (use --gif)")
    p.add_argument("--gym-packages", nargs="+", default=[], help="modules to import first (they register envs)")
    p.add_argument("--num-threads", type=int, default=-1, help="torch threads (-1: torch default)")
    p.add_argument("--video", default="", help="record the episodes to this .gif or .mp4 (instruction envs: with the "
                   "instruction drawn on the frames)")
    p.add_argument("--gif", default="", help="record the episodes to this GIF (as --video)")
    p.add_argument("--fps", type=int, default=15, help="frames per second of --video / --gif")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="env keyword arguments over those of the run (args.yml) or the yml, e.g. corridor_length:30")
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load checkpoints whose data is pickled (runs code from the file: only files you trust)")
    p.add_argument("--trust-imports", action="store_true", help="config *_class entries may import from any module")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints one line per episode and the mean return."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    from zoo.algos import check_algo
    from zoo.envs import check_env_id, make_vec_env
    from zoo.runs import checkpoint_env_id, load_model, run_hyperparams
    from zoo.train import split_env_module

    try:
        for module in ns.gym_packages:
            importlib.import_module(module)
        ns.env = split_env_module(ns.env)
        if ns.num_threads > 0:
            torch.set_num_threads(ns.num_threads)
        check_algo(ns.algo)
        check_env_id(ns.env)
        path = find_model(ns.folder, ns.algo, ns.env, ns.exp_id, ns.load_best, ns.load_checkpoint,
                          ns.load_last_checkpoint)
        trained_on = checkpoint_env_id(path)
        if trained_on is not None and trained_on != ns.env:
            raise ValueError(f"{path} was trained on {trained_on!r}, not {ns.env!r}.")
        videos = [v for v in (ns.video, ns.gif) if v]
        for v in videos:
            if Path(v).suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"--video / --gif {v!r} must end in one of {VIDEO_SUFFIXES}.")
        env_kwargs = run_env_kwargs(path, ns.algo, ns.env, ns.env_kwargs)
        env = make_vec_env(ns.env, ns.algo, 1, seed=ns.seed, env_kwargs=env_kwargs)
        if videos and not _has_image(env.observation_space) and "render_mode" not in env_kwargs:
            env.close()  # no image observations: record the env's render() frames
            env = make_vec_env(ns.env, ns.algo, 1, seed=ns.seed, env_kwargs={**env_kwargs, "render_mode": "rgb_array"})
        hyperparams = run_hyperparams(path, ns.algo, ns.env, trust_imports=ns.trust_imports)
        model = load_model(ns.algo, path, env, hyperparams, device=ns.device, allow_pickle=ns.allow_pickle)
    except (ValueError, TypeError, OSError, ImportError) as err:
        parser.exit(2, f"zoo.enjoy: error: {err}\n")
    print(f"Loaded {path}")
    inner: list[list[float]] = []
    success: list[list[bool]] = []
    returns, lengths, frames = run_episodes(model, env, ns.n_episodes, not ns.stochastic, bool(videos), ns.n_timesteps,
                                            inner, success)
    env.close()
    for i, (r, n) in enumerate(zip(returns, lengths)):
        print(f"episode {i}: return {r:.3f}, length {n}")
    if inner and len({len(t) for t in inner}) == 1:  # a trial env: adaptation in context shows as a rising curve
        per_inner = np.mean(inner, axis=0)
        print("return per inner episode of a trial (mean over trials): " + ", ".join(f"{r:.3f}" for r in per_inner))
        print(f"in-context improvement (last - first inner episode): {per_inner[-1] - per_inner[0]:+.3f}")
    if success and len({len(t) for t in success}) == 1:
        rate = np.mean(success, axis=0)
        print("success rate per inner episode of a trial: " + ", ".join(f"{r:.2f}" for r in rate))
    if returns:
        print(f"mean return {np.mean(returns):.3f} +- {np.std(returns):.3f} over {len(returns)} episodes")
    else:
        print(f"no episode finished within {ns.n_timesteps} steps")
    for v in videos:
        try:
            print(f"Video saved to {write_video(frames, v, ns.fps)} ({len(frames)} frames)")
        except (ValueError, ImportError) as err:
            parser.exit(2, f"zoo.enjoy: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
