"""``python -m zoo.plot -f logs/ --env ID --out curves.png``: learning curves, mean and spread over seeds, per algo.

Each run folder ``<logs>/<algo>/<env>_<n>/`` is one seed. Curves come from ``evaluations.npz`` (``--source eval``:
mean return of each evaluation) or from the training monitor files (``--source train``: episode returns,
smoothed over ``--window`` episodes, against cumulative env steps summed over the parallel envs);
``auto`` uses evaluations where every run has them. Seeds are interpolated onto a common grid up to the
shortest run; the line is the mean, the band +- one standard deviation (min/max with ``--band minmax``).
Without ``--env``, every env found under the log folder gets its own panel.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

__all__ = ["find_runs", "read_monitor_files", "run_curve", "aggregate", "plot_curves", "draw_curves", "main"]


def find_runs(log_folder: str | Path, algo: str, env_id: str) -> list[Path]:
    """Run folders ``<log_folder>/<algo>/<env_id>_<n>`` sorted by ``n``."""
    pattern = re.compile(rf"^{re.escape(env_id)}_(\d+)$")
    runs = [(int(m.group(1)), p) for p in (Path(log_folder) / algo).glob(f"{env_id}_*") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(runs)]


def _envs_in(log_folder: Path, algos: list[str]) -> list[str]:
    envs: list[str] = []
    for algo in algos:
        for p in sorted((log_folder / algo).glob("*_*")):
            m = re.match(r"^(.*)_(\d+)$", p.name)
            if p.is_dir() and m and m.group(1) not in envs:
                envs.append(m.group(1))
    return envs


def read_monitor_files(run_dir: str | Path) -> np.ndarray:
    """Episodes of all ``*.monitor.csv`` in ``run_dir`` as ``(N, 3)`` float64 rows ``(return, length, wall time)``.

    Rows are sorted by wall-clock time (``t_start`` of the file + ``t``) so parallel envs interleave as they ran.
    A half-written last line (a run killed mid-write) is skipped. No pandas needed.
    """
    rows: list[tuple[float, float, float]] = []
    for file in sorted(Path(run_dir).glob("*.monitor.csv")):
        with open(file) as f:
            first = f.readline()
            try:
                t_start = float(json.loads(first.lstrip("#")).get("t_start", 0.0)) if first.startswith("#") else 0.0
            except json.JSONDecodeError:
                t_start = 0.0
            for row in csv.DictReader(f):
                try:
                    rows.append((float(row["r"]), float(row["l"]), t_start + float(row["t"])))
                except (TypeError, ValueError, KeyError):
                    continue
    rows.sort(key=lambda r: r[2])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def run_curve(run_dir: Path, source: str = "eval", window: int = 20) -> tuple[np.ndarray, np.ndarray] | None:
    """``(timesteps (N,), returns (N,))`` of one run, or ``None`` when the run has no data of that kind yet."""
    if source == "eval":
        file = run_dir / "evaluations.npz"
        if not file.is_file():
            return None
        data = np.load(file)
        if len(data["timesteps"]) == 0:
            return None
        return data["timesteps"].astype(np.float64), data["results"].mean(axis=1).astype(np.float64)
    if source != "train":
        raise ValueError(f"source must be 'eval' or 'train', got {source!r}.")
    episodes = read_monitor_files(run_dir)
    if len(episodes) == 0:
        return None
    x = np.cumsum(episodes[:, 1])
    y = episodes[:, 0]
    if window > 1 and len(y) >= window:
        kernel = np.ones(window) / window
        y = np.convolve(y, kernel, mode="valid")
        x = x[window - 1 :]
    return x, y


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]], n_points: int = 100) -> dict[str, np.ndarray]:
    """Interpolate seeds onto a common grid (up to the shortest run) -> ``x, mean, std, min, max`` arrays (n_points,)."""
    if not curves:
        raise ValueError("aggregate() needs at least one curve.")
    start = max(c[0][0] for c in curves)
    end = min(c[0][-1] for c in curves)
    grid = np.linspace(start, end, n_points) if end > start else np.array([end])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return {"x": grid, "mean": ys.mean(0), "std": ys.std(0), "min": ys.min(0), "max": ys.max(0), "n": np.array(len(curves))}


Curve = tuple[np.ndarray, np.ndarray]  # (timesteps (N,), returns (N,))


def plot_curves(
    log_folder: str | Path,
    out: str | Path,
    envs: list[str] | None = None,
    algos: list[str] | None = None,
    source: str = "auto",
    window: int = 20,
    band: str = "std",
) -> Path:
    """Draw one panel per env, one line (+ band) per algo from every ``<algo>/<env>_<n>`` run under ``log_folder``."""
    log_folder = Path(log_folder)
    if algos is None:
        algos = sorted(p.name for p in log_folder.iterdir() if p.is_dir()) if log_folder.is_dir() else []
    envs = envs or _envs_in(log_folder, algos)
    if not envs:
        raise FileNotFoundError(f"No runs found under {log_folder} (expected <algo>/<env>_<n>/ folders from zoo.train).")
    panels: dict[str, dict[str, tuple[str, list[Curve]]]] = {}
    for env_id in envs:
        panels[env_id] = {}
        for algo in algos:
            dirs = find_runs(log_folder, algo, env_id)
            src = source
            if src == "auto":
                src = "eval" if dirs and all((r / "evaluations.npz").is_file() for r in dirs) else "train"
            panels[env_id][algo] = (src, [c for r in dirs if (c := run_curve(r, src, window)) is not None])
    try:
        return draw_curves(panels, out, band)
    except FileNotFoundError:
        raise FileNotFoundError(f"No finished episodes or evaluations for {envs} under {log_folder}.") from None


def draw_curves(panels: dict[str, dict[str, tuple[str, list[Curve]]]], out: str | Path, band: str = "std") -> Path:
    """Save a PNG with one panel per env and one line (mean over seeds, +- std or min/max band) per algo.

    ``panels[env][algo] = (source label, curves)``, one curve per seed; an algo without curves draws nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(panels)
    cols = min(3, len(envs))
    rows = (len(envs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    drawn = 0
    for ax, env_id in zip(axes.flat, envs):
        for algo, (src, curves) in panels[env_id].items():
            if not curves:
                continue
            agg = aggregate(curves)
            lo, hi = (agg["min"], agg["max"]) if band == "minmax" else (agg["mean"] - agg["std"], agg["mean"] + agg["std"])
            (line,) = ax.plot(agg["x"], agg["mean"], label=f"{algo} ({len(curves)} seeds, {src})")
            ax.fill_between(agg["x"], lo, hi, color=line.get_color(), alpha=0.2)
            drawn += 1
        ax.set_title(env_id, fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    if drawn == 0:
        plt.close(fig)
        raise FileNotFoundError(f"No curves to draw for {envs}.")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m zoo.plot", description=__doc__.split("\n")[0])
    p.add_argument("-f", "--log-folder", default="logs")
    p.add_argument("--env", nargs="+", default=None, help="env ids (default: every env found)")
    p.add_argument("--algos", nargs="+", default=None, help="algos (default: every algo folder found)")
    p.add_argument("--out", default="curves.png")
    p.add_argument("--source", choices=["auto", "eval", "train"], default="auto")
    p.add_argument("--window", type=int, default=20, help="smoothing window in episodes (train source)")
    p.add_argument("--band", choices=["std", "minmax"], default="std")
    ns = p.parse_args(argv)
    try:
        out = plot_curves(ns.log_folder, ns.out, ns.env, ns.algos, ns.source, ns.window, ns.band)
    except (ValueError, OSError) as err:
        p.exit(2, f"zoo.plot: error: {err}\n")
    print(f"Saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
