"""Crafter instruction following with and without hindsight relabeling, at equal env steps, resumable.

Trains ``AMAGO("Transformer")`` on ``CrafterInstruction-v0`` (symbolic observations; the shipped yml's settings with
the overrides below) on mixed instructions of the training split (``split="train"``: 1-k goals, achievements /
travel / place-at, a fifth of the multi-goal instructions held out), once with ``relabel=True`` and once with
``relabel=False``. Every ``--eval-every`` env steps it saves the model and its replay, then evaluates the
deterministic policy on each instruction family on worlds not used in training (seeds from 1,000,000):

* ``achievement``, ``travel``, ``place``: one goal of that kind;
* ``multi``: 2-4 goals, drawn from the *held-out* multi-goal instructions (``split="test"``);
* the seed's four example instructions (``EXAMPLES``), each given to every evaluation episode.

Each run writes ``<out>/relabel_<on|off>__seed<k>.json`` (settings, machine, curve: per evaluation the env steps,
wall time and success rate / goals completed per family) after every evaluation; ``--resume`` continues a run from
its saved model and replay in ``--work``. ``--report`` writes the markdown table of the last evaluations.

    python bench/crafter_instructions.py --steps 200000 --eval-every 50000 [--resume] [--seeds 1]
    python bench/crafter_instructions.py --report docs/crafter_results.md
    python bench/crafter_instructions.py --gifs docs/figures/crafter   # the examples, with the instruction drawn
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amago_sb import AMAGO  # noqa: E402
from amago_sb.atomic_files import atomic_write  # noqa: E402
from zoo.envs import make_vec_env  # noqa: E402
from zoo.hyperparams import resolve_hyperparams  # noqa: E402

ENV_ID = "CrafterInstruction-v0"
FAMILIES = ("achievement", "travel", "place", "multi")
#: the seed's example instructions on the 8-cell instruction grid ("build at (30, 30)" -> x32 y32, (10, 10) -> x8 y8)
EXAMPLES = {
    "sapling-plant-x2-cow": ["collect sapling", "place plant", "place plant", "eat cow"],
    "pickaxe-stone-build": ["make wood pickaxe", "collect stone", "place stone x32 y32"],
    "travel-place-travel-place": ["travel x8 y8", "place stone", "travel x48 y48", "place stone"],
    "wood-table-pickaxe": ["collect wood", "place table", "make wood pickaxe"],
}
EVAL_SEED = 1_000_000


def env_kwargs(length: int, **extra: Any) -> dict[str, Any]:
    return {"obs_mode": "symbolic", "length": length, **extra}


def build_model(args: argparse.Namespace, relabel: bool, seed: int, work: Path) -> AMAGO:
    """A new model with the yml's settings and this script's overrides, or the saved one (``--resume``)."""
    env = make_vec_env(ENV_ID, "amago", args.n_envs, seed=seed, env_kwargs=env_kwargs(args.length, split="train"))
    ckpt = work / "model.zip"
    if args.resume and ckpt.is_file():
        return AMAGO.load(ckpt, env=env, replay_dir=str(work / "replay"))
    _, hp = resolve_hyperparams("amago", ENV_ID)
    for key in ("n_timesteps", "n_envs", "env_kwargs", "policy"):
        hp.pop(key, None)
    hp.update(context_len=args.context_len, relabel=relabel, replay_dir=str(work / "replay"), num_threads=1,
              buffer_size=args.buffer_size)
    return AMAGO("Transformer", env, seed=seed, **hp)


def evaluate(model: AMAGO, n_episodes: int, length: int) -> dict[str, dict[str, float]]:
    """Success rate and mean fraction of goals completed per family (``n_episodes`` each, in parallel envs)."""
    cases: dict[str, dict[str, Any]] = {f: {"family": f, "split": "test" if f == "multi" else "all"} for f in FAMILIES}
    cases.update({name: {"instruction": goals} for name, goals in EXAMPLES.items()})
    out = {}
    for i, (name, kwargs) in enumerate(cases.items()):
        env = make_vec_env(ENV_ID, "amago", n_episodes, seed=EVAL_SEED + 1000 * i, env_kwargs=env_kwargs(length, **kwargs))
        obs = env.reset()
        n_goals = [len(info["instruction_text"]) for info in env.reset_infos]
        state, start = None, np.ones(n_episodes, bool)
        success = np.full(n_episodes, np.nan)
        completed = np.zeros(n_episodes)
        while np.isnan(success).any():
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, _, done, infos = env.step(action)
            start = done
            for j in np.flatnonzero(done & np.isnan(success)):  # the first episode of each env counts
                success[j] = float(infos[j]["is_success"])
                completed[j] = infos[j]["goals_completed"] / n_goals[j]
        env.close()
        out[name] = {"success": float(success.mean()), "goals_completed": float(completed.mean())}
    return out


def run(args: argparse.Namespace, relabel: bool, seed: int) -> None:
    tag = f"relabel_{'on' if relabel else 'off'}__seed{seed}"
    work, record_path = Path(args.work) / tag, Path(args.out) / f"{tag}.json"
    work.mkdir(parents=True, exist_ok=True)
    record = json.loads(record_path.read_text()) if args.resume and record_path.is_file() else {}
    model = build_model(args, relabel, seed, work)
    record.setdefault("settings", {"env": ENV_ID, "relabel": relabel, "seed": seed, "length": args.length,
                                   "n_envs": args.n_envs, "context_len": args.context_len,
                                   "eval_episodes": args.eval_episodes, "steps": args.steps})
    record.setdefault("curve", [])
    record["machine"] = f"{platform.node()}: {torch.get_num_threads()} torch threads, {platform.machine()}"
    wall = record["curve"][-1]["wall_s"] if record["curve"] else 0.0
    while model.num_timesteps < args.steps:
        t0 = time.perf_counter()
        chunk = min(args.eval_every, args.steps - model.num_timesteps)
        model.learn(chunk, reset_num_timesteps=False)
        model.save(work / "model.zip")
        wall += time.perf_counter() - t0
        scores = evaluate(model, args.eval_episodes, args.length)
        record["curve"].append({"steps": int(model.num_timesteps), "wall_s": round(wall, 1), "date": str(date.today()),
                                "eval": scores})
        record_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1)
        atomic_write(record_path, lambda tmp, text=text: tmp.write_text(text), what="benchmark record")
        print(f"{tag} {model.num_timesteps} steps {wall:.0f} s: " +
              ", ".join(f"{k} {v['success']:.2f}" for k, v in scores.items()), flush=True)


def report(out_dir: Path, path: Path) -> None:
    """Markdown: success rate per family at the last evaluation of each run, relabel on vs off."""
    rows = {}
    for f in sorted(out_dir.glob("relabel_*__seed*.json")):
        rec = json.loads(f.read_text())
        if rec.get("curve"):
            rows[f.stem] = rec
    if not rows:
        raise SystemExit(f"No records in {out_dir}; run the benchmark first.")
    names = list(next(iter(rows.values()))["curve"][-1]["eval"])
    lines = ["| run | env steps | wall s | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for tag, rec in rows.items():
        last = rec["curve"][-1]
        cells = [f"{last['eval'][n]['success']:.2f} ({last['eval'][n]['goals_completed']:.2f})" for n in names]
        lines.append(f"| {tag} | {last['steps']} | {last['wall_s']:.0f} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n\nCells: success rate (mean fraction of goals completed).\n")
    print(path.read_text())


def record_examples(args: argparse.Namespace, gif_dir: Path) -> None:
    """One GIF per example instruction (``EXAMPLES``) of each saved run's latest model, episodes capped at
    ``--gif-steps``: the instruction and the goals completed so far are drawn under the frames (``zoo.video``)."""
    from zoo.enjoy import run_episodes
    from zoo.video import write_video

    for work in sorted(Path(args.work).glob("relabel_*__seed*")):
        if not (work / "model.zip").is_file():
            continue
        for i, (name, goals) in enumerate(EXAMPLES.items()):
            kwargs = env_kwargs(args.gif_steps, instruction=goals, render_mode="rgb_array")
            env = make_vec_env(ENV_ID, "amago", 1, seed=EVAL_SEED + 77 + i, env_kwargs=kwargs)
            model = AMAGO.load(work / "model.zip", env=env)
            returns, _, frames = run_episodes(model, env, 1, deterministic=True, record=True)
            env.close()
            path = write_video(frames, gif_dir / f"crafter_{work.name}_{name}.gif", fps=10)
            print(f"{path}: {int(returns[0])} of {len(goals)} goals, {len(frames)} frames")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    p.add_argument("--eval-every", type=int, default=50_000)
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes per family and example")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--relabel", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--length", type=int, default=500, help="Crafter episode limit (train and eval)")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--buffer-size", type=int, default=500_000)
    p.add_argument("--out", default="bench/results/crafter_instructions")
    p.add_argument("--work", default="logs/crafter_instructions", help="models and replays (for --resume)")
    p.add_argument("--resume", action="store_true", help="continue runs from their saved model and replay")
    p.add_argument("--report", default="", help="write the markdown table of the records in --out and exit")
    p.add_argument("--gifs", default="", help="write a GIF per example instruction for each saved run and exit")
    p.add_argument("--gif-steps", type=int, default=150, help="episode cap of the --gifs recordings")
    a = p.parse_args()
    if a.report:
        report(Path(a.out), Path(a.report))
        return
    if a.gifs:
        record_examples(a, Path(a.gifs))
        return
    for seed in range(a.seeds):
        for flag in a.relabel:
            run(a, flag == "on", seed)


if __name__ == "__main__":
    main()
