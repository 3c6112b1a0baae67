r"""``python -m zoo.train --algo {amago,ppo,recurrent_ppo} --env ID``: train one agent, rl-baselines3-zoo style.

Examples::

    python -m zoo.train --algo amago --env popgym-RepeatPreviousEasy-v0 -n 50000 --progress
    python -m zoo.train --algo ppo --env popgym-CountRecallEasy-v0 -params learning_rate:lin_3e-4 n_envs:4
    python -m zoo.train --algo ppo --env popgym-CountRecallEasy-v0 \
        -i logs/ppo/popgym-CountRecallEasy-v0_1/popgym-CountRecallEasy-v0.zip

Outputs go to ``<log-folder>/<algo>/<env>_<n>/`` (see :mod:`zoo.exp`). Bad input (unknown algo or env id,
malformed ``-params``, a checkpoint from another env) exits with status 2 and a one-line explanation.
"""

from __future__ import annotations

import argparse
import sys

from zoo.algos import ALGOS

__all__ = ["build_parser", "args_from_namespace", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flag names and defaults follow rl-baselines3-zoo's ``train.py``)."""
    p = argparse.ArgumentParser(prog="python -m zoo.train", description=__doc__.split("\n")[0])
    p.add_argument("--algo", required=True, help=f"algorithm: one of {', '.join(ALGOS)}")
    p.add_argument("--env", required=True, help="gymnasium env id, e.g. popgym-RepeatPreviousEasy-v0")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1, help="training budget in env steps (default: from the yml)")
    p.add_argument("--seed", type=int, default=-1, help="random seed (default: drawn at random and saved in args.yml)")
    p.add_argument("-f", "--log-folder", default="logs", help="root of the run folders (default: logs)")
    p.add_argument("--eval-freq", type=int, default=25_000, help="evaluate every N env steps (-1: never)")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    p.add_argument("--n-eval-envs", type=int, default=1, help="envs used for evaluation")
    p.add_argument("--save-freq", type=int, default=-1, help="save a checkpoint every N env steps (-1: never)")
    p.add_argument("-tb", "--tensorboard-log", default="", help="tensorboard log dir (default: none)")
    p.add_argument("--progress", action="store_true", help="show a progress bar (needs tqdm and rich)")
    p.add_argument(
        "-params",
        "--hyperparams",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help='override hyperparameters; values are YAML, e.g. learning_rate:1e-3 policy_kwargs:"{d_model: 128}" '
             '(amago) or policy_kwargs:"{net_arch: [64]}" (SB3 algos)',
    )
    p.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY:VALUE",
                   help="env keyword arguments over the yml's env_kwargs, e.g. corridor_length:30")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("-i", "--trained-agent", default="", help="continue training from this .zip (same algo and env)")
    p.add_argument("--keep-checkpoints", type=int, default=5,
                   help="--save-freq checkpoints kept, newest first (0: keep all; default 5)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="-i: also load checkpoints whose data is pickled (runs code from the file: only files you trust)")
    p.add_argument("--trust-imports", action="store_true",
                   help="yml / -params *_class entries may import from any module (default: trusted packages only)")
    p.add_argument("--num-threads", type=int, default=-1, help="torch threads (-1: torch default; 1 is best on a busy CPU)")
    p.add_argument("--vec-env", choices=("dummy", "subproc"), default="dummy",
                   help="SB3 VecEnv class for the training envs: dummy (one process) or subproc (one process per env)")
    p.add_argument("--verbose", type=int, default=1, help="0: quiet, 1: info")
    return p


def args_from_namespace(ns: argparse.Namespace):
    """Validate parsed flags and turn them into :class:`zoo.exp.TrainArgs` (``ValueError`` on bad input)."""
    from zoo.algos import check_algo
    from zoo.envs import check_env_id
    from zoo.exp import TrainArgs
    from zoo.hyperparams import parse_overrides

    check_algo(ns.algo)
    check_env_id(ns.env)
    return TrainArgs(
        algo=ns.algo,
        env=ns.env,
        n_timesteps=ns.n_timesteps,
        seed=ns.seed,
        log_folder=ns.log_folder,
        eval_freq=ns.eval_freq,
        eval_episodes=ns.eval_episodes,
        n_eval_envs=ns.n_eval_envs,
        save_freq=ns.save_freq,
        tensorboard_log=ns.tensorboard_log,
        progress=ns.progress,
        hyperparams=parse_overrides(ns.hyperparams),
        env_kwargs=parse_overrides(ns.env_kwargs),
        device=ns.device,
        trained_agent=ns.trained_agent,
        verbose=ns.verbose,
        num_threads=ns.num_threads,
        vec_env=ns.vec_env,
        allow_pickle=ns.allow_pickle,
        keep_checkpoints=ns.keep_checkpoints,
        trust_imports=ns.trust_imports,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    from zoo.exp import train

    try:
        train(args_from_namespace(ns))
    except (ValueError, TypeError, OSError, ImportError) as err:  # bad input, full disk, unreadable file: one line
        parser.exit(2, f"zoo.train: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
