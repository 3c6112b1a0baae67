"""``python -m zoo.benchmark --envs <ids or groups> --algos amago ppo recurrent_ppo --seeds 3 --steps N``.

Trains every (env, algo, seed) with :func:`zoo.train.run` (same envs, wrappers and hyperparameter files as
``zoo.train``), then writes a markdown report (default ``docs/benchmark.md``): a table env x algo with the mean
+- std over seeds of the final evaluation return (deterministic policy, ``--eval-episodes`` episodes) and the
mean wall time per run, the machine it ran on, and one PNG of learning curves per env (``--fig-dir``).
Groups: ``popgym-easy``, ``popgym-medium``, ``popgym-hard``, ``popgym-all``, ``meta``, ``crafter-instructions``.
A run that raises is reported as failed in the table (with the error) and the benchmark goes on. The report is
rewritten after every run, so a killed benchmark keeps a partial one; ``--reuse`` takes finished runs with identical
settings from the log folder instead of training them again (resume a benchmark, or add seeds).

Example::

    python -m zoo.benchmark --envs popgym-easy --algos amago ppo recurrent_ppo --seeds 3 --steps 200000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from rl_zoo3.utils import StoreDict

from zoo.algos import check_algo
from zoo.envs import ENV_GROUPS, check_env_id, expand_env_groups

__all__ = ["Cell", "RunSpec", "find_finished_run", "run_record", "run_benchmark", "write_report", "write_run_records", "main"]


@dataclass
class RunSpec:
    """One (env, algo, seed) run of the benchmark: the ``python -m zoo.train`` flags it is trained with."""

    algo: str
    env: str
    seed: int
    n_timesteps: int
    log_folder: str
    eval_freq: int
    eval_episodes: int
    hyperparams: dict = field(default_factory=dict)
    device: str = "auto"
    verbose: int = 0
    num_threads: int = -1
    eval_env_kwargs: dict | None = None  # e.g. {"split": "test"}: evaluate MetaWorldML1 on its held-out goals

    def argv(self) -> list[str]:
        """The ``zoo.train`` command line (``-params`` values as python literals, which rl_zoo3 evaluates)."""
        out = ["--algo", self.algo, "--env", self.env, "--seed", str(self.seed), "-n", str(self.n_timesteps),
               "-f", self.log_folder, "--eval-freq", str(self.eval_freq), "--eval-episodes", str(self.eval_episodes),
               "--device", self.device, "--verbose", str(self.verbose), "--num-threads", str(self.num_threads)]
        if self.hyperparams:
            out += ["-params", *(f"{k}:{v!r}" for k, v in self.hyperparams.items())]
        if self.eval_env_kwargs:
            out += ["--eval-env-kwargs", *(f"{k}:{v!r}" for k, v in self.eval_env_kwargs.items())]
        return out


MATCH_KEYS = ("seed", "n_timesteps", "eval_freq", "eval_episodes", "hyperparams", "eval_env_kwargs")
TRIALS_FILE = "trial_returns.json"


def _settings(saved: dict) -> dict:
    """The run settings a benchmark matches on (plus ``num_threads``), from an ``args.yml`` or a record's ``args``;
    empty overrides and evaluation kwargs read the same however they were written."""
    args = {k: saved.get(k) for k in (*MATCH_KEYS, "num_threads")}
    args["hyperparams"] = args["hyperparams"] or {}
    args["eval_env_kwargs"] = args["eval_env_kwargs"] or None
    return args


@dataclass
class Cell:
    """Results of one (env, algo) pair over seeds: one record (see :func:`run_record`) per finished run."""

    records: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def finals(self) -> list[float]:
        """Last deterministic evaluation return of each run that evaluated."""
        return [r["summary"]["last_eval_mean"] for r in self.records if r["summary"].get("last_eval_mean") is not None]

    @property
    def walls(self) -> list[float]:
        """Wall time of each run in seconds."""
        return [float(r["summary"]["wall_time_s"]) for r in self.records]

    def summary(self) -> str:
        """``mean +- std (n=seeds, wall s)`` or ``failed: ...``."""
        if not self.finals:
            return f"failed: {self.errors[0]}" if self.errors else "n/a"
        text = f"{np.mean(self.finals):.3f} +- {np.std(self.finals):.3f} (n={len(self.finals)}, {np.mean(self.walls):.0f} s)"
        return text + (f" [{len(self.errors)} failed]" if self.errors else "")

    def add(self, record: dict) -> None:
        """Record one finished run."""
        self.records.append(record)
        if record["summary"].get("last_eval_mean") is None:
            self.errors.append("no evaluation ran (eval_freq > steps?)")


def run_record(run_dir: Path, algo: str, env_id: str) -> dict:
    """What the report needs of one finished ``zoo.train`` run, as plain JSON types: its ``summary.yml``, the
    settings it was made with (``args.yml``) and its evaluation curve (``evaluations.npz``)."""
    summary = yaml.safe_load((run_dir / "summary.yml").read_text()) or {}
    args = _settings(yaml.safe_load((run_dir / env_id / "args.yml").read_text()) or {})
    record = {"algo": algo, "env": env_id, "run_dir": str(run_dir), "summary": summary, "args": args}
    if (run_dir / "evaluations.npz").is_file():
        with np.load(run_dir / "evaluations.npz", allow_pickle=False) as ev:
            record["evaluations"] = {"timesteps": ev["timesteps"].tolist(),
                                     "mean_return": ev["results"].mean(axis=1).tolist()}
    if (run_dir / TRIALS_FILE).is_file():
        record["trials"] = json.loads((run_dir / TRIALS_FILE).read_text())
    return record


def evaluate_trials(run_dir: Path, args: RunSpec) -> None:
    """For trial envs (meta-RL), write the final model's return (and success) per inner episode over
    ``eval_episodes`` trials of the evaluation env (seed + 10000, ``eval_env_kwargs``) to ``run_dir/trial_returns.json``."""
    from zoo.enjoy import trial_returns

    trials = trial_returns(run_dir / f"{args.env}.zip", args.algo, args.env, args.eval_episodes, args.seed + 10_000,
                           args.eval_env_kwargs, args.device)
    if trials is not None:
        (run_dir / TRIALS_FILE).write_text(json.dumps(trials) + "\n")


def _record_path(folder: str | Path, algo: str, env_id: str, seed: int) -> Path:
    return Path(folder) / f"{algo}__{env_id}__seed{seed}.json"


def _same_settings(saved: dict, args: RunSpec) -> bool:
    settings = _settings(saved)
    return all(settings[k] == getattr(args, k) for k in MATCH_KEYS)


def find_finished_run(args: RunSpec, results_dir: str | Path | None = None) -> dict | None:
    """The record of a finished run made with the same algo, env, seed, budget, evaluation settings and overrides
    as ``args``: a run folder with ``summary.yml`` in ``args.log_folder``, else a JSON record in ``results_dir``
    (log folders are not committed; records are, so a benchmark resumes in a fresh checkout). ``None`` if neither."""
    for args_file in sorted((Path(args.log_folder) / args.algo).glob(f"{args.env}_*/{args.env}/args.yml")):
        run_dir = args_file.parent.parent
        if (run_dir / "summary.yml").is_file() and _same_settings(yaml.safe_load(args_file.read_text()) or {}, args):
            return run_record(run_dir, args.algo, args.env)
    if results_dir is not None and (path := _record_path(results_dir, args.algo, args.env, args.seed)).is_file():
        record = json.loads(path.read_text())
        if (record.get("algo"), record.get("env")) == (args.algo, args.env) and _same_settings(record.get("args") or {}, args):
            return record
    return None


def run_benchmark(
    envs: list[str],
    algos: list[str],
    seeds: int,
    steps: int,
    log_folder: str | Path,
    eval_freq: int | None = None,
    eval_episodes: int = 10,
    hyperparams: dict | None = None,
    device: str = "auto",
    seed_offset: int = 0,
    verbose: int = 0,
    num_threads: int = -1,
    reuse: bool = False,
    on_update: Callable[[dict[tuple[str, str], Cell]], None] | None = None,
    train_missing: bool = True,
    eval_env_kwargs: dict | None = None,
    results_dir: str | Path | None = None,
) -> dict[tuple[str, str], Cell]:
    """Train every (env, algo, seed); returns ``{(env, algo): Cell}``. ``eval_freq`` defaults to ``steps // 10``.

    With ``reuse``, finished runs of identical settings found in ``log_folder`` (or recorded in ``results_dir``)
    are taken instead of retrained
    (all of them are collected first, so a report written by ``on_update`` -- called after every new run --
    always shows every result available so far). ``train_missing=False`` trains nothing: the results are the
    finished runs found (``--report-only``).
    """
    from zoo.train import run as train_run

    eval_freq = eval_freq if eval_freq is not None else max(steps // 10, 1)
    results: dict[tuple[str, str], Cell] = {(e, a): Cell() for e in envs for a in algos}
    todo: list[RunSpec] = []
    for env_id in envs:
        for algo in algos:
            for i in range(seeds):
                args = RunSpec(
                    algo=algo,
                    env=env_id,
                    seed=seed_offset + i,
                    n_timesteps=steps,
                    log_folder=str(log_folder),
                    eval_freq=eval_freq,
                    eval_episodes=eval_episodes,
                    hyperparams=dict(hyperparams or {}),
                    device=device,
                    verbose=verbose,
                    num_threads=num_threads,
                    eval_env_kwargs=dict(eval_env_kwargs) if eval_env_kwargs else None,
                )
                found = find_finished_run(args, results_dir) if reuse or not train_missing else None
                if found is not None:
                    results[(env_id, algo)].add(found)
                elif train_missing:
                    todo.append(args)
    for args in todo:
        cell = results[(args.env, args.algo)]
        print(f"[benchmark] {args.algo} on {args.env}, seed {args.seed}, {steps} steps", flush=True)
        try:
            res = train_run(args.argv())
        except (Exception, SystemExit) as err:  # keep benchmarking the other cells; the report names the failure
            traceback.print_exc()
            cell.errors.append(f"{type(err).__name__}: {err}".splitlines()[0][:120])
        else:
            evaluate_trials(Path(res.run_dir), args)
            cell.add(run_record(Path(res.run_dir), args.algo, args.env))
        if on_update is not None:
            on_update(results)
    return results


def write_run_records(results: dict[tuple[str, str], Cell], folder: str | Path) -> list[Path]:
    """One ``<algo>__<env>__seed<k>.json`` per finished run (see :func:`run_record`): a record to commit, which
    ``--reuse`` takes in a checkout without the log folder. One folder holds one benchmark's settings."""
    written = []
    for (env_id, algo), cell in results.items():
        for record in cell.records:
            path = _record_path(folder, algo, env_id, record["args"]["seed"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1) + "\n")
            written.append(path)
    return written


