r"""``torchrun --nproc-per-node N -m zoo.learn --env ID --replay-dir DIR --checkpoint DIR``: the AMAGO learner alone.

Trains from a replay directory that ``python -m zoo.collect`` processes fill (AMAGO's asynchronous mode), data-parallel
over all ranks of the job (:mod:`amago_sb.distributed`): gloo on CPU, NCCL on GPUs (one GPU per rank), optional
bf16 autocast. Also runs as a single process without torchrun. Examples::

    # one machine, 2 CPU ranks, 4 collectors
    torchrun --standalone --nproc-per-node 2 -m zoo.learn --env popgym-RepeatPreviousEasy-v0 --backend gloo \
        --replay-dir runs/r1/replay --checkpoint runs/r1/ckpt --n-updates 20000
    for i in 0 1 2 3; do python -m zoo.collect --env popgym-RepeatPreviousEasy-v0 --replay-dir runs/r1/replay \
        --checkpoint runs/r1/ckpt --seed $i & done

Hyperparameters come from ``zoo/hyperparams/amago.yml`` (``-params key:value`` overrides); ``batch_size`` is per
rank. Rank 0 writes ``<checkpoint>/latest.zip`` right away (so collectors can start), every ``--save-interval``
updates and at the end, logs (stdout, ``progress.csv``, tensorboard with ``-tb``) and the run folder
``<log-folder>/amago/<env>_<n>/`` with ``args.yml``, ``config.yml``, the final ``<env>.zip`` and ``summary.yml``.
SIGTERM / SIGINT stop every rank at the next log point and save. Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.signals import stop_requested_on_signals

__all__ = ["LearnArgs", "learn", "build_parser", "main"]


@dataclass
class LearnArgs:
    """Options of the learner (the flags of ``python -m zoo.learn``; ``-1`` means "from the yml" or "off")."""

    env: str
    replay_dir: str
    checkpoint: str = ""  # directory for latest.zip (default <run dir>/checkpoints)
    n_updates: int = -1
    log_folder: str = "logs"
    backend: str = "auto"
    device: str = "auto"
    bf16: bool = False
    save_interval: int = 100
    log_interval: int = 50
    learning_starts: int = -1
    max_update_ratio: float = -1.0
    max_time: float = -1.0
    wait_timeout: float = 600.0
    seed: int = -1
    hyperparams: dict[str, Any] = field(default_factory=dict)
    trained_agent: str = ""
    tensorboard_log: str = ""
    num_threads: int = 1
    find_unused_parameters: bool = False
    verbose: int = 1
    allow_pickle: bool = False  # -i: also load a checkpoint whose data is pickled (runs code from it: trusted only)
    trust_imports: bool = False  # yml *_class entries may import from any module
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # over the yml's env_kwargs (spaces only)


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _build_model(args: LearnArgs, ctx, seed: int, raw: dict, hyperparams: dict, tensorboard_log: str | None):
    from amago_sb import AMAGO
    from zoo.algos import build_model
    from zoo.envs import make_vec_env
    from zoo.hyperparams import SPECIAL_KEYS, convert_value, resolve_env_kwargs

    env_kwargs = resolve_env_kwargs("amago", args.env, raw, args.env_kwargs)
    env = make_vec_env(args.env, "amago", 1, seed=seed, env_kwargs=env_kwargs)  # the learner only needs the spaces
    if args.trained_agent:  # as zoo.train -i: the checkpoint's settings, changed only by explicit -params
        overrides = {k: convert_value(k, v, args.trust_imports) for k, v in args.hyperparams.items()
                     if k not in SPECIAL_KEYS}
        model = AMAGO.load(
            args.trained_agent,
            env=env,
            device=ctx.device,
            allow_pickle=args.allow_pickle,
            tensorboard_log=tensorboard_log,
            verbose=args.verbose,
            **{**overrides, "replay_dir": args.replay_dir},
        )
    else:
        model = build_model(
            "amago",
            env,
            {**hyperparams, "replay_dir": args.replay_dir},
            seed=seed,
            tensorboard_log=tensorboard_log,
            verbose=args.verbose,
            device=str(ctx.device),
        )
    model.zoo_env_id, model.zoo_algo = args.env, "amago"
    return model


def default_n_updates(raw: dict, model) -> int:
    """Updates of a single-process run of the yml budget: ``n_timesteps * gradient_steps / (train_freq * n_envs)``."""
    n_envs = int(raw.get("n_envs", 1))
    from amago_sb.algorithm import updates_per_phase

    per_phase = updates_per_phase(model.gradient_steps, model.train_freq, n_envs)
    return max(1, math.ceil(int(raw.get("n_timesteps", 0)) * per_phase / (model.train_freq * n_envs)))


def learn(args: LearnArgs) -> dict[str, Any]:
    """Run the learner on this rank (call on every rank of the job); returns the summary on rank 0."""
    import numpy as np
    import torch
    from stable_baselines3.common.logger import Logger, make_output_format

    from amago_sb.distributed import DistributedLearner, cleanup_distributed, init_distributed
    from zoo.algos import check_hyperparams
    from zoo.envs import check_env_id
    from zoo.hyperparams import resolve_hyperparams
    from zoo.runs import next_run_dir, write_yaml

    check_env_id(args.env)
    raw, hyperparams = resolve_hyperparams("amago", args.env, args.hyperparams, trust_imports=args.trust_imports)
    check_hyperparams("amago", hyperparams)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    ctx = init_distributed(args.backend, args.device)
    finished = False
    try:
        seed = args.seed if args.seed >= 0 else int(np.random.randint(2**31 - 1))
        run_dir = None
        if ctx.is_main:
            run_dir = next_run_dir(args.log_folder, "amago", args.env)
            run_dir.mkdir(parents=True)
        seed, run_dir = _broadcast((seed, run_dir))
        ckpt_dir = Path(args.checkpoint) if args.checkpoint else run_dir / "checkpoints"
        tb = str(Path(args.tensorboard_log) / args.env) if args.tensorboard_log else None
        model = _build_model(args, ctx, seed, raw, hyperparams, tb)
        n_updates = args.n_updates if args.n_updates > 0 else default_n_updates(raw, model)
        if ctx.is_main:
            info = {
                **asdict(args),
                "seed": seed,
                "n_updates": n_updates,
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "checkpoint": str(ckpt_dir),
            }
            write_yaml(run_dir / args.env / "args.yml", info)
            write_yaml(run_dir / args.env / "config.yml", raw)
            outputs = [make_output_format("csv", str(run_dir))] + (
                [make_output_format("stdout", str(run_dir))] if args.verbose else []
            )
            if tb:
                outputs.append(make_output_format("tensorboard", tb))
            model.set_logger(Logger(str(run_dir), outputs))
            if args.verbose:
                print(
                    f"zoo.learn: {ctx.world_size} rank(s) on {ctx.backend}, run dir {run_dir}, checkpoints "
                    f"{ckpt_dir / 'latest.zip'}, {n_updates} updates",
                    flush=True,
                )
        else:
            model.set_logger(Logger(None, []))
        learner = DistributedLearner(
            model,
            ctx,
            replay_dir=args.replay_dir,
            seed=seed,
            bf16=args.bf16,
            find_unused_parameters=args.find_unused_parameters,
        )

        with stop_requested_on_signals(learner):
            summary = learner.learn(
                n_updates,
                checkpoint_path=ckpt_dir / "latest.zip",
                save_interval=args.save_interval,
                log_interval=args.log_interval,
                learning_starts=args.learning_starts if args.learning_starts >= 0 else None,
                max_update_ratio=args.max_update_ratio if args.max_update_ratio > 0 else None,
                max_time_s=args.max_time if args.max_time > 0 else None,
                wait_timeout_s=args.wait_timeout,
            )
        if ctx.is_main:
            model.save(run_dir / f"{args.env}.zip")
            summary = {
                **summary,
                "n_updates_total": int(model._n_updates),
                "seed": seed,
                "env_steps_collected": int(model.num_timesteps),
                "world_size": ctx.world_size,
            }
            write_yaml(run_dir / "summary.yml", summary)
            if args.verbose:
                print(
                    f"zoo.learn: {int(summary['updates'])} updates in {summary['wall_s']:.1f} s "
                    f"({summary['updates_per_s']:.2f}/s); final model {run_dir / (args.env + '.zip')}",
                    flush=True,
                )
        del learner  # drop the DDP wrapper (and its gradient hooks) before the group goes away
        finished = True
        return {**summary, "run_dir": str(run_dir)}
    finally:
        cleanup_distributed(wait_for_peers=finished)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m zoo.learn``."""
    d = LearnArgs("", "")
    p = argparse.ArgumentParser(prog="python -m zoo.learn", description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True, help="env id (sets the spaces and the yml entry)")
    p.add_argument("--replay-dir", required=True, help="replay directory that collectors write into")
    p.add_argument("--checkpoint", default="", help="directory for latest.zip (default: <run dir>/checkpoints)")
    p.add_argument(
        "--n-updates",
        type=int,
        default=-1,
        help="updates (-1: a single-process run of the yml budget: n_timesteps*gradient_steps/(train_freq*n_envs))",
    )
    p.add_argument("-f", "--log-folder", default=d.log_folder, help="root of the run folders (default: logs)")
    p.add_argument("--backend", choices=["auto", "gloo", "nccl"], default=d.backend, help="torch.distributed backend")
    p.add_argument("--device", default=d.device, help="auto (cuda:<local rank> with nccl, else cpu), or a device")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the loss (GPUs)")
    p.add_argument("--save-interval", type=int, default=d.save_interval, help="updates between checkpoints (0: end only)")
    p.add_argument("--log-interval", type=int, default=d.log_interval, help="updates between log lines")
    p.add_argument("--learning-starts", type=int, default=-1, help="stored steps to wait for (-1: the yml's)")
    p.add_argument("--max-update-ratio", type=float, default=-1.0, help="at most R updates per collected env step (-1: off)")
    p.add_argument("--max-time", type=float, default=-1.0, help="stop after S seconds of training (-1: never)")
    p.add_argument("--wait-timeout", type=float, default=d.wait_timeout, help="seconds to wait for the first data")
    p.add_argument("--seed", type=int, default=-1, help="seed (default: random, saved in args.yml)")
    p.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help="yml overrides")
    p.add_argument("-i", "--trained-agent", default="", help="start from this AMAGO .zip")
    p.add_argument("-tb", "--tensorboard-log", default="", help="tensorboard log dir (default: none)")
    p.add_argument("--num-threads", type=int, default=d.num_threads, help="torch threads per rank (default 1)")
    p.add_argument("--find-unused-parameters", action="store_true", help="DDP option for custom policies")
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="env keyword arguments over the yml's env_kwargs (the learner only uses the spaces)")
    p.add_argument("--verbose", type=int, default=d.verbose, help="0: quiet, 1: info")
    p.add_argument("--allow-pickle", action="store_true",
                   help="-i: also load a checkpoint whose data is pickled (runs code from the file: trusted files only)")
    p.add_argument("--trust-imports", action="store_true", help="yml *_class entries may import from any module")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    from zoo.hyperparams import parse_overrides

    try:
        learn(LearnArgs(**{**vars(ns), "hyperparams": parse_overrides(ns.hyperparams),
                           "env_kwargs": parse_overrides(ns.env_kwargs)}))
    except (ValueError, TypeError, OSError, ImportError) as err:  # TimeoutError is an OSError
        parser.exit(2, f"zoo.learn: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
