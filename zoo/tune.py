"""``python -m zoo.tune --algo ALGO --env ID -n STEPS [--n-trials 20]``: rl_zoo3's hyperparameter search.

The same as ``python -m zoo.train -optimize ...``: optuna with rl_zoo3's ``--sampler`` (tpe, random), ``--pruner``
(median, halving, none), ``--n-trials``, ``--n-jobs``, ``--n-evaluations``, ``--storage`` / ``--study-name``
(distributed, resumable) and its report (``<log-folder>/<algo>/report_<env>_...csv``). AMAGO's sampler is
:func:`zoo.rlzoo.sample_amago_params` (learning rate, batch size, gradient steps, tau); ``recurrent_ppo`` uses
rl_zoo3's ``ppo_lstm`` sampler. Defaults that differ from ``zoo.train -optimize``: 20 trials (rl_zoo3: 500) and
no interactive optimization plots (``--optim-plots`` shows them).
"""

from __future__ import annotations

import sys

from zoo.train import main as train_main

__all__ = ["main", "tune_argv"]


def tune_argv(argv: list[str]) -> list[str]:
    """The ``zoo.train`` command line of a ``zoo.tune`` command line."""
    argv = list(argv)
    out = ["-optimize"]
    if "--n-trials" not in argv:
        out += ["--n-trials", "20"]
    if "--optim-plots" in argv:
        argv.remove("--optim-plots")
    else:
        out.append("--no-optim-plots")
    return out + argv


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    return train_main(tune_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