def aggregate_lines(results: dict[tuple[str, str], Cell], envs: list[str], algos: list[str]) -> list[str]:
    """The report's aggregate section: IQM of normalized returns with 95% bootstrap intervals (envs with a best-known
    return and a result for every algo and the same number of seeds), and amago's wins per baseline."""
    from zoo.aggregate import best_known_return, iqm_interval, normalize, random_return, wins

    means = {e: {a: float(np.mean(results[(e, a)].finals)) for a in algos if results[(e, a)].finals} for e in envs}
    lines = ["", "## Aggregate", ""]
    if "amago" in algos:
        for other in (a for a in algos if a != "amago"):
            won, n = wins(means, "amago", other, envs)
            lines.append(f"- amago ahead of {other} on {won} of {n} envs (mean final return).")
    scored = [e for e in envs if best_known_return(e) is not None and all(results[(e, a)].finals for a in algos)]
    n_seeds = min((len(results[(e, a)].finals) for e in scored for a in algos), default=0)
    if len(scored) < len(envs):
        lines.append(f"- IQM over the {len(scored)} of {len(envs)} envs with a best-known return and a finished run of "
                     "every algo.")
    if n_seeds == 0 or not scored:
        lines.append("- IQM: needs a finished run of every algo on every env with a best-known return.")
        return lines
    randoms = {e: random_return(e) for e in scored}
    scores = {a: np.array([[normalize(results[(e, a)].finals[i], randoms[e], best_known_return(e)) for e in scored]
                           for i in range(n_seeds)]) for a in algos}
    lines += ["", f"IQM of normalized returns ((return - random) / (best - random); random = uniform random actions, "
              f"best = 1.0 on POPGym) over {len(scored)} envs x {n_seeds} seed(s), 95% stratified bootstrap "
              "intervals that also resample envs (rliable, task_bootstrap):", "",
              "| algo | IQM | 95% interval |", "|---|---|---|"]
    for algo, (point, low, high) in iqm_interval(scores).items():
        lines.append(f"| {algo} | {point:.3f} | [{low:.3f}, {high:.3f}] |")
    lines += ["", "Random-policy returns: " + ", ".join(f"{e.removeprefix('popgym-')} {r:.3f}" for e, r in randoms.items())]
    return lines


def trial_lines(results: dict[tuple[str, str], Cell], envs: list[str], algos: list[str]) -> list[str]:
    """The report's in-context adaptation section for trial envs: return (and success) per inner episode of a trial,
    and the improvement from the first to the last inner episode (mean +- std over seeds)."""
    rows = []
    for env_id in envs:
        for algo in algos:
            trials = [r["trials"] for r in results[(env_id, algo)].records if r.get("trials", {}).get("returns")]
            if not trials or len({len(t["returns"][0]) for t in trials}) != 1:
                continue
            per_seed = np.array([np.mean(t["returns"], axis=0) for t in trials])  # (seeds, k)
            gain = per_seed[:, -1] - per_seed[:, 0]
            success = [np.mean(t["successes"], axis=0) for t in trials if t.get("successes")]
            rate = ", ".join(f"{x:.2f}" for x in np.mean(success, axis=0)) if success else "-"
            rows.append(f"| {env_id} | {algo} | " + ", ".join(f"{x:.2f}" for x in per_seed.mean(0))
                        + f" | {gain.mean():+.2f} +- {gain.std():.2f} | {rate} | {len(trials)} |")
    if not rows:
        return []
    return ["", "## In-context adaptation (trial envs)", "",
            "Final model, deterministic, on evaluation trials (seed + 10000, the evaluation env kwargs): mean over "
            "trials and seeds of the return of each inner episode of a trial, the gain from the first to the last "
            "inner episode (mean +- std over seeds), and the success rate per inner episode where the env reports it.",
            "", "| env | algo | return per inner episode | last - first | success per inner episode | seeds |",
            "|---|---|---|---|---|---|", *rows]


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node() or 'unknown host'}: {os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def write_report(
    results: dict[tuple[str, str], Cell],
    out: str | Path,
    fig_dir: str | Path,
    command: str,
    steps: int,
    seeds: int,
    note: str = "",
) -> Path:
    """Write the markdown table and one learning-curve PNG per env (relative links from ``out``)."""
    from zoo.plot import draw_curves

    out, fig_dir = Path(out), Path(fig_dir)
    envs = list(dict.fromkeys(e for e, _ in results))
    algos = list(dict.fromkeys(a for _, a in results))
    lines = [
        "# Benchmark",
        "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()}.",
        "",
        f"- machine: {_machine()}",
        f"- budget: {steps} env steps per run, {seeds} seed(s) per cell; final return = mean return of the last "
        "deterministic evaluation; cells show mean +- std over seeds (n = seeds done, mean wall time per run).",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "| env | " + " | ".join(algos) + " | best |", "|---|" + "---|" * (len(algos) + 1)]
    for env_id in envs:
        cells = [results[(env_id, a)] for a in algos]
        means = {a: np.mean(c.finals) for a, c in zip(algos, cells) if c.finals}
        top = max(means.values()) if means else None
        leaders = [a for a, m in means.items() if m == top]
        best = "n/a" if not leaders else leaders[0] if len(leaders) == 1 else "tie: " + ", ".join(leaders)
        lines.append(f"| {env_id} | " + " | ".join(c.summary() for c in cells) + f" | {best} |")
    lines += aggregate_lines(results, envs, algos)
    lines += trial_lines(results, envs, algos)
    lines += ["", "## Learning curves", ""]
    for env_id in envs:
        panel = {a: ("eval", [(np.asarray(r["evaluations"]["timesteps"], dtype=np.float64),
                               np.asarray(r["evaluations"]["mean_return"], dtype=np.float64))
                              for r in results[(env_id, a)].records if r.get("evaluations", {}).get("timesteps")])
                 for a in algos}
        png = fig_dir / f"{env_id}.png"
        try:
            draw_curves({env_id: panel}, png)
        except FileNotFoundError:
            continue
        rel = os.path.relpath(png, out.parent)
        lines.append(f"![{env_id}]({rel})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m zoo.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", required=True, help=f"env ids and/or groups: {', '.join(ENV_GROUPS)}")
    p.add_argument("--algos", nargs="+", default=["amago", "ppo", "recurrent_ppo"])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds per cell (seeds seed-offset, seed-offset+1, ...)")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--steps", type=int, required=True, help="env steps per run")
    p.add_argument("-f", "--log-folder", default="logs/benchmark")
    p.add_argument("--out", default="docs/benchmark.md")
    p.add_argument("--fig-dir", default="docs/figures/benchmark")
    p.add_argument("--eval-freq", type=int, default=None, help="default: steps // 10")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("-params", "--hyperparams", nargs="+", action=StoreDict, default={}, metavar="KEY:VALUE",
                   help="overrides for every run, as in zoo.train (python values: lr:1e-3 policy_kwargs:'dict(d_model=128)')")
    p.add_argument("--device", default="auto")
    p.add_argument("--note", default="", help="free text added to the report (e.g. 'the CPU was shared')")
    p.add_argument("--num-threads", type=int, default=-1, help="torch threads per run (-1: torch default)")
    p.add_argument("--reuse", action="store_true", help="take finished runs with identical settings from the log folder")
    p.add_argument("--eval-env-kwargs", nargs="+", action=StoreDict, default=None, metavar="KEY:VALUE",
                   help="evaluation env kwargs over the yml's, e.g. split:\"'test'\" (held-out MetaWorldML1 goals)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the finished runs in the log folder")
    p.add_argument("--results-dir", default=None,
                   help="also write one JSON per finished run here (summary, args, evaluations): a record to commit; "
                        "--reuse and --report-only take runs recorded here when the log folder lacks them")
    p.add_argument("--verbose", type=int, default=0)
    ns = p.parse_args(argv)
    try:
        algos = [check_algo(a) for a in ns.algos]
        envs = expand_env_groups(ns.envs)
        for env_id in envs:
            check_env_id(env_id)
        overrides = dict(ns.hyperparams or {})
        if ns.steps <= 0 or ns.seeds <= 0:
            raise ValueError(f"--steps and --seeds must be positive, got {ns.steps} and {ns.seeds}.")
    except ValueError as err:
        p.exit(2, f"zoo.benchmark: error: {err}\n")
    start = time.time()
    command = "python -m zoo.benchmark " + shlex.join(argv if argv is not None else sys.argv[1:])

    def report(results: dict[tuple[str, str], Cell]) -> Path:  # rewritten after every run: a killed benchmark keeps it
        if ns.results_dir:
            write_run_records(results, ns.results_dir)
        return write_report(results, ns.out, ns.fig_dir, command, ns.steps, ns.seeds, ns.note)

    results = run_benchmark(
        envs,
        algos,
        ns.seeds,
        ns.steps,
        ns.log_folder,
        ns.eval_freq,
        ns.eval_episodes,
        overrides,
        ns.device,
        ns.seed_offset,
        ns.verbose,
        ns.num_threads,
        reuse=ns.reuse,
        on_update=report,
        train_missing=not ns.report_only,
        eval_env_kwargs=ns.eval_env_kwargs,
        results_dir=ns.results_dir,
    )
    out = report(results)
    print(f"Wrote {out} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
